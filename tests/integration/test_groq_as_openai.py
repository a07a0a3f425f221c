"""Groq as an `openai` deployment: OpenAI's Files + Batches under `https://api.groq.com/openai/v1`, here a fake
of it on loopback, through the real handlers.

Groq is not a provider of its own: the openai adapter with `api_base: .../openai/v1` is all it takes.
genai-prices looks models up under the deployment's provider (`openai`), which has no Groq models, so a
Groq deployment carries its batch price as a `pricing` override.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from tests.fakes.groq_upstream import API_KEY, FakeGroq
from tests.fakes.openai_upstream import FakeBatch
from tests.fakes.servers import serve_in_thread
from tests.integration.conftest import (
    Stack,
    batch_lines,
    end_under_faults,
    finish,
    lines,
    started,
)

MODEL = "llama-3.3-70b-groq"
MTOK = 1_000_000
# Groq's llama-3.3-70b-versatile at $0.59 / $0.79 per 1M tokens, batches at half, as the routing entry says
GROQ_BATCH = (0.295, 0.395)


@pytest.fixture
def groq() -> Iterator[tuple[FakeGroq, str]]:
    fake = FakeGroq(processing_seconds=0.3)
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def extra_routes(groq: tuple[FakeGroq, str]) -> str:
    _, url = groq
    return f"""
  - {{name: {MODEL}, provider: openai, model: llama-3.3-70b-versatile, api_base: "{url}/openai/v1",
      api_key: {API_KEY}, timeout: 1, max_retries: 4,
      pricing: {{input_per_mtok: {GROQ_BATCH[0]}, output_per_mtok: {GROQ_BATCH[1]}}}}}
"""


def groq_batch(fake: FakeGroq, batch_id: str) -> FakeBatch:
    (found,) = [b for b in fake.batches.values() if b.metadata.get("batchgw_batch_id") == batch_id]
    return found


def groq_cost(*billed: FakeBatch) -> float:
    return sum(b.prompt_tokens * GROQ_BATCH[0] + b.completion_tokens * GROQ_BATCH[1] for b in billed) / MTOK


def test_groq_deployment_runs_openai_batches_under_openai_v1_at_its_pricing(
    stack: Stack, groq: tuple[FakeGroq, str]
) -> None:
    fake, _ = groq
    batch_id = started(stack, batch_lines(3, model=MODEL) + batch_lines(1, model=MODEL, prefix="fail"))

    (done,) = finish(stack, batch_id)

    assert done["status"] == "completed" and done["request_counts"] == {"total": 4, "completed": 3, "failed": 1}
    assert sorted(line["custom_id"] for line in lines(stack, done["output_file_id"])) == ["req-0", "req-1", "req-2"]
    assert [line["custom_id"] for line in lines(stack, done["error_file_id"])] == ["fail-0"]
    billed = groq_batch(fake, batch_id)
    assert {line["body"]["model"] for line in billed.lines} == {"llama-3.3-70b-versatile"}
    assert fake.calls["POST /openai/v1/files"] == 1 and fake.calls["POST /openai/v1/batches"] == 1
    assert done["usage"]["input_tokens"] == billed.prompt_tokens
    assert done["cost"]["value"] == pytest.approx(groq_cost(billed), rel=1e-9)


def test_groq_lost_create_answer_is_found_again_and_no_second_batch_is_made(
    stack: Stack, groq: tuple[FakeGroq, str]
) -> None:
    fake, _ = groq
    fake.slow_create_seconds = 2.0  # answers after the route's 1 s timeout
    batch_id = started(stack, batch_lines(3, model=MODEL))
    (done,) = finish(stack, batch_id)
    assert done["status"] == "completed" and fake.calls["POST /openai/v1/batches"] == 1 and len(fake.batches) == 1


def test_groq_faults_still_end_every_batch_right_and_bill_once(stack: Stack, groq: tuple[FakeGroq, str]) -> None:
    fake, _ = groq
    fake.faults.error_rate = 0.12
    fake.faults.rate_limit_rate = 0.12
    fake.faults.hang_rate = 0.08
    fake.faults.hang_seconds = 1.5
    batch_ids, row = end_under_faults(stack, fake.calls, MODEL, batches=3)
    assert len(fake.batches) == 3
    assert float(row.cost) == pytest.approx(groq_cost(*(groq_batch(fake, b) for b in batch_ids)), rel=1e-9)


def test_embeddings_batch_on_a_groq_deployment_fails_with_groqs_reason(
    stack: Stack, groq: tuple[FakeGroq, str]
) -> None:
    # batchgw takes embeddings for `openai` deployments; Groq serves chat only and refuses the batch
    line = {"custom_id": "e1", "method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL, "input": "hi"}}
    batch_id = started(stack, orjson.dumps(line), endpoint="/v1/embeddings")
    (done,) = finish(stack, batch_id)
    assert done["status"] == "failed"
    assert "/v1/chat/completions only" in orjson.dumps(done["errors"]).decode()
