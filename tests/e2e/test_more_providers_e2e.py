"""Mistral, Together and Groq through `batchgw dev` with the official openai SDK, against their fakes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest

from tests.e2e.conftest import DEV_KEY, dev_stack, wait_terminal, write_batch
from tests.fakes import groq_upstream, mistral_upstream, together_upstream
from tests.fakes.groq_upstream import FakeGroq
from tests.fakes.mistral_upstream import FakeMistral
from tests.fakes.servers import serve_in_thread
from tests.fakes.together_upstream import FakeTogether

pytestmark = pytest.mark.e2e

Fakes = tuple[FakeMistral, FakeTogether, FakeGroq]
MTOK = 1_000_000


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[Fakes, tuple[str, str, str]]]:
    mistral, together, groq = (
        FakeMistral(processing_seconds=0.5),
        FakeTogether(processing_seconds=0.5),
        FakeGroq(processing_seconds=0.5),
    )
    with (
        serve_in_thread(mistral.app) as mistral_url,
        serve_in_thread(together.app) as together_url,
        serve_in_thread(groq.app) as groq_url,
    ):
        yield (mistral, together, groq), (mistral_url, together_url, groq_url)


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, fakes: tuple[Fakes, tuple[str, str, str]]
) -> Iterator[openai.OpenAI]:
    mistral_url, together_url, groq_url = fakes[1]
    routing = f"""
models:
  - {{name: mistral-small, provider: mistral, model: mistral-small-latest, api_base: "{mistral_url}/v1",
      api_key: {mistral_upstream.API_KEY}}}
  - {{name: llama-3.3-70b, provider: together, model: meta-llama/Llama-3.3-70B-Instruct-Turbo,
      api_base: "{together_url}/v1", api_key: {together_upstream.API_KEY}}}
  - {{name: llama-3.3-70b-groq, provider: openai, model: llama-3.3-70b-versatile, api_base: "{groq_url}/openai/v1",
      api_key: {groq_upstream.API_KEY}, pricing: {{input_per_mtok: 0.295, output_per_mtok: 0.395}}}}
"""
    with (
        dev_stack(tmp_path_factory.mktemp("dev-more-providers"), routing) as base_url,
        openai.OpenAI(base_url=base_url, api_key=DEV_KEY) as sdk,
    ):
        yield sdk


def run(client: openai.OpenAI, path: Path) -> openai.types.Batch:
    file = client.files.create(file=path, purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    return wait_terminal(client, batch.id)


def results(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, object]]:
    content = client.files.content(file_id).content if file_id else b""
    return {line["custom_id"]: line for line in map(orjson.loads, content.splitlines())}


def cost(batch: openai.types.Batch) -> float:
    value: float = (batch.model_extra or {})["cost"]["value"]
    return value


def test_mistral_batch_from_the_openai_sdk_completes_with_usage_and_batch_cost(
    client: openai.OpenAI, fakes: tuple[Fakes, tuple[str, str, str]], tmp_path: Path
) -> None:
    mistral = fakes[0][0]
    path = write_batch(tmp_path / "in.jsonl", 4, "mistral-small")
    done = run(client, path)
    assert done.status == "completed" and sorted(results(client, done.output_file_id)) == [f"req-{i}" for i in range(4)]
    billed = mistral.job_with("req-0").billed
    assert done.usage is not None and done.usage.input_tokens == billed.prompt_tokens
    # genai-prices' batch price for mistral-small-latest: half of $0.15 / $0.60 per 1M tokens
    assert cost(done) == pytest.approx((billed.prompt_tokens * 0.075 + billed.completion_tokens * 0.30) / MTOK)


def test_together_batch_from_the_openai_sdk_keeps_custom_ids_together_cannot_take(
    client: openai.OpenAI, fakes: tuple[Fakes, tuple[str, str, str]], tmp_path: Path
) -> None:
    together = fakes[0][1]
    long_prefix = "a-custom-id-far-longer-than-the-sixty-four-characters-together-takes-"
    path = write_batch(tmp_path / "in.jsonl", 3, "llama-3.3-70b", prefix=long_prefix)
    done = run(client, path)
    assert done.status == "completed"
    assert sorted(results(client, done.output_file_id)) == [f"{long_prefix}{i}" for i in range(3)]
    (billed,) = [b for b in together.batches.values() if len(b.lines) == 3]
    # Together's batch price for Llama 3.3 70B Instruct Turbo: half of $0.88 per 1M tokens
    assert cost(done) == pytest.approx((billed.prompt_tokens + billed.completion_tokens) * 0.44 / MTOK)


def test_groq_deployment_from_the_openai_sdk_completes_and_cancels(
    client: openai.OpenAI, fakes: tuple[Fakes, tuple[str, str, str]], tmp_path: Path
) -> None:
    groq = fakes[0][2]
    done = run(client, write_batch(tmp_path / "in.jsonl", 3, "llama-3.3-70b-groq"))
    assert done.status == "completed" and len(results(client, done.output_file_id)) == 3
    (billed,) = [b for b in groq.batches.values() if b.metadata.get("batchgw_batch_id") == done.id]
    assert cost(done) == pytest.approx((billed.prompt_tokens * 0.295 + billed.completion_tokens * 0.395) / MTOK)

    groq.processing_seconds = 60
    try:
        file = client.files.create(file=write_batch(tmp_path / "more.jsonl", 4, "llama-3.3-70b-groq"), purpose="batch")
        batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert client.batches.cancel(batch.id).status == "cancelling"
        cancelled = wait_terminal(client, batch.id)
    finally:
        groq.processing_seconds = 0.5
    assert cancelled.status == "cancelled" and cancelled.request_counts is not None
    assert cancelled.request_counts.total == 4
