"""Vertex AI batch prediction as users see it: the official openai SDK against `batchgw dev`, Vertex faked."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.e2e.conftest import DEV_KEY, dev_stack, wait_for, wait_terminal
from tests.fakes.servers import serve_in_thread
from tests.fakes.vertex_upstream import TOKEN, BilledUsage, FakeJob, FakeVertex

pytestmark = pytest.mark.e2e

# Google's published Vertex AI batch price for gemini-2.5-flash, USD per 1M tokens; cached input at the
# context-cache rate
FLASH_BATCH_INPUT = Decimal("0.15")
FLASH_BATCH_OUTPUT = Decimal("1.25")
FLASH_CACHED_INPUT = Decimal("0.03")


@pytest.fixture(scope="module")
def vertex() -> Iterator[tuple[FakeVertex, str]]:
    fake = FakeVertex(processing_seconds=0.5)
    fake.model_seconds["gemini-slow"] = 120
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture(scope="module")
def vertex_base_url(tmp_path_factory: pytest.TempPathFactory, vertex: tuple[FakeVertex, str]) -> Iterator[str]:
    _, url = vertex
    common = (
        f'provider: vertex, project: test-project, location: us-central1, gcs_bucket: test-bucket, api_base: "{url}", '
        f'storage_base: "{url}", api_key: {TOKEN}, timeout: 2'
    )
    routing = f"""
models:
  - {{name: gemini-via-vertex, model: gemini-2.5-flash, {common}}}
  - {{name: gemini-slow, {common}, pricing: {{input_per_mtok: 0.15, output_per_mtok: 1.25}}}}
  - {{name: gemini-expiring, model: gemini-expire, {common}, pricing: {{input_per_mtok: 1.0, output_per_mtok: 4.0}}}}
"""
    with dev_stack(tmp_path_factory.mktemp("vertex-dev"), routing) as base:
        yield base


@pytest.fixture(scope="module")
def client(vertex_base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=vertex_base_url, api_key=DEV_KEY) as sdk:
        yield sdk


def write_batch(path: Path, model: str, questions: list[str]) -> Path:
    path.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "custom_id": f"req-{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 32},
                },
                option=orjson.OPT_APPEND_NEWLINE,
            )
            for i, question in enumerate(questions)
        )
    )
    return path


def jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in client.files.content(file_id).content.splitlines()] if file_id else []


def the_job(fake: FakeVertex, batch_id: str) -> FakeJob:
    (job,) = fake.jobs_named(batch_id)
    return job


def cost_of(batch: openai.types.Batch) -> float:
    value: float = (batch.model_extra or {})["cost"]["value"]
    return value


def test_vertex_batch_through_the_sdk_completes_with_openai_lines_usage_and_cost(
    client: openai.OpenAI, tmp_path: Path, vertex: tuple[FakeVertex, str]
) -> None:
    fake, _ = vertex
    questions = ["What is 2+2?", "Name a colour.", "What is 2+2?", "Please fail this one.", "Spell cat."]
    file = client.files.create(file=write_batch(tmp_path / "in.jsonl", "gemini-via-vertex", questions), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.status == "validating"

    done = wait_terminal(client, batch.id)

    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 4, 1)
    output = jsonl(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == ["req-0", "req-1", "req-2", "req-4"]
    for line in output:
        index = int(line["custom_id"].removeprefix("req-"))
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] == f"answer to {questions[index]}"
        # usage is billed by input position: the two identical questions came back to their own ids
        assert body["usage"]["prompt_tokens"] == BilledUsage.of(index).prompt
    (error,) = jsonl(client, done.error_file_id)
    assert error["custom_id"] == "req-3" and error["response"]["status_code"] == 400
    job = the_job(fake, batch.id)
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens) == (job.prompt_tokens, job.output_tokens)
    assert done.usage.input_tokens_details.cached_tokens == job.cached_tokens
    assert done.usage.output_tokens_details.reasoning_tokens == job.thoughts_tokens
    uncached = job.prompt_tokens - job.cached_tokens
    expected = (
        uncached * FLASH_BATCH_INPUT + job.cached_tokens * FLASH_CACHED_INPUT + job.output_tokens * FLASH_BATCH_OUTPUT
    ) / 1_000_000
    assert cost_of(done) == pytest.approx(float(expected), rel=1e-9)


def test_expired_vertex_batch_keeps_and_prices_its_partial_results(
    client: openai.OpenAI, tmp_path: Path, vertex: tuple[FakeVertex, str]
) -> None:
    fake, _ = vertex
    path = write_batch(tmp_path / "in.jsonl", "gemini-expiring", [f"q{i}" for i in range(4)])
    file = client.files.create(file=path, purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")

    done = wait_terminal(client, batch.id)

    assert done.status == "expired" and done.request_counts is not None, done
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 2)
    assert sorted(line["custom_id"] for line in jsonl(client, done.output_file_id)) == ["req-0", "req-1"]
    assert {line["error"]["code"] for line in jsonl(client, done.error_file_id)} == {"batch_expired"}
    job = the_job(fake, batch.id)
    expected = (job.prompt_tokens * 1.0 + job.output_tokens * 4.0) / 1_000_000
    assert cost_of(done) == pytest.approx(expected, rel=1e-9) and expected > 0


def test_cancelling_a_running_vertex_batch_ends_it_cancelled_with_its_partial_results(
    client: openai.OpenAI, tmp_path: Path, vertex: tuple[FakeVertex, str]
) -> None:
    fake, _ = vertex
    file = client.files.create(
        file=write_batch(tmp_path / "in.jsonl", "gemini-slow", [f"q{i}" for i in range(4)]), purpose="batch"
    )
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(lambda: client.batches.retrieve(batch.id).status == "in_progress")

    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    done = wait_terminal(client, batch.id)

    assert done.status == "cancelled" and done.cancelled_at is not None
    assert the_job(fake, batch.id).state == "JOB_STATE_CANCELLED"
    assert done.request_counts is not None and (done.request_counts.completed, done.request_counts.failed) == (2, 2)
    assert {line["error"]["code"] for line in jsonl(client, done.error_file_id)} == {"batch_cancelled"}
    assert cost_of(done) > 0
