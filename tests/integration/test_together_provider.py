"""The together adapter against a fake Together AI batch API over loopback, through the real handlers.

Expected costs come from what the fake billed and the batch prices batchgw is documented to use.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest

from shared.providers.base import Unreadable, Verbatim
from shared.providers.together import TogetherProvider
from shared.routing import Deployment
from tests.fakes.journal import MemoryJournal, custom_ids, submit_request
from tests.fakes.openai_upstream import FakeBatch
from tests.fakes.together_upstream import API_KEY, FakeTogether
from tests.integration.conftest import (
    Stack,
    batch,
    batch_lines,
    end_under_faults,
    finish,
    lines,
    start,
    started,
)

MODEL = "llama-3.3-70b"
PROVIDER_MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
EXPIRING = "together-expiring"
MTOK = 1_000_000
# Together bills Llama 3.3 70B Instruct Turbo at $0.88 per 1M tokens in and out, and batches of it at half
LLAMA_33_70B_BATCH = 0.44
OVERRIDE = (1.0, 4.0)


@pytest.fixture
def extra_routes(together: tuple[FakeTogether, str]) -> str:
    _, url = together
    return f"""
  - {{name: {MODEL}, provider: together, model: {PROVIDER_MODEL}, api_base: "{url}/v1", api_key: {API_KEY},
      timeout: 1, max_retries: 4}}
  - {{name: {EXPIRING}, provider: together, model: fake-expire, api_base: "{url}/v1", api_key: {API_KEY},
      timeout: 1, pricing: {{input_per_mtok: {OVERRIDE[0]}, output_per_mtok: {OVERRIDE[1]}}}}}
"""


def batch_of(fake: FakeTogether, custom_id: str) -> FakeBatch:
    (found,) = [b for b in fake.batches.values() if any(line["custom_id"] == custom_id for line in b.lines)]
    return found


def llama_cost(*billed: FakeBatch) -> float:
    return sum(b.prompt_tokens + b.completion_tokens for b in billed) * LLAMA_33_70B_BATCH / MTOK


def test_together_batch_completes_with_openai_lines_usage_and_batch_price(
    stack: Stack, together: tuple[FakeTogether, str]
) -> None:
    # Given requests with ids Together would refuse (over 64 characters, spaces), one it fails, one cut off
    fake, _ = together
    fake.corrupt = {"garbled-0": "cut"}
    long_id, spaced_id = "x" * 100, "order #7 / réponse"
    content = batch_lines(2, model=MODEL) + batch_lines(1, model=MODEL, prefix="fail")
    content += batch_lines(1, model=MODEL, prefix="garbled")
    for odd in (long_id, spaced_id):
        body = {"model": MODEL, "messages": [{"role": "user", "content": "q"}]}
        content += orjson.dumps(
            {"custom_id": odd, "method": "POST", "url": "/v1/chat/completions", "body": body},
            option=orjson.OPT_APPEND_NEWLINE,
        )
    batch_id = started(stack, content)

    (done,) = finish(stack, batch_id)

    # Then it completes, each result under the custom_id the client gave
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 6, "completed": 4, "failed": 2}
    output = {line["custom_id"]: line for line in lines(stack, done["output_file_id"])}
    assert sorted(output) == sorted(["req-0", "req-1", long_id, spaced_id])
    assert output[long_id]["response"]["body"]["choices"][0]["message"]["content"].startswith("answer h")
    errors = {line["custom_id"]: line for line in lines(stack, done["error_file_id"])}
    assert errors["fail-0"]["response"]["status_code"] == 400
    assert errors["garbled-0"]["error"]["code"] == "provider_error"

    # and Together got its own line format through its three-call upload, the model in each body
    sent = batch_of(fake, "req-0")
    assert all(set(line) == {"custom_id", "body"} for line in sent.lines)
    assert {line["body"]["model"] for line in sent.lines} == {PROVIDER_MODEL}
    assert all(len(line["custom_id"]) <= 64 for line in sent.lines)
    assert fake.calls[f"POST /v1/files/{sent.input_file_id}/preprocess"] == 1
    assert fake.calls[f"PUT /presigned/{sent.input_file_id}"] == 1

    # and its usage is what Together billed for the lines it returned whole, at the batch price
    whole = [line["response"]["body"]["usage"] for line in output.values()]
    assert done["usage"]["input_tokens"] == sum(u["prompt_tokens"] for u in whole)
    expected = sum(u["prompt_tokens"] + u["completion_tokens"] for u in whole) * LLAMA_33_70B_BATCH / MTOK
    assert done["cost"]["value"] == pytest.approx(expected, rel=1e-9)

    # and the input and result files are deleted at Together
    assert fake.files == {}


def test_together_expired_batch_keeps_and_prices_partial_results(
    stack: Stack, together: tuple[FakeTogether, str]
) -> None:
    fake, _ = together
    (done,) = finish(stack, started(stack, batch_lines(4, model=EXPIRING)))
    assert done["status"] == "expired" and done["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    assert sorted(line["custom_id"] for line in lines(stack, done["output_file_id"])) == ["req-0", "req-1"]
    assert {line["error"]["code"] for line in lines(stack, done["error_file_id"])} == {"batch_expired"}
    billed = batch_of(fake, "req-0")
    expected = (billed.prompt_tokens * OVERRIDE[0] + billed.completion_tokens * OVERRIDE[1]) / MTOK
    assert done["cost"]["value"] == pytest.approx(expected, rel=1e-9)


def test_together_cancel_goes_through_canceling_to_cancelled_with_partial_results(
    stack: Stack, together: tuple[FakeTogether, str]
) -> None:
    fake, _ = together
    fake.processing_seconds = 60
    batch_id = started(stack, batch_lines(4, model=MODEL))
    stack.deliver("SubmitterFunction")
    assert stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth()).json()["status"] == "cancelling"
    stack.poll()  # sends the cancel; Together is CANCELING
    assert batch(stack, batch_id)["status"] == "cancelling"

    (done,) = finish(stack, batch_id)

    assert done["status"] == "cancelled" and done["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    assert {line["error"]["code"] for line in lines(stack, done["error_file_id"])} == {"batch_cancelled"}
    billed = batch_of(fake, "req-0")
    assert fake.calls[f"POST /v1/batches/{billed.id}/cancel"] == 1
    assert done["cost"]["value"] == pytest.approx(llama_cost(billed), rel=1e-9)


def test_together_lost_create_answer_is_found_again_and_no_second_batch_is_made(
    stack: Stack, together: tuple[FakeTogether, str]
) -> None:
    fake, _ = together
    earlier = started(stack, batch_lines(3, model=MODEL, prefix="a"))
    stack.deliver("SubmitterFunction")
    fake.slow_create_seconds = 2.0  # answers after the route's 1 s timeout
    batch_id = started(stack, batch_lines(3, model=MODEL, prefix="b"))

    finish(stack, earlier, batch_id)

    assert fake.calls["POST /v1/batches"] == 2 and len(fake.batches) == 2
    assert batch_of(fake, "a-0") is not batch_of(fake, "b-0")
    for prefix, done in (("a", batch(stack, earlier)), ("b", batch(stack, batch_id))):
        assert done["status"] == "completed"
        assert sorted(line["custom_id"] for line in lines(stack, done["output_file_id"])) == [
            f"{prefix}-{i}" for i in range(3)
        ]


def test_together_faults_still_end_every_batch_right_and_bill_once(
    stack: Stack, together: tuple[FakeTogether, str]
) -> None:
    # a third of calls answer 500, 429 with Retry-After, or hang past the 1 s timeout
    fake, _ = together
    fake.faults.error_rate = 0.12
    fake.faults.rate_limit_rate = 0.12
    fake.faults.hang_rate = 0.08
    fake.faults.hang_seconds = 1.5
    _, row = end_under_faults(stack, fake.calls, MODEL)
    assert len(fake.batches) == 4
    assert float(row.cost) == pytest.approx(llama_cost(*(batch_of(fake, f"b{n}-0") for n in range(4))), rel=1e-9)


def test_embeddings_routed_to_together_are_refused_at_creation(stack: Stack) -> None:
    line = {"custom_id": "e1", "method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL, "input": "hi"}}
    response = start(stack, orjson.dumps(line), endpoint="/v1/embeddings")
    assert response.status_code == 400 and response.json()["error"]["code"] == "unsupported_endpoint"
    assert "provider together" in response.json()["error"]["message"]


# --- on the adapter itself ------------------------------------------------------------------------


@pytest.fixture
def adapter(together: tuple[FakeTogether, str]) -> Iterator[TogetherProvider]:
    _, url = together
    deployment = Deployment(
        name=MODEL,
        provider="together",
        model=PROVIDER_MODEL,
        api_base=f"{url}/v1",
        api_key=API_KEY,
        timeout=1,
        max_retries=1,
    )
    provider = TogetherProvider(deployment)
    yield provider
    provider.close()


def test_together_progress_percentage_is_reported_as_requests_done(
    adapter: TogetherProvider, together: tuple[FakeTogether, str]
) -> None:
    fake, _ = together
    fake.processing_seconds = 2.0
    content = batch_lines(10, model=MODEL)
    journal = MemoryJournal()
    adapter.submit(submit_request("batch_p", MODEL, content), journal)
    time.sleep(1.0)

    halfway = adapter.refresh(journal.refs)

    assert halfway.state == "in_progress" and halfway.counts is not None
    assert halfway.counts.total == 10 and 0 < halfway.counts.completed < 10
    while not (done := adapter.refresh(journal.refs)).terminal:
        time.sleep(0.1)
    assert done.state == "completed"
    read = [item for item in adapter.results(journal.refs, custom_ids(content)) if not isinstance(item, Unreadable)]
    results = [c for item in read for c in (item.custom_ids if isinstance(item, Verbatim) else [item.custom_id])]
    assert sorted(results) == sorted(custom_ids(content))
