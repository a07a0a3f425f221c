"""The mistral adapter against a fake Mistral batch jobs API over loopback, through the real handlers.

Expected costs come from what the fake billed and the batch prices batchgw is documented to use, not
from our pricing code.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from shared.providers.base import SubmitRequest
from shared.providers.mistral import MistralProvider
from shared.routing import Deployment
from tests.fakes.journal import MemoryJournal, submit_request
from tests.fakes.mistral_upstream import API_KEY, TIMEOUT_MODEL, FakeJob, FakeMistral
from tests.integration.conftest import (
    Stack,
    batch,
    batch_lines,
    end_under_faults,
    finish,
    lines,
    record,
    start,
    started,
)

MODEL = "mistral-small"
EMBED = "mistral-embed-batch"
TIMING_OUT = "mistral-timing-out"
MTOK = 1_000_000
# genai-prices (pinned) prices mistral-small-latest at $0.15 / $0.60 per 1M tokens, batches at half that
MISTRAL_SMALL_BATCH = (0.075, 0.30)
# and mistral-embed at $0.10 per 1M input tokens, batches at half that
MISTRAL_EMBED_BATCH = 0.05
# the timing-out deployment's pricing override in the routing file
OVERRIDE = (1.0, 4.0)


@pytest.fixture
def extra_routes(mistral: tuple[FakeMistral, str]) -> str:
    _, url = mistral
    return f"""
  - {{name: {MODEL}, provider: mistral, model: mistral-small-latest, api_base: "{url}/v1", api_key: {API_KEY},
      timeout: 1, max_retries: 4}}
  - {{name: {EMBED}, provider: mistral, model: mistral-embed, api_base: "{url}/v1", api_key: {API_KEY}, timeout: 1}}
  - {{name: {TIMING_OUT}, provider: mistral, model: {TIMEOUT_MODEL}, api_base: "{url}/v1", api_key: {API_KEY},
      timeout: 1, pricing: {{input_per_mtok: {OVERRIDE[0]}, output_per_mtok: {OVERRIDE[1]}}}}}
"""


def chat_line(custom_id: str, model: str = MODEL, **body: Any) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": f"question {custom_id}"}], **body}
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def embedding_line(custom_id: str, **body: Any) -> bytes:
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": {"model": EMBED, **body}}
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def small_batch_cost(fake: FakeMistral, *custom_ids: str) -> float:
    jobs = {fake.job_with(c).id: fake.job_with(c) for c in custom_ids}
    billed = [job.billed for job in jobs.values()]
    prompt, completion = sum(b.prompt_tokens for b in billed), sum(b.completion_tokens for b in billed)
    return (prompt * MISTRAL_SMALL_BATCH[0] + completion * MISTRAL_SMALL_BATCH[1]) / MTOK


def test_mistral_batch_completes_with_openai_lines_usage_and_batch_price(
    stack: Stack, mistral: tuple[FakeMistral, str]
) -> None:
    # Given good requests, one Mistral fails, one cut short by the model's length, one whose line comes back cut off
    fake, _ = mistral
    fake.corrupt = {"garbled-0": "cut"}
    content = (
        batch_lines(3, model=MODEL)
        + batch_lines(1, model=MODEL, prefix="fail")
        + batch_lines(1, model=MODEL, prefix="long")
        + batch_lines(1, model=MODEL, prefix="garbled")
    )
    batch_id = started(stack, content)

    (done,) = finish(stack, batch_id)

    # Then it completes with OpenAI output lines, and every failure in the error file in OpenAI's shape
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 6, "completed": 4, "failed": 2}
    output = {line["custom_id"]: line for line in lines(stack, done["output_file_id"])}
    assert sorted(output) == ["long-0", "req-0", "req-1", "req-2"]
    for line in output.values():
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"].startswith("cmpl-")
        assert line["response"]["body"]["object"] == "chat.completion"
    assert output["req-1"]["response"]["body"]["choices"][0]["message"]["content"] == "answer req-1"
    assert output["long-0"]["response"]["body"]["choices"][0]["finish_reason"] == "length"
    errors = {line["custom_id"]: line for line in lines(stack, done["error_file_id"])}
    assert sorted(errors) == ["fail-0", "garbled-0"]
    refused = errors["fail-0"]["response"]
    assert refused["status_code"] == 400 and refused["body"]["error"]["message"] == "Request fail-0 is invalid"
    assert errors["garbled-0"]["error"]["code"] == "provider_error"

    # and its usage is what Mistral billed for the lines it returned whole, at Mistral's batch price
    job = fake.job_with("req-0")
    assert job.model == "mistral-small-latest" and job.endpoint == "/v1/chat/completions"
    usage = [line["response"]["body"]["usage"] for line in output.values()]
    assert done["usage"]["input_tokens"] == sum(u["prompt_tokens"] for u in usage)
    assert done["usage"]["output_tokens"] == sum(u["completion_tokens"] for u in usage)
    expected = (
        sum(u["prompt_tokens"] for u in usage) * MISTRAL_SMALL_BATCH[0]
        + sum(u["completion_tokens"] for u in usage) * MISTRAL_SMALL_BATCH[1]
    ) / MTOK
    assert done["cost"]["value"] == pytest.approx(expected, rel=1e-9)

    # and what batchgw put at Mistral is gone: the input and both result files
    assert fake.files == {}


def test_mistral_lines_are_custom_id_and_body_with_openai_fields_renamed_for_mistral(
    stack: Stack, mistral: tuple[FakeMistral, str]
) -> None:
    # Given requests as the openai SDK writes them: max_completion_tokens, seed, user, a developer message, names
    fake, _ = mistral
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "name": "ann", "content": [{"type": "text", "text": "Hi"}]},
    ]
    content = chat_line("sdk", max_completion_tokens=50, seed=7, user="u-1", store=False, messages=messages)
    content += chat_line("plain", max_tokens=9)
    batch_id = started(stack, content)

    (done,) = finish(stack, batch_id)

    # Then Mistral runs every one of them (it refuses fields it does not know), sent as Mistral names them
    assert done["status"] == "completed" and done["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    sent = {line["custom_id"]: line for line in fake.job_with("sdk").lines}
    assert all(set(line) == {"custom_id", "body"} for line in sent.values())
    assert sent["sdk"]["body"] == {
        "max_tokens": 50,
        "random_seed": 7,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        ],
    }
    assert sent["plain"]["body"]["max_tokens"] == 9 and "model" not in sent["plain"]["body"]


def test_request_mistral_cannot_take_fails_alone_and_the_rest_runs(
    stack: Stack, mistral: tuple[FakeMistral, str]
) -> None:
    fake, _ = mistral
    batch_id = started(stack, chat_line("ok") + chat_line("probs-1", logprobs=True, top_logprobs=2))
    (done,) = finish(stack, batch_id)
    assert done["status"] == "completed" and done["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    assert [line["custom_id"] for line in lines(stack, done["output_file_id"])] == ["ok"]
    (refused,) = lines(stack, done["error_file_id"])
    assert refused["custom_id"] == "probs-1" and refused["error"]["code"] == "invalid_request"
    assert "logprobs" in refused["error"]["message"]
    assert [line["custom_id"] for line in fake.job_with("ok").lines] == ["ok"]


def test_mistral_embeddings_batch_completes_with_dimensions_sent_as_output_dimension(
    stack: Stack, mistral: tuple[FakeMistral, str]
) -> None:
    fake, _ = mistral
    content = embedding_line("e0", input="hello", dimensions=256) + embedding_line("e1", input=["a", "b"])
    batch_id = started(stack, content, endpoint="/v1/embeddings")

    (done,) = finish(stack, batch_id)

    assert done["status"] == "completed" and done["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    output = {line["custom_id"]: line["response"]["body"] for line in lines(stack, done["output_file_id"])}
    assert sorted(output) == ["e0", "e1"] and output["e0"]["data"][0]["object"] == "embedding"
    job = fake.job_with("e0")
    assert job.endpoint == "/v1/embeddings" and job.model == "mistral-embed"
    assert job.lines[0]["body"] == {"input": "hello", "output_dimension": 256}
    assert done["usage"]["input_tokens"] == job.billed.prompt_tokens and done["usage"]["output_tokens"] == 0
    assert done["cost"]["value"] == pytest.approx(job.billed.prompt_tokens * MISTRAL_EMBED_BATCH / MTOK, rel=1e-9)


def test_mistral_timeout_exceeded_is_expired_and_keeps_and_prices_partial_results(
    stack: Stack, mistral: tuple[FakeMistral, str]
) -> None:
    fake, _ = mistral
    batch_id = started(stack, batch_lines(4, model=TIMING_OUT))

    (done,) = finish(stack, batch_id)

    assert done["status"] == "expired" and done["expired_at"] is not None
    assert done["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    assert sorted(line["custom_id"] for line in lines(stack, done["output_file_id"])) == ["req-0", "req-1"]
    assert {line["error"]["code"] for line in lines(stack, done["error_file_id"])} == {"batch_expired"}
    billed = fake.job_with("req-0").billed
    expected = (billed.prompt_tokens * OVERRIDE[0] + billed.completion_tokens * OVERRIDE[1]) / MTOK
    assert billed.succeeded == 2 and done["cost"]["value"] == pytest.approx(expected, rel=1e-9)


def test_mistral_cancel_goes_through_cancellation_requested_to_cancelled_with_partial_results(
    stack: Stack, mistral: tuple[FakeMistral, str]
) -> None:
    fake, _ = mistral
    fake.processing_seconds = 60
    batch_id = started(stack, batch_lines(4, model=MODEL))
    stack.deliver("SubmitterFunction")
    assert batch(stack, batch_id)["status"] == "in_progress"
    assert stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth()).json()["status"] == "cancelling"
    stack.poll()  # sends the cancel; Mistral has only taken the request
    assert batch(stack, batch_id)["status"] == "cancelling"

    (done,) = finish(stack, batch_id)

    assert done["status"] == "cancelled" and done["cancelled_at"] is not None
    assert done["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    assert {line["error"]["code"] for line in lines(stack, done["error_file_id"])} == {"batch_cancelled"}
    job = fake.job_with("req-0")
    assert job.status == "CANCELLED" and fake.calls[f"POST /v1/batch/jobs/{job.id}/cancel"] == 1
    assert done["cost"]["value"] == pytest.approx(small_batch_cost(fake, "req-0"), rel=1e-9)


def test_lost_create_answer_is_found_by_its_input_file_and_no_second_job_is_made(
    stack: Stack, mistral: tuple[FakeMistral, str]
) -> None:
    # Given another job just made on the same deployment
    fake, _ = mistral
    earlier = started(stack, batch_lines(3, model=MODEL, prefix="a"))
    stack.deliver("SubmitterFunction")

    # When the next create's answer is lost (it comes after the route's 1 s timeout)
    fake.slow_create_seconds = 2.0
    batch_id = started(stack, batch_lines(3, model=MODEL, prefix="b"))
    finish(stack, earlier, batch_id)

    # Then the retry takes the job that create made, not the other one, and makes no third
    assert fake.calls["POST /v1/batch/jobs"] == 2 and len(fake.jobs) == 2
    assert fake.job_with("a-0") is not fake.job_with("b-0")
    for prefix, done in (("a", batch(stack, earlier)), ("b", batch(stack, batch_id))):
        assert done["status"] == "completed"
        assert sorted(line["custom_id"] for line in lines(stack, done["output_file_id"])) == [
            f"{prefix}-{i}" for i in range(3)
        ]


def test_mistral_faults_still_end_every_batch_right_and_bill_once(
    stack: Stack, mistral: tuple[FakeMistral, str]
) -> None:
    # a third of calls answer 500, 429 with Retry-After, or hang past the 1 s timeout
    fake, _ = mistral
    fake.faults.error_rate = 0.12
    fake.faults.rate_limit_rate = 0.12
    fake.faults.hang_rate = 0.08
    fake.faults.hang_seconds = 1.5
    _, row = end_under_faults(stack, fake.calls, MODEL)
    assert len(fake.jobs) == 4
    expected = small_batch_cost(fake, *(f"b{n}-0" for n in range(4)))
    assert float(row.cost) == pytest.approx(expected, rel=1e-9)


def test_embeddings_with_token_arrays_are_refused_alone_since_mistral_embeds_text(
    stack: Stack, mistral: tuple[FakeMistral, str]
) -> None:
    content = embedding_line("text", input="hello") + embedding_line("tokens", input=[[1, 2, 3]])
    (done,) = finish(stack, started(stack, content, endpoint="/v1/embeddings"))
    assert done["status"] == "completed" and done["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    (refused,) = lines(stack, done["error_file_id"])
    assert refused["custom_id"] == "tokens" and refused["error"]["code"] == "invalid_request"


def test_completions_routed_to_mistral_are_refused_at_creation(stack: Stack) -> None:
    line = {"custom_id": "c1", "method": "POST", "url": "/v1/completions", "body": {"model": MODEL, "prompt": "hi"}}
    response = start(stack, orjson.dumps(line), endpoint="/v1/completions")
    assert response.status_code == 400 and response.json()["error"]["code"] == "unsupported_endpoint"
    assert "provider mistral" in response.json()["error"]["message"]


# --- on the adapter itself ------------------------------------------------------------------------


@pytest.fixture
def adapter(mistral: tuple[FakeMistral, str]) -> Iterator[MistralProvider]:
    _, url = mistral
    deployment = Deployment(
        name=MODEL, provider="mistral", model="mistral-small-latest", api_base=f"{url}/v1", timeout=1, max_retries=1
    )
    provider = MistralProvider(deployment, API_KEY)
    yield provider
    provider.close()


def request_with_window(seconds_left: int) -> SubmitRequest:
    request = submit_request("batch_w", MODEL, batch_lines(2, model=MODEL))
    return SubmitRequest(
        batch_id=request.batch_id,
        endpoint=request.endpoint,
        model=request.model,
        line_count=request.line_count,
        open_lines=request.open_lines,
        expires_at=int(time.time()) + seconds_left,
    )


@pytest.mark.parametrize(("seconds_left", "hours"), [(5 * 3600 - 60, 5), (30, 1), (24 * 3600, 24)])
def test_mistral_job_timeout_is_the_hours_left_in_the_batch_window(
    adapter: MistralProvider, mistral: tuple[FakeMistral, str], seconds_left: int, hours: int
) -> None:
    fake, _ = mistral
    journal = MemoryJournal()
    adapter.submit(request_with_window(seconds_left), journal)
    assert fake.jobs[journal.refs["batch_id"]].timeout_hours == hours


def test_resumed_submission_adopts_the_job_its_lost_create_made_on_its_input_file(
    adapter: MistralProvider, mistral: tuple[FakeMistral, str]
) -> None:
    # Given a submission that crashed after its create reached Mistral, and another job made since
    fake, _ = mistral
    first = MemoryJournal("batch_first")
    adapter.submit(submit_request("batch_first", MODEL, batch_lines(2, model=MODEL, prefix="x")), first)
    adapter.submit(submit_request("batch_other", MODEL, batch_lines(2, model=MODEL, prefix="y")), MemoryJournal())
    resumed = MemoryJournal(
        "batch_first", input_file_id=first.refs["input_file_id"], create_started=first.refs["create_started"]
    )

    adapter.submit(submit_request("batch_first", MODEL, batch_lines(2, model=MODEL, prefix="x")), resumed)

    assert resumed.refs["batch_id"] == first.refs["batch_id"]
    assert fake.calls["POST /v1/batch/jobs"] == 2 and fake.calls["POST /v1/files"] == 2


def test_running_jobs_are_polled_from_list_pages_without_getting_each(
    stack: Stack, mistral: tuple[FakeMistral, str]
) -> None:
    # Given 30 jobs running on Mistral, a list page holding 5 (fewer than the 100 asked), and a job made
    # outside the gateway on the same account
    fake, _ = mistral
    fake.processing_seconds, fake.max_page_size = 60.0, 5
    batch_ids = [started(stack, batch_lines(1, model=MODEL, prefix=f"b{i}")) for i in range(30)]
    stack.deliver("SubmitterFunction")
    other = FakeJob("theirs", [], "/v1/chat/completions", "mistral-small-latest", {}, 24, [])
    fake.jobs[other.id] = other
    assert all(record(stack, b).status == "in_progress" for b in batch_ids)
    before = fake.calls.copy()

    # When the poller ticks
    stack.poll()

    # Then seven list pages (31 jobs, 5 a page) showed them all, and no job was got on its own
    calls = fake.calls - before
    assert calls["GET /v1/batch/jobs"] == 7 and not [c for c in calls if c.startswith("GET /v1/batch/jobs/")], calls
    fake.processing_seconds = 0.0
    stack.run_until(lambda: all(record(stack, b).status == "completed" for b in batch_ids))
    assert len(fake.jobs) == 31


def test_list_pages_stop_at_the_total_the_list_gives_even_after_a_short_last_page(
    adapter: MistralProvider, mistral: tuple[FakeMistral, str]
) -> None:
    # Given 8 jobs of ours, the oldest gone from Mistral's list (7 listed), and list pages of 3 saying the total
    fake, _ = mistral
    fake.processing_seconds, fake.max_page_size = 60.0, 3
    refs = []
    for i in range(8):
        journal = MemoryJournal(f"batch_{i}")
        adapter.submit(submit_request(f"batch_{i}", MODEL, batch_lines(1, model=MODEL, prefix=f"j{i}")), journal)
        refs.append(journal.refs)
    del fake.jobs[refs[0]["batch_id"]]
    before = fake.calls["GET /v1/batch/jobs"]

    statuses = adapter.list_statuses(refs)

    # Then the gone job is looked for to the end of the list, and no further: pages of 3, 3 and 1 hold the 7
    # (the short last page was read as if every page held one, and a fourth, empty page was asked for)
    assert fake.calls["GET /v1/batch/jobs"] - before == 3
    assert set(statuses) == {r["batch_id"] for r in refs[1:]}


def test_list_pages_are_read_without_a_total_and_a_job_in_an_unknown_state_is_left_to_retrieve(
    adapter: MistralProvider, mistral: tuple[FakeMistral, str]
) -> None:
    # Given 7 jobs of ours, the oldest gone from Mistral's list, list pages of 3 that do not say how many jobs
    # there are, and one job in a state this adapter does not know
    fake, _ = mistral
    fake.processing_seconds, fake.max_page_size, fake.list_total = 60.0, 3, False
    refs = []
    for i in range(7):
        journal = MemoryJournal(f"batch_{i}")
        adapter.submit(submit_request(f"batch_{i}", MODEL, batch_lines(1, model=MODEL, prefix=f"j{i}")), journal)
        refs.append(journal.refs)
    fake.jobs[refs[2]["batch_id"]].status = "PAUSED"
    del fake.jobs[refs[0]["batch_id"]]

    # When their statuses are read from the list
    statuses = adapter.list_statuses(refs)

    # Then the pages are read until one shows no job (the gone one is looked for to the end), and every job
    # but the gone and the unknown ones is read from them
    assert fake.calls["GET /v1/batch/jobs"] == 3 and not [c for c in fake.calls if c.startswith("GET /v1/batch/jobs/")]
    assert set(statuses) == {r["batch_id"] for r in refs[1:]} - {refs[2]["batch_id"]}
    assert {s.state for s in statuses.values()} == {"in_progress"}
