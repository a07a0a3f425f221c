"""Submission over the in-memory ports: screening, leases, a provider that asks to wait, refusals, fail-over."""

from __future__ import annotations

import pytest

from shared.deadline import Deadline
from shared.errors import ProviderBusy, ProviderError
from shared.records import Counts
from tests.unit.conftest import World, chat_lines

AUDIO = [{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]


def test_submission_sends_the_batch_records_its_provider_id_and_starts_it(world: World) -> None:
    batch_id = world.create(chat_lines(["a", "b"]))
    world.submission.submit(batch_id)
    batch = world.db.batches[batch_id]
    assert batch.status == "in_progress" and batch.provider_refs == {"batch_id": f"prov_{batch_id}"}
    assert batch.rejected == 0 and world.db.claims[f"prov_{batch_id}"] == batch_id
    (run,) = world.provider.runs.values()
    assert [line.custom_id for line in run.lines] == ["a", "b"]
    assert [(d["previous_status"], d["status"]) for d in world.bus.of("Batch Status Changed")] == [
        (None, "validating"),
        ("validating", "in_progress"),
    ]


def test_a_duplicate_delivery_submits_nothing_more(world: World) -> None:
    batch_id = world.create(chat_lines(["a"]))
    world.submission.submit(batch_id)
    world.submission.submit(batch_id)
    assert world.provider.submits == 1 and len(world.provider.runs) == 1


def test_a_request_the_provider_cannot_take_is_set_aside_and_the_rest_is_sent(world: World) -> None:
    content = chat_lines(["ok-1", "ok-2"], "claude-sonnet-4-5") + chat_lines(
        ["speech"], "claude-sonnet-4-5", messages=[{"role": "user", "content": AUDIO}]
    )
    batch_id = world.create(content)
    world.submission.submit(batch_id)
    batch = world.db.batches[batch_id]
    assert batch.status == "in_progress" and batch.rejected == 1
    (run,) = world.provider.runs.values()
    assert [line.custom_id for line in run.lines] == ["ok-1", "ok-2"]


def test_a_batch_whose_every_request_is_refused_completes_with_each_one_failed_alone(world: World) -> None:
    batch_id = world.create(
        chat_lines(["s1", "s2"], "claude-sonnet-4-5", messages=[{"role": "user", "content": AUDIO}])
    )
    world.submission.submit(batch_id)
    assert world.provider.submits == 0
    world.deliver_ended()
    done = world.db.batches[batch_id]
    assert done.status == "completed" and done.request_counts.failed == 2 and done.error_file_id is not None
    errors = world.blobs.objects[f"files/{done.error_file_id}"].decode()
    assert errors.count('"code":"invalid_request"') == 2 and "input_audio" in errors


def test_a_busy_provider_keeps_the_batch_validating_and_waiting_with_backoff(world: World) -> None:
    world.provider.fail_submit = ProviderBusy("token_limit_exceeded: the enqueued-token quota is full", retry_after=60)
    batch_id = world.create(chat_lines(["a"]))
    world.submission.submit(batch_id)
    first = world.db.batches[batch_id]
    assert first.status == "validating" and first.retry_at == int(world.clock()) + 60 and not first.errors
    # the poller does not re-drive it before it asked, then does; the wait doubles
    assert world.poller.poll(first, now=first.retry_at - 1) == "waiting"
    world.clock.advance(60)
    assert world.poller.poll(world.db.batches[batch_id], now=int(world.clock())) == "redriven"
    world.submission.submit(batch_id)
    assert world.db.batches[batch_id].retry_at == int(world.clock()) + 120
    # and never fails for it: once the provider takes it, it runs
    world.provider.fail_submit = None
    world.clock.advance(120)
    world.submission.submit(batch_id)
    assert world.db.batches[batch_id].status == "in_progress"


def test_a_busy_deployment_hands_the_batch_to_another_deployment_of_its_model(world: World) -> None:
    world.provider.fail_submit = ProviderBusy("queue full")
    batch_id = world.create(chat_lines(["a"], "two-ways"))
    placed = world.db.batches[batch_id].deployment
    world.submission.submit(batch_id)
    batch = world.db.batches[batch_id]
    assert batch.deployment != placed and batch.tried_deployments == (placed,)


def test_a_permanent_refusal_ends_the_batch_failed_with_the_providers_reason(world: World) -> None:
    world.provider.fail_submit = ProviderError("invalid model", retryable=False, code="model_not_found")
    batch_id = world.create(chat_lines(["a"]))
    world.submission.submit(batch_id)
    world.deliver_ended()
    batch = world.db.batches[batch_id]
    assert batch.status == "failed" and batch.errors[0].code == "model_not_found"
    assert world.key_store.spend("master") == []


def test_a_transient_fault_is_raised_for_a_retry_and_frees_the_lease(world: World) -> None:
    world.provider.fail_submit = ProviderError("503", retryable=True)
    batch_id = world.create(chat_lines(["a"]))
    with pytest.raises(ProviderError):
        world.submission.submit(batch_id)
    batch = world.db.batches[batch_id]
    assert batch.status == "validating" and batch.submit_lease_until == 0
    world.provider.fail_submit = None
    world.submission.submit(batch_id)
    assert world.db.batches[batch_id].status == "in_progress"


def test_a_cancel_during_submission_reaches_the_provider_at_once_and_the_batch_ends_cancelled(world: World) -> None:
    from shared.auth import MASTER

    batch_id = world.create(chat_lines(["a", "b"]))
    original = world.provider.submit

    def submit_then_cancelled(request: object, journal: object) -> None:
        original(request, journal)  # type: ignore[arg-type]
        world.batches.cancel(MASTER, batch_id)

    world.provider.submit = submit_then_cancelled  # type: ignore[method-assign]
    world.submission.submit(batch_id)

    # Then the submitter cancels the provider batch it made (it waited for the poller's next tick, in which a
    # fast provider could run the whole batch)
    batch = world.db.batches[batch_id]
    assert batch.status == "cancelling" and batch.cancel_sent
    assert next(iter(world.provider.runs.values())).cancelled

    # And when the provider had finished every request anyway, the batch still ends cancelled, as OpenAI's
    # do once cancelling (it ended completed: cancelling_at set, in_progress_at never), its results kept
    world.provider.finish("completed")
    world.poller.tick(Deadline.after(30))
    world.deliver_ended()
    done = world.db.batches[batch_id]
    assert done.status == "cancelled" and done.cancelled_at and done.completed_at is None
    assert done.request_counts == Counts(total=2, completed=2, failed=0) and done.cost is not None


def test_a_cancel_the_provider_fails_during_submission_is_left_to_the_poller(world: World) -> None:
    from shared.auth import MASTER

    batch_id = world.create(chat_lines(["a"]))
    original_submit, original_cancel = world.provider.submit, world.provider.cancel

    def submit_then_cancelled(request: object, journal: object) -> None:
        original_submit(request, journal)  # type: ignore[arg-type]
        world.batches.cancel(MASTER, batch_id)

    def provider_down(refs: object) -> None:
        raise ProviderError("cancel failed", retryable=True)

    world.provider.submit = submit_then_cancelled  # type: ignore[method-assign]
    world.provider.cancel = provider_down  # type: ignore[method-assign]

    # When the provider fails the submitter's cancel, the submission still returns, the cancel not marked sent
    world.submission.submit(batch_id)
    batch = world.db.batches[batch_id]
    assert batch.status == "cancelling" and not batch.cancel_sent

    # Then the poller's tick sends it once the provider answers
    world.provider.cancel = original_cancel  # type: ignore[method-assign]
    world.poller.tick(Deadline.after(30))
    assert world.db.batches[batch_id].cancel_sent and next(iter(world.provider.runs.values())).cancelled
