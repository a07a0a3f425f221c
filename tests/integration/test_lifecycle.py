"""The batch lifecycle through the real handlers and events: submit, poll, complete, exactly once.

Providers are the fake OpenAI upstream over loopback HTTP and the in-process mock; AWS is moto.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from itertools import pairwise
from typing import Any

import orjson
import pytest

from shared.providers.base import ResultLine
from shared.providers.mock import MockProvider
from shared.records import Counts, SpendRow
from tests.fakes.journal import MemoryJournal, submit_request
from tests.integration.conftest import (
    Stack,
    batch,
    batch_lines,
    end_under_faults,
    finish,
    lines,
    load_event,
    record,
    started,
)
from tests.integration.test_tenancy import bounded_lines

# OpenAI's published Batch API price for gpt-4o-mini, USD per million tokens
GPT_4O_MINI_BATCH_INPUT = Decimal("0.075")
GPT_4O_MINI_BATCH_OUTPUT = Decimal("0.30")


def spend_rows(stack: Stack) -> list[SpendRow]:
    return stack.rt.key_store.spend("master")


def expected_cost(stack: Stack, provider_batch_id: str) -> Decimal:
    fake = stack.upstream.batches[provider_batch_id]
    return (
        fake.prompt_tokens * GPT_4O_MINI_BATCH_INPUT + fake.completion_tokens * GPT_4O_MINI_BATCH_OUTPUT
    ) / 1_000_000


def test_handlers_run_the_flow_from_sample_events_to_a_priced_completion(stack: Stack) -> None:
    # Given a batch of 6 requests routed to the fake OpenAI upstream, two of which it fails
    content = batch_lines(4, model="upstream-gpt-4o-mini") + batch_lines(2, model="upstream-gpt-4o-mini", prefix="fail")
    batch_id = started(stack, content)
    assert stack.pending("SubmitterFunction")

    # When each function is invoked with its sample event from events/
    stack.invoke("SubmitterFunction", load_event("batch_created.json", batch_id=batch_id))
    assert batch(stack, batch_id)["status"] == "in_progress"
    provider_batch = record(stack, batch_id).provider_refs["batch_id"]
    stack.run_until(lambda: record(stack, batch_id).finalize_to is not None, rounds=30, complete=False)
    assert batch(stack, batch_id)["status"] == "finalizing"
    ended = stack.pending("CompletionFunction")
    assert [e["detail"]["batch_id"] for e in ended] == [batch_id]
    stack.invoke("CompletionFunction", load_event("batch_ended.json", batch_id=batch_id))

    # Then it is completed, with files whose lines cover every custom_id once, and priced at batch rates
    done = batch(stack, batch_id)
    assert done["status"] == "completed" and done["completed_at"] >= done["finalizing_at"]
    assert done["request_counts"] == {"total": 6, "completed": 4, "failed": 2}
    output, errors = lines(stack, done["output_file_id"]), lines(stack, done["error_file_id"])
    assert sorted(line["custom_id"] for line in output) == [f"req-{i}" for i in range(4)]
    assert sorted(line["custom_id"] for line in errors) == ["fail-0", "fail-1"]
    assert all(line["response"]["status_code"] == 200 and line["error"] is None for line in output)
    fake = stack.upstream.batches[provider_batch]
    assert done["usage"]["input_tokens"] == fake.prompt_tokens
    assert done["usage"]["output_tokens"] == fake.completion_tokens
    assert done["usage"]["total_tokens"] == fake.prompt_tokens + fake.completion_tokens
    cost = expected_cost(stack, provider_batch)
    assert done["cost"]["value"] == pytest.approx(float(cost), rel=1e-9)
    assert done["cost"]["currency"] == "usd"
    (row,) = spend_rows(stack)
    assert float(row.cost) == pytest.approx(float(cost), rel=1e-9) and row.batches == 1 and row.requests == 6
    output_file = stack.api.get(f"/v1/files/{done['output_file_id']}", headers=stack.auth()).json()
    assert output_file["purpose"] == "batch_output"
    # and the files batchgw put at OpenAI (input, output, errors) are deleted there once it holds the results
    assert stack.upstream.files == {}


def test_an_answered_line_is_stored_as_openai_wrote_it(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenAI writes its lines as Python's json.dumps does (", ", ": ", non-ASCII escaped): the user gets those
    # bytes, not batchgw's encoding of what it read
    written: list[bytes] = []
    store = stack.upstream.store_results

    def kept(provider_batch: Any, output: bytes, errors: bytes) -> None:
        written.append(output)
        store(provider_batch, output, errors)

    monkeypatch.setattr(stack.upstream, "store_results", kept)
    (done,) = finish(stack, started(stack, batch_lines(3, model="upstream-gpt-4o-mini", prefix="q \u00e9\n")))
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 3
    stored = stack.api.get(f"/v1/files/{done['output_file_id']}/content", headers=stack.auth()).content
    assert sorted(stored.splitlines()) == sorted(written[0].splitlines())
    assert b'"custom_id": "q \\u00e9\\n-0"' in stored


def test_pricing_override_in_the_routing_file_wins(stack: Stack) -> None:
    batch_id = started(stack, batch_lines(3, model="upstream-priced"))
    finish(stack, batch_id)
    done = batch(stack, batch_id)
    fake = stack.upstream.batches[record(stack, batch_id).provider_refs["batch_id"]]
    expected = (fake.prompt_tokens * Decimal("0.5") + fake.completion_tokens * Decimal("2.0")) / 1_000_000
    assert done["cost"]["value"] == pytest.approx(float(expected), rel=1e-9)


def test_mock_provider_completes_chat_and_embeddings(stack: Stack) -> None:
    chat = started(stack, batch_lines(5))
    embeddings = started(
        stack,
        b"".join(
            orjson.dumps(
                {
                    "custom_id": f"e{i}",
                    "method": "POST",
                    "url": "/v1/embeddings",
                    "body": {"model": "text-embedding-3-small", "input": f"text {i}"},
                },
                option=orjson.OPT_APPEND_NEWLINE,
            )
            for i in range(3)
        ),
        endpoint="/v1/embeddings",
    )
    finish(stack, chat, embeddings)
    assert batch(stack, chat)["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    vectors = lines(stack, batch(stack, embeddings)["output_file_id"])
    assert len(vectors) == 3 and all(v["response"]["body"]["data"][0]["embedding"] for v in vectors)
    assert batch(stack, embeddings)["usage"]["output_tokens"] == 0


def test_the_mock_stops_each_reply_at_its_request_s_output_limit(stack: Stack) -> None:
    # as a model does: its six-token reply to a max_tokens of 1 could cost more than the budget held for it
    limited = bounded_lines(3, max_tokens=1)
    batch_id = started(stack, limited)
    finish(stack, batch_id)
    done = batch(stack, batch_id)
    assert done["usage"]["output_tokens"] == 3
    for line in lines(stack, done["output_file_id"]):
        body = line["response"]["body"]
        assert body["usage"]["completion_tokens"] == 1 and body["choices"][0]["finish_reason"] == "length"


def test_the_mock_answers_each_of_n_choices_within_the_limit_and_bills_them_all(stack: Stack) -> None:
    body = {"model": "gpt-4o-mini", "n": 3, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    line = {"custom_id": "three", "method": "POST", "url": "/v1/chat/completions", "body": body}
    completions = {"model": "gpt-4o-mini", "n": 2, "best_of": 4, "max_tokens": 2, "prompt": "hi"}
    completion = {"custom_id": "best", "method": "POST", "url": "/v1/completions", "body": completions}
    too_many = {**line, "custom_id": "too-many", "body": {**body, "n": 129}}
    too_many_best = {**completion, "custom_id": "too-many-best", "body": {**completions, "best_of": 21}}
    chat_id = started(stack, b"".join(orjson.dumps(x, option=orjson.OPT_APPEND_NEWLINE) for x in (line, too_many)))
    completion_id = started(
        stack,
        b"".join(orjson.dumps(x, option=orjson.OPT_APPEND_NEWLINE) for x in (completion, too_many_best)),
        "/v1/completions",
    )
    finish(stack, chat_id, completion_id)
    (chat,) = lines(stack, batch(stack, chat_id)["output_file_id"])
    answer = chat["response"]["body"]
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2]
    assert all(c["finish_reason"] == "length" for c in answer["choices"])  # each stops at max_tokens
    assert answer["usage"]["completion_tokens"] == 3 * 2
    assert batch(stack, chat_id)["usage"]["output_tokens"] == 6
    # above OpenAI's 128, OpenAI's refusal
    (refused,) = lines(stack, batch(stack, chat_id)["error_file_id"])
    assert refused["response"]["status_code"] == 400 and refused["response"]["body"]["error"]["param"] == "n"
    # best_of 4 returning 2: four answers generated and billed, two returned
    (best,) = lines(stack, batch(stack, completion_id)["output_file_id"])
    assert len(best["response"]["body"]["choices"]) == 2
    assert best["response"]["body"]["usage"]["completion_tokens"] == 4 * 2
    # best_of above OpenAI's 20, its refusal (not 21 answers generated and billed)
    (refused_best,) = lines(stack, batch(stack, completion_id)["error_file_id"])
    assert refused_best["custom_id"] == "too-many-best"
    assert refused_best["response"]["status_code"] == 400
    assert refused_best["response"]["body"]["error"]["param"] == "best_of"


def test_completion_delivered_twice_and_concurrently_books_once(stack: Stack) -> None:
    batch_id = started(stack, batch_lines(4, model="upstream-gpt-4o-mini"))
    stack.deliver("SubmitterFunction")
    stack.run_until(lambda: record(stack, batch_id).finalize_to is not None, rounds=30, complete=False)
    (event,) = stack.pending("CompletionFunction")

    # two deliveries at once, then a third one late
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(stack.invoke("CompletionFunction", event))) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    late = stack.invoke("CompletionFunction", event)

    assert sorted(r["booked"] for r in [*results, late]) == [False, False, True]
    (row,) = spend_rows(stack)
    assert row.batches == 1
    provider_batch = record(stack, batch_id).provider_refs["batch_id"]
    assert float(row.cost) == pytest.approx(float(expected_cost(stack, provider_batch)), rel=1e-9)
    assert len(lines(stack, batch(stack, batch_id)["output_file_id"])) == 4


def test_concurrent_pollers_end_a_batch_once(stack: Stack) -> None:
    started(stack, batch_lines(3, model="upstream-gpt-4o-mini"))
    stack.deliver("SubmitterFunction")
    time.sleep(0.4)  # the fake upstream has finished processing
    threads = [threading.Thread(target=stack.poll) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(stack.pending("CompletionFunction")) == 1


def test_crash_between_output_file_and_transaction_is_healed_by_the_next_poll(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = started(stack, batch_lines(4, model="upstream-gpt-4o-mini"))
    stack.deliver("SubmitterFunction")
    stack.run_until(lambda: record(stack, batch_id).finalize_to is not None, rounds=30, complete=False)
    (event,) = stack.pending("CompletionFunction")
    reserved = record(stack, batch_id).reserved_output_file_id

    # the first completion dies after its files are written, before the transaction
    from shared.storage.batch_store import DynamoBatchStore

    real = DynamoBatchStore.finish

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Lambda timed out")

    monkeypatch.setattr(DynamoBatchStore, "finish", crash)
    with pytest.raises(RuntimeError):
        stack.invoke("CompletionFunction", event)
    monkeypatch.setattr(DynamoBatchStore, "finish", real)
    assert batch(stack, batch_id)["status"] == "finalizing" and spend_rows(stack) == []

    # the poller sees it stuck and re-drives the completion, which books it once
    time.sleep(1.1)
    stack.poll()
    assert stack.deliver("CompletionFunction") == 1
    done = batch(stack, batch_id)
    assert done["status"] == "completed" and done["output_file_id"] == reserved
    assert len(lines(stack, done["output_file_id"])) == 4
    (row,) = spend_rows(stack)
    assert row.batches == 1


def test_lost_create_answer_is_found_again_and_no_second_provider_batch_is_made(stack: Stack) -> None:
    stack.upstream.slow_create_seconds = 2.0  # longer than the route's 1 s timeout: the answer is lost
    batch_id = started(stack, batch_lines(2, model="upstream-gpt-4o-mini"))
    stack.deliver("SubmitterFunction")
    finish(stack, batch_id)
    assert batch(stack, batch_id)["status"] == "completed"
    assert stack.upstream.calls["POST /v1/batches"] == 1
    assert len(stack.upstream.batches) == 1


def test_submitter_duplicate_events_submit_once(stack: Stack) -> None:
    batch_id = started(stack, batch_lines(2, model="upstream-gpt-4o-mini"))
    (event,) = stack.pending("SubmitterFunction")
    threads = [threading.Thread(target=stack.invoke, args=("SubmitterFunction", event)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stack.invoke("SubmitterFunction", event)
    assert batch(stack, batch_id)["status"] == "in_progress"
    assert stack.upstream.calls["POST /v1/files"] == 1 and stack.upstream.calls["POST /v1/batches"] == 1


def test_permanent_provider_refusal_fails_the_batch_with_errors_and_an_error_file(stack: Stack) -> None:
    batch_id = started(stack, batch_lines(3, model="fake-refuse"))
    finish(stack, batch_id)
    failed = batch(stack, batch_id)
    assert failed["status"] == "failed" and failed["failed_at"] is not None
    assert failed["errors"]["data"][0]["message"].endswith("The model fake-refuse does not support batches.")
    assert [line["error"]["code"] for line in lines(stack, failed["error_file_id"])] == ["batch_failed"] * 3
    assert failed["output_file_id"] is None and failed["cost"]["value"] == 0


def test_expired_batch_keeps_and_prices_its_partial_results(stack: Stack) -> None:
    batch_id = started(stack, batch_lines(4, model="fake-expire"))
    finish(stack, batch_id)
    expired = batch(stack, batch_id)
    assert expired["status"] == "expired" and expired["expired_at"] is not None
    output, errors = lines(stack, expired["output_file_id"]), lines(stack, expired["error_file_id"])
    assert sorted(line["custom_id"] for line in output) == ["req-0", "req-1"]
    assert sorted(line["custom_id"] for line in errors) == ["req-2", "req-3"]
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}
    assert expired["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    fake = stack.upstream.batches[record(stack, batch_id).provider_refs["batch_id"]]
    assert expired["usage"]["input_tokens"] == fake.prompt_tokens > 0
    expected = (fake.prompt_tokens * 1.0 + fake.completion_tokens * 4.0) / 1_000_000
    assert expired["cost"]["value"] == pytest.approx(expected, rel=1e-9)


def test_cancel_in_progress_goes_through_cancelling_to_cancelled_with_partial_results(stack: Stack) -> None:
    stack.upstream.processing_seconds = 60
    batch_id = started(stack, batch_lines(4, model="upstream-gpt-4o-mini"))
    stack.deliver("SubmitterFunction")
    assert batch(stack, batch_id)["status"] == "in_progress"
    assert stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth()).json()["status"] == "cancelling"
    stack.poll()  # sends the cancel; the provider is still cancelling
    assert batch(stack, batch_id)["status"] == "cancelling"
    finish(stack, batch_id)
    cancelled = batch(stack, batch_id)
    assert cancelled["status"] == "cancelled"
    assert cancelled["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    assert {line["error"]["code"] for line in lines(stack, cancelled["error_file_id"])} == {"batch_cancelled"}
    assert stack.upstream.calls[f"POST /v1/batches/{record(stack, batch_id).provider_refs['batch_id']}/cancel"] == 1


def test_mock_expiry_and_failures_keep_every_custom_id_once(stack: Stack) -> None:
    expiring = started(stack, batch_lines(10, model="mock-expiring"))
    flaky = started(stack, batch_lines(20, model="mock-flaky"))
    finish(stack, expiring, flaky)
    for batch_id, total in ((expiring, 10), (flaky, 20)):
        done = batch(stack, batch_id)
        seen = [
            line["custom_id"] for line in lines(stack, done["output_file_id"]) + lines(stack, done["error_file_id"])
        ]
        assert sorted(seen) == sorted(f"req-{i}" for i in range(total))
        assert done["request_counts"]["completed"] + done["request_counts"]["failed"] == total
    assert batch(stack, expiring)["status"] == "expired"
    flaky_done = batch(stack, flaky)
    assert flaky_done["status"] == "completed" and 0 < flaky_done["request_counts"]["failed"] < 20


def test_provider_faults_still_end_every_batch_right_and_bill_once(stack: Stack) -> None:
    # a third of upstream calls answer 500, 429 with Retry-After, or hang past the 1 s timeout
    stack.upstream.faults.error_rate = 0.12
    stack.upstream.faults.rate_limit_rate = 0.1
    stack.upstream.faults.hang_rate = 0.08
    stack.upstream.faults.hang_seconds = 1.5
    batch_ids, row = end_under_faults(stack, stack.upstream.calls, "upstream-gpt-4o-mini")
    expected = sum(expected_cost(stack, record(stack, b).provider_refs["batch_id"]) for b in batch_ids)
    assert float(row.cost) == pytest.approx(float(expected), rel=1e-9)
    assert len(stack.upstream.batches) == 4


def test_unreachable_provider_fails_its_batch_after_bounded_redrives_and_stops_nothing_else(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.runtime import reset_runtime

    monkeypatch.setenv("BATCHGW_MAX_REDRIVES", "2")
    reset_runtime()
    stranded = started(stack, batch_lines(3, model="dead-provider"))
    healthy = started(stack, batch_lines(3, model="upstream-gpt-4o-mini"))
    finish(stack, healthy)
    assert batch(stack, healthy)["status"] == "completed"
    assert batch(stack, stranded)["status"] in {"validating", "failed"}  # retried, or already given up
    finish(stack, stranded, rounds=120)
    failed = batch(stack, stranded)
    assert failed["status"] == "failed" and failed["errors"]["data"]
    assert any("ConnectError" in e["message"] or "tries" in e["message"] for e in failed["errors"]["data"])
    assert [line["error"]["code"] for line in lines(stack, failed["error_file_id"])] == ["batch_failed"] * 3
    assert stack.failures  # the submitter raised for Lambda to retry before giving up


def test_the_mock_s_progress_counts_only_grow_and_end_at_its_results(stack: Stack) -> None:
    # with a failure_rate, the mock estimated its failures in progress and hashed custom_ids for its results:
    # 37 requests showed 25 completed and 11 failed in progress, then 22 and 15, so `completed` went down
    (deployment,) = stack.rt.routing.deployments_for("mock-flaky")
    now = [0.0]
    mock = MockProvider(deployment, stack.rt.blobs, clock=lambda: now[0])
    journal = MemoryJournal()
    mock.submit(submit_request("batch_mock", "gpt-4o-mini", batch_lines(37)), journal)
    seen = []
    for step in range(11):
        now[0] = deployment.delay * step / 10
        counts = mock.refresh(journal.refs).counts
        assert counts is not None
        seen.append(counts)
    assert all(a.completed <= b.completed and a.failed <= b.failed for a, b in pairwise(seen)), seen
    results = [line for line in mock.results(journal.refs, []) if isinstance(line, ResultLine)]
    failed = sum(1 for line in results if not line.succeeded)
    assert 0 < failed < 37 and seen[-1] == Counts(total=37, completed=37 - failed, failed=failed)
