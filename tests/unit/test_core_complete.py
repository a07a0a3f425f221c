"""Completion over the in-memory ports: every custom_id once, a bad line alone, booked exactly once."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson
import pytest

from shared.auth import MASTER
from shared.deadline import Deadline
from shared.polling import EXPIRY_GRACE_SECONDS
from shared.providers import anthropic_results
from shared.providers.base import LineUsage, ResultLine, Unreadable, Verbatim
from shared.records import Counts
from tests.unit.conftest import World, chat_lines, ok_line

# OpenAI's batch price for gpt-4o-mini, USD per token
INPUT, OUTPUT = Decimal("0.075") / 1_000_000, Decimal("0.30") / 1_000_000


def ended(
    world: World, custom_ids: list[str], results: Sequence[ResultLine | Verbatim | Unreadable] | None = None
) -> str:
    batch_id = world.create(chat_lines(custom_ids))
    world.submission.submit(batch_id)
    world.provider.finish(results=results)
    world.poller.tick(Deadline.after(30))
    assert world.db.batches[batch_id].finalize_to == "completed"
    return batch_id


def lines_of(world: World, file_id: str | None) -> list[dict[str, object]]:
    raw = world.blobs.objects.get(f"files/{file_id}", b"") if file_id else b""
    return [orjson.loads(line) for line in raw.splitlines()]


def test_completion_writes_each_custom_id_once_and_books_its_cost_once(world: World) -> None:
    batch_id = ended(world, ["a", "b"])
    world.deliver_ended()
    world.completion.complete(batch_id)  # a duplicate delivery
    done = world.db.batches[batch_id]
    assert done.status == "completed" and done.request_counts == Counts(total=2, completed=2, failed=0)
    assert [line["custom_id"] for line in lines_of(world, done.output_file_id)] == ["a", "b"]
    assert done.cost is not None and done.cost.total == 20 * INPUT + 10 * OUTPUT
    (row,) = world.key_store.spend("master")
    assert row.batches == 1 and row.cost == done.cost.total
    assert len(world.bus.of("Batch Completed")) == 1


def test_concurrent_completions_book_once(world: World) -> None:
    key = world.key()
    batch_id = world.create(chat_lines(["a"]), key)
    world.submission.submit(batch_id)
    world.provider.finish()
    world.poller.tick(Deadline.after(30))
    booked: list[object] = []
    threads = [threading.Thread(target=lambda: booked.append(world.completion.complete(batch_id))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(b is not None for b in booked) == 1
    record = world.key_record(key)
    assert record.spend == world.db.batches[batch_id].cost.total and record.reserved == 0  # type: ignore[union-attr]


def test_malformed_provider_lines_fail_alone_and_every_good_line_is_kept_and_priced(world: World) -> None:
    # Given a provider output mixing good lines with every defect, duplicates and garbage
    good = [ok_line("good-1"), ok_line("good-2", prompt=7, completion=3)]
    no_status = ResultLine("no-status", {"request_id": "r", "body": {}})
    string_status = ResultLine("string-status", {"status_code": "200", "request_id": "r", "body": {}})
    list_body = ResultLine("list-body", {"status_code": 200, "request_id": "r", "body": [1]})
    negative = ResultLine(
        "negative", {"status_code": 200, "request_id": "r", "body": {}}, usage=LineUsage(input_tokens=-5)
    )
    results: list[ResultLine | Unreadable] = [
        good[0],
        no_status,
        string_status,
        list_body,
        negative,
        Unreadable("broken", "the line is not valid JSON"),
        Unreadable(None, "the line has no custom_id"),
        ResultLine("not-ours", None, {"code": "x", "message": "y"}),
        good[1],
        ok_line("good-1", prompt=999, completion=999),  # a duplicate: folded into the first
    ]
    custom_ids = ["good-1", "no-status", "string-status", "list-body", "negative", "broken", "good-2", "silent"]
    batch_id = ended(world, custom_ids, results)

    # When it completes
    done = world.completion.complete(batch_id)

    # Then the batch completes, each custom_id once, counts add up, good lines priced exactly
    assert done is not None and done.unreadable == 2 and done.repeated == 1
    batch = world.db.batches[batch_id]
    assert batch.status == "completed" and batch.request_counts == Counts(total=8, completed=2, failed=6)
    output, errors = lines_of(world, batch.output_file_id), lines_of(world, batch.error_file_id)
    assert sorted(line["custom_id"] for line in output) == ["good-1", "good-2"]  # type: ignore[type-var]
    codes = {line["custom_id"]: line["error"]["code"] for line in errors}  # type: ignore[index]
    assert codes == {
        "no-status": "provider_error",
        "string-status": "provider_error",
        "list-body": "provider_error",
        "negative": "provider_error",
        "broken": "provider_error",
        "silent": "missing_result",
    }
    assert batch.cost is not None and batch.cost.total == 17 * INPUT + 8 * OUTPUT
    assert batch.usage is not None and batch.usage.input_tokens == 17


@pytest.mark.parametrize("wrapped", [1, 2_000])
def test_a_line_reporting_more_tokens_than_a_request_can_hold_fails_alone_unbilled(world: World, wrapped: int) -> None:
    # Given a provider whose token counter wrapped (2**64 - 1, an unsigned -1) on some lines: one such line
    # billed $5.5 trillion; 2,000 made a cost no amount holds, and the batch never finalized
    good = ok_line("good", prompt=7, completion=3)
    bad = [
        ok_line(f"wrapped-{i}", prompt=2**64 - 1, completion=0) if i % 2 else ok_line(f"wrapped-{i}", 10**9 + 1)
        for i in range(wrapped)
    ]
    batch_id = ended(world, ["good", *(line.custom_id for line in bad)], [good, *bad])

    # When it completes
    world.completion.complete(batch_id)

    # Then those lines fail alone as provider errors, and only the good line is billed
    batch = world.db.batches[batch_id]
    assert batch.status == "completed" and batch.request_counts == Counts(
        total=1 + wrapped, completed=1, failed=wrapped
    )
    errors = lines_of(world, batch.error_file_id)
    assert {line["error"]["code"] for line in errors} == {"provider_error"}  # type: ignore[index]
    assert "1,000,000,000" in errors[0]["error"]["message"]  # type: ignore[index]
    assert batch.cost is not None and batch.cost.total == 7 * INPUT + 3 * OUTPUT


def test_every_error_line_has_an_error_object_the_providers_answer_kept_beside_it(world: World) -> None:
    # Given a provider that refuses one request, fails one, throttles one and answers one with a bare error
    def answered(custom_id: str, status: int, body: dict[str, Any]) -> ResultLine:
        return ResultLine(custom_id, {"status_code": status, "request_id": f"req_{custom_id}", "body": body})

    refusal = {"error": {"message": "max_tokens: 0 < 1", "type": "invalid_request_error", "code": "invalid_value"}}
    results: list[ResultLine | Unreadable] = [
        ok_line("good"),
        answered("refused", 400, refusal),
        answered("crashed", 500, {"error": {"message": "The server had an error.", "type": "server_error"}}),
        answered("throttled", 429, {"error": {"message": "Rate limit reached.", "code": 42}}),
        answered("bare", 404, {}),
    ]
    batch_id = ended(world, ["good", "refused", "crashed", "throttled", "bare"], results)

    # When it completes
    world.completion.complete(batch_id)

    # Then each failed line keeps the provider's answer and carries the contract's {code, message} error: a
    # request the provider refused is invalid_request, any other failed answer a provider_error
    batch = world.db.batches[batch_id]
    errors = {line["custom_id"]: line for line in lines_of(world, batch.error_file_id)}
    assert {k: line["response"]["status_code"] for k, line in errors.items()} == {  # type: ignore[index]
        "refused": 400,
        "crashed": 500,
        "throttled": 429,
        "bare": 404,
    }
    assert {k: line["error"] for k, line in errors.items()} == {
        "refused": {
            "code": "invalid_request",
            "message": "The provider refused this request (HTTP 400, invalid_value): max_tokens: 0 < 1",
        },
        "crashed": {
            "code": "provider_error",
            "message": "The provider failed this request (HTTP 500): The server had an error.",
        },
        "throttled": {
            "code": "provider_error",
            "message": "The provider failed this request (HTTP 429, 42): Rate limit reached.",
        },
        "bare": {"code": "invalid_request", "message": "The provider refused this request (HTTP 404)."},
    }
    assert [line["error"] for line in lines_of(world, batch.output_file_id)] == [None]


def test_a_readable_line_after_an_unreadable_one_for_the_same_request_is_the_one_kept_and_priced(
    world: World,
) -> None:
    # Given a provider that writes one request's line broken, then whole, and another's only broken, twice
    results: list[ResultLine | Unreadable] = [
        Unreadable("late", "the line is not valid JSON"),
        Unreadable("broken", "the line is not valid JSON"),
        ok_line("late", prompt=7, completion=3),
        Unreadable("broken", "its usage.prompt_tokens is -1, not a count of tokens"),
    ]
    batch_id = ended(world, ["late", "broken"], results)

    # When it completes
    done = world.completion.complete(batch_id)

    # Then the whole line is the request's result, priced; the other has one error line, the first reason
    assert done is not None and done.repeated == 2
    batch = world.db.batches[batch_id]
    assert batch.request_counts == Counts(total=2, completed=1, failed=1)
    assert [line["custom_id"] for line in lines_of(world, batch.output_file_id)] == ["late"]
    (error,) = lines_of(world, batch.error_file_id)
    assert error["custom_id"] == "broken" and "not valid JSON" in error["error"]["message"]  # type: ignore[index]
    assert batch.cost is not None and batch.cost.total == 7 * INPUT + 3 * OUTPUT


def _kept(*lines: tuple[str, int]) -> Verbatim:
    """Answered lines read at once, as the openai adapter reads a chunk of its download: (custom_id, prompt)."""
    raws = [
        orjson.dumps(
            {
                "id": f"batch_req_{custom_id}",
                "custom_id": custom_id,
                "response": {"status_code": 200, "request_id": "r", "body": {"usage": {"prompt_tokens": prompt}}},
                "error": None,
            }
        )
        for custom_id, prompt in lines
    ]
    return Verbatim([c for c, _ in lines], [LineUsage(input_tokens=p) for _, p in lines], b"\n".join([*raws, b""]))


def test_answered_lines_read_at_once_are_each_kept_once_as_written_and_priced_once(world: World) -> None:
    # Given a provider whose answered lines come a chunk at a time: the first chunk's all new, the next one's
    # request had an unreadable line first, and the last has a request already answered, one never asked, one
    # whose earlier line was unreadable, and one twice
    first, second = _kept(("a", 1), ("b", 2)), _kept(("early", 16))
    third = _kept(("c", 4), ("a", 100), ("stranger", 100), ("late", 8), ("c", 100))
    broken = [Unreadable(custom_id, "the line is not valid JSON") for custom_id in ("late", "early")]
    results: list[ResultLine | Verbatim | Unreadable] = [*broken, first, second, third]
    batch_id = ended(world, ["a", "b", "early", "c", "late", "silent"], results)

    # When it completes
    done = world.completion.complete(batch_id)

    # Then each request's first answered line is stored as the provider wrote it and priced, the rest counted
    assert done is not None and (done.repeated, done.unreadable) == (4, 1)
    batch = world.db.batches[batch_id]
    assert batch.request_counts == Counts(total=6, completed=5, failed=1)
    written = [*first.lines(), *second.lines(), third.lines()[0], third.lines()[3]]
    assert world.blobs.objects[f"files/{batch.output_file_id}"] == b"".join(raw + b"\n" for raw in written)
    assert [line["custom_id"] for line in lines_of(world, batch.error_file_id)] == ["silent"]
    assert batch.usage is not None and batch.usage.input_tokens == 1 + 2 + 16 + 4 + 8
    assert batch.cost is not None and batch.cost.total == 31 * INPUT


def test_any_custom_id_string_round_trips_byte_for_byte(world: World) -> None:
    odd = ["a\nb", "a", "b", "tab\there", 'quote"and\\slash', "emoji 🚀", "  leading", "x" * 512]
    batch_id = ended(world, odd)
    world.deliver_ended()
    batch = world.db.batches[batch_id]
    assert [line["custom_id"] for line in lines_of(world, batch.output_file_id)] == odd
    assert batch.request_counts == Counts(total=8, completed=8, failed=0)


def test_a_tiny_cost_books_exactly(world: World) -> None:
    key = world.key()
    batch_id = world.create(chat_lines(["hi"]), key)
    world.submission.submit(batch_id)
    world.provider.finish(results=[ok_line("hi", prompt=1, completion=0)])
    world.poller.tick(Deadline.after(30))
    world.deliver_ended()
    batch = world.db.batches[batch_id]
    assert batch.cost is not None and batch.cost.total == INPUT == Decimal("7.5E-8")
    assert world.key_record(key).spend == INPUT and world.key_record(key).reserved == 0


def test_results_that_cannot_be_fetched_end_the_batch_failed_after_the_redrives(world: World) -> None:
    batch_id = ended(world, ["a"])
    world.completion.complete(batch_id, without_results=True)
    batch = world.db.batches[batch_id]
    assert batch.status == "failed" and batch.errors[-1].code == "results_unavailable"
    assert lines_of(world, batch.error_file_id)[0]["error"] == {
        "code": "batch_failed",
        "message": "This request was not executed because the batch failed.",
    }


def test_completion_removes_what_batchgw_put_at_the_provider(world: World) -> None:
    batch_id = ended(world, ["a"])
    world.deliver_ended()
    assert world.provider.cleaned == [f"prov_{batch_id}"] and batch_id not in world.db.work


@pytest.mark.parametrize(
    ("ending", "reported", "status", "code"),
    [
        ("cancelled by its user", "canceled", "cancelled", "batch_cancelled"),
        ("expired by batchgw, which cancels it at its provider", "canceled", "expired", "batch_expired"),
        ("expired by its provider", "expired", "expired", "batch_expired"),
    ],
)
def test_requests_the_provider_reports_not_run_are_labelled_by_how_the_batch_ended(
    world: World, ending: str, reported: str, status: str, code: str
) -> None:
    # Given a running batch whose provider ran one request and reports the other not run, as Anthropic does
    batch_id = world.create(chat_lines(["a", "b"]))
    world.submission.submit(batch_id)
    run = world.provider.runs[f"prov_{batch_id}"]
    not_run = anthropic_results.result_line({"custom_id": "b", "result": {"type": reported}}, "b", created=0)
    run.results = [ok_line("a"), not_run]

    # When the batch ends that way and completes
    if ending.startswith("cancelled"):
        world.batches.cancel(MASTER, batch_id)
    elif ending.startswith("expired by batchgw"):
        world.clock.advance(24 * 3600 + EXPIRY_GRACE_SECONDS)
    world.poller.tick(Deadline.after(30))  # sends the cancel, if any
    run.state = "expired" if reported == "expired" else "cancelled"
    world.poller.tick(Deadline.after(30))
    world.deliver_ended()

    # Then the request that did not run says why in the batch's terms, as OpenAI's error lines do
    batch = world.db.batches[batch_id]
    (error,) = lines_of(world, batch.error_file_id)
    assert (batch.status, error["custom_id"], error["error"]["code"]) == (status, "b", code)  # type: ignore[index]
