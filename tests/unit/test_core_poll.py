"""Polling over the in-memory ports: progress, ends, re-drives, the 24-hour window, isolation, deadlines."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

import pytest

from shared.auth import MASTER
from shared.deadline import Deadline, remaining
from shared.errors import ProviderBusy, ProviderError, StaleState, StorageError
from shared.polling import EXPIRY_GIVE_UP_SECONDS, EXPIRY_GRACE_SECONDS
from shared.providers.base import ProviderStatus, ResultLine
from shared.records import Counts, ErrorEntry
from shared.storage.batch_store import shard_of, work_ranges
from shared.storage.ports import EVERYTHING, WorkItem, WorkRange
from tests.unit.conftest import ScriptedProvider, World, chat_lines, ok_line


def running(world: World, custom_ids: list[str]) -> str:
    batch_id = world.create(chat_lines(custom_ids))
    world.submission.submit(batch_id)
    return batch_id


@dataclass(frozen=True, slots=True)
class SpentByRetrieves(Deadline):
    """A deadline that only the provider's retrieves bring closer, a second each: a tick runs out of time after
    a known number of them, with no test waiting on a clock."""

    provider: ScriptedProvider

    def remaining(self) -> float:
        return self.at - self.provider.refreshes


def test_progress_is_written_only_when_it_changes(world: World) -> None:
    batch_id = running(world, ["a", "b"])
    run = world.provider.runs[f"prov_{batch_id}"]
    run.results = [ok_line("a")]
    assert world.poller.poll(world.db.batches[batch_id], now=int(world.clock())) == "progressed"
    assert world.db.batches[batch_id].request_counts.completed == 1
    writes = world.db.writes
    assert world.poller.poll(world.db.batches[batch_id], now=int(world.clock())) == "unchanged"
    assert world.db.writes == writes


def test_a_stale_poller_never_moves_progress_backwards(world: World) -> None:
    batch_id = running(world, ["a", "b", "c", "d"])
    now = int(world.clock())
    seen = world.db.batches[batch_id]  # one poller reads the batch and a list page, then stalls
    stale_page = {f"prov_{batch_id}": ProviderStatus("in_progress", Counts(total=4, completed=1))}
    world.provider.runs[f"prov_{batch_id}"].results = [ok_line("a"), ok_line("b"), ok_line("c")]
    assert world.poller.poll(world.db.batches[batch_id], now=now + 30) == "progressed"  # another, fresher
    assert world.poller.poll(seen, now=now + 31, listed=stale_page) == "raced"  # the stalled one resumes
    assert world.db.batches[batch_id].request_counts == Counts(total=4, completed=3, failed=0)


def test_two_pollers_at_once_end_a_finished_run_once(world: World) -> None:
    batch_id = running(world, ["a"])
    world.provider.finish()
    seen = world.db.batches[batch_id]
    outcomes: list[str] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(world.poller.poll(seen, now=int(world.clock()))))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ended", "raced"]
    assert [d["batch_id"] for d in world.bus.of("Batch Ended")] == [batch_id]


def test_an_unreadable_item_is_skipped_counted_and_stops_no_other_batch(world: World) -> None:
    batch_ids = [running(world, [f"r{i}"]) for i in range(5)]
    world.db.broken[batch_ids[0]] = ("master", "metadata: keys must be 1-64 characters")
    world.provider.finish()
    outcomes = world.poller.tick(Deadline.after(30))
    assert outcomes["unreadable"] == 1 and outcomes["ended"] == 4


def test_one_failing_provider_call_stops_only_its_batch(world: World) -> None:
    batch_id = running(world, ["a"])
    world.provider.fail_refresh = ProviderError("503", retryable=True)
    assert world.poller.tick(Deadline.after(30))["provider_error"] == 1
    world.provider.fail_refresh = None
    world.provider.finish()
    assert world.poller.tick(Deadline.after(30))["ended"] == 1
    assert world.db.batches[batch_id].finalize_to == "completed"


def test_near_its_deadline_a_tick_starts_no_new_batch_and_leaves_the_rest_to_the_next(world: World) -> None:
    for i in range(3):
        running(world, [f"r{i}"])
    world.provider.finish()
    assert world.poller.tick(Deadline.after(1))["deferred"] == 3
    assert world.bus.of("Batch Ended") == []
    assert world.poller.tick(Deadline.after(30))["ended"] == 3


def test_past_its_window_a_batch_is_cancelled_at_its_provider_and_ends_expired_with_what_finished(
    world: World,
) -> None:
    batch_id = running(world, ["a", "b", "c"])
    run = world.provider.runs[f"prov_{batch_id}"]
    run.results = [ok_line("a")]
    world.clock.advance(24 * 3600 + EXPIRY_GRACE_SECONDS)
    world.poller.tick(Deadline.after(30))
    assert run.cancelled and world.db.batches[batch_id].expiring
    run.state = "cancelled"
    world.poller.tick(Deadline.after(30))
    world.deliver_ended()
    done = world.db.batches[batch_id]
    assert done.status == "expired" and done.request_counts.completed == 1 and done.request_counts.failed == 2
    errors = world.blobs.objects[f"files/{done.error_file_id}"].decode()
    assert errors.count('"code":"batch_expired"') == 2
    assert done.cost is not None and done.cost.total > 0


def test_a_provider_that_never_stops_an_expired_batch_is_given_up_on(world: World) -> None:
    batch_id = running(world, ["a"])
    world.clock.advance(24 * 3600 + EXPIRY_GRACE_SECONDS)
    world.poller.tick(Deadline.after(30))
    world.clock.advance(EXPIRY_GIVE_UP_SECONDS)
    world.poller.tick(Deadline.after(30))
    assert world.db.batches[batch_id].finalize_to == "expired"


@pytest.mark.parametrize(
    "error",
    [
        ProviderError("retrieve batch: HTTP 404: No batch found", retryable=False, code="not_found"),
        ProviderError("retrieve batch: HTTP 401: Incorrect API key provided", retryable=False),
    ],
)
def test_an_expired_batch_its_provider_no_longer_answers_for_ends_expired_once_given_up_on(
    world: World, error: ProviderError
) -> None:
    key = world.key(max_budget=Decimal(100))
    batch_id = world.create(chat_lines(["a", "b"]), key)
    world.submission.submit(batch_id)
    world.provider.runs[f"prov_{batch_id}"].results = []  # nothing finished
    world.provider.fail_refresh = error
    world.clock.advance(24 * 3600 + EXPIRY_GRACE_SECONDS)
    assert world.poller.tick(Deadline.after(30))["provider_error"] == 1
    assert world.db.batches[batch_id].expiring and world.db.batches[batch_id].finalize_to is None
    world.clock.advance(EXPIRY_GIVE_UP_SECONDS)
    assert world.poller.tick(Deadline.after(30))["ended"] == 1
    world.poller.tick(Deadline.after(30))
    world.deliver_ended()
    done = world.db.batches[batch_id]
    assert done.status == "expired" and len(world.bus.of("Batch Ended")) == 1
    assert world.blobs.objects[f"files/{done.error_file_id}"].decode().count("batch_expired") == 2
    assert world.key_record(key).reserved == 0


def test_an_expired_batch_whose_provider_batch_is_gone_ends_expired_without_asking_for_its_results(
    world: World,
) -> None:
    # Given an expired batch whose provider batch is gone: retrieving it, and its results, answer 404
    batch_id = running(world, ["a", "b"])
    gone = ProviderError("retrieve batch: HTTP 404: No batch found", retryable=False, code="not_found")

    def no_results(refs: Mapping[str, str], custom_ids: Sequence[str]) -> Iterator[ResultLine]:
        raise gone

    world.provider.results = no_results  # type: ignore[method-assign]
    world.provider.fail_refresh = gone
    world.clock.advance(24 * 3600 + EXPIRY_GRACE_SECONDS)
    world.poller.tick(Deadline.after(30))
    world.clock.advance(EXPIRY_GIVE_UP_SECONDS)

    # When the poller gives up on it and its completion runs once
    assert world.poller.tick(Deadline.after(30))["ended"] == 1
    world.deliver_ended()

    # Then it is expired (not failed hours later, after the completion's re-drives), every request batch_expired
    done = world.db.batches[batch_id]
    assert done.status == "expired" and done.errors[-1].code == "results_unavailable"
    assert world.blobs.objects[f"files/{done.error_file_id}"].decode().count("batch_expired") == 2


def test_an_expired_batch_whose_provider_stays_down_past_the_give_up_ends_expired(world: World) -> None:
    batch_id = running(world, ["a"])
    outage = ProviderError("503", retryable=True)

    def down(refs: Mapping[str, str]) -> None:
        raise outage

    world.provider.cancel = down  # type: ignore[method-assign]
    world.provider.fail_refresh = outage
    world.clock.advance(24 * 3600 + EXPIRY_GRACE_SECONDS)
    assert world.poller.tick(Deadline.after(30))["provider_error"] == 1
    world.clock.advance(EXPIRY_GIVE_UP_SECONDS)
    assert world.poller.tick(Deadline.after(30))["ended"] == 1
    assert world.db.batches[batch_id].finalize_to == "expired"


def test_a_deployment_with_more_batches_than_a_tick_retrieves_has_each_one_polled_within_a_few_ticks(
    world: World,
) -> None:
    # Given 6 running batches that its list pages do not show, and ticks with time for 3 retrieves each
    world.settings = world.settings.model_copy(update={"poll_concurrency": 1})
    batch_ids = [running(world, [f"r{i}"]) for i in range(6)]
    world.provider.unlisted = {f"prov_{b}" for b in batch_ids}
    retrieved: set[str] = set()
    retrieve = world.provider.refresh

    def counted(refs: Mapping[str, str]) -> ProviderStatus:
        retrieved.add(refs["batch_id"])
        return retrieve(refs)

    world.provider.refresh = counted  # type: ignore[method-assign]
    # When ticks run (a batch each tick leaves is never polled if every tick leaves the same ones)
    for _ in range(20):
        # 4 s: a tick starts nothing in its last 2, so it has time for 3 retrieves
        outcomes = world.poller.tick(SpentByRetrieves(world.provider.refreshes + 4, world.provider))
        assert outcomes["deferred"] == 3
        if len(retrieved) == len(batch_ids):
            break
    # Then each batch was retrieved
    assert retrieved == {f"prov_{b}" for b in batch_ids}


def test_a_batch_kept_waiting_by_a_busy_provider_past_its_window_ends_expired(world: World) -> None:
    world.provider.fail_submit = ProviderBusy("queue full", retry_after=3600)
    batch_id = world.create(chat_lines(["a", "b"]))
    world.submission.submit(batch_id)
    world.clock.advance(24 * 3600 + EXPIRY_GRACE_SECONDS)
    world.poller.tick(Deadline.after(30))
    world.deliver_ended()
    done = world.db.batches[batch_id]
    assert done.status == "expired" and done.request_counts.failed == 2
    assert world.blobs.objects[f"files/{done.error_file_id}"].decode().count("batch_expired") == 2


def test_a_lost_submission_is_redriven_at_doubling_intervals_then_given_up_after_the_limit(world: World) -> None:
    batch_id = world.create(chat_lines(["a"]))
    stuck = world.settings.submit_stuck_seconds
    for n in range(world.settings.max_redrives):
        world.clock.advance(stuck * 2**n - 1)
        assert world.poller.poll(world.db.batches[batch_id], now=int(world.clock())) == "waiting"
        world.clock.advance(1)
        assert world.poller.poll(world.db.batches[batch_id], now=int(world.clock())) == "redriven"
    world.clock.advance(stuck * 2**world.settings.max_redrives)
    assert world.poller.poll(world.db.batches[batch_id], now=int(world.clock())) == "ended"
    world.deliver_ended()
    failed = world.db.batches[batch_id]
    assert failed.status == "failed" and "still waiting after 3 re-drives" in failed.errors[-1].message


def test_a_submission_queued_behind_a_backlog_is_waited_for_not_failed(world: World) -> None:
    # its "Batch Created" event waits behind others for the submitter: each tick finds it stuck, re-drives it
    # (one more event on the backlog), and once failed it after max_redrives ticks although it never ran
    batch_id = world.create(chat_lines(["a"]))
    for _ in range(3 * world.settings.max_redrives):
        world.clock.advance(world.settings.submit_stuck_seconds + 1)
        world.poller.poll(world.db.batches[batch_id], now=int(world.clock()))
    assert world.db.batches[batch_id].status == "validating" and world.db.batches[batch_id].finalize_to is None
    world.submission.submit(batch_id)  # the backlog reaches it
    assert world.db.batches[batch_id].status == "in_progress"


def test_a_cancel_that_arrives_after_the_run_ended_is_refused(world: World) -> None:
    from shared.errors import InvalidRequest

    batch_id = running(world, ["a"])
    world.provider.finish()
    world.poller.tick(Deadline.after(30))
    with pytest.raises(InvalidRequest):
        world.batches.cancel(MASTER, batch_id)
    world.deliver_ended()
    assert world.db.batches[batch_id].status == "completed"


def test_a_cleanup_that_failed_at_completion_is_retried_by_the_next_tick(world: World) -> None:
    batch_id = running(world, ["a"])
    world.provider.finish()
    world.poller.tick(Deadline.after(30))
    world.provider.fail_cleanup = ProviderError("503", retryable=True)
    world.deliver_ended()
    assert world.db.work[batch_id] == "CLEANUP" and world.provider.cleaned == []
    world.provider.fail_cleanup = None
    assert world.poller.tick(Deadline.after(30))["cleaned"] == 1
    assert batch_id not in world.db.work and world.provider.cleaned == [f"prov_{batch_id}"]


def test_expired_files_are_swept_objects_and_items_but_never_a_running_batchs_input(world: World) -> None:
    batch_id = running(world, ["a"])
    input_id = world.db.batches[batch_id].input_file_id
    loose = world.files.store("master", purpose="user_data", filename="x", chunks=[b"x"], expires_after=3600)
    world.clock.advance(31 * 24 * 3600)
    world.poller.files.sweep()
    assert loose.id not in world.db.files and f"files/{loose.id}" not in world.blobs.objects
    assert input_id in world.db.files and f"files/{input_id}" in world.blobs.objects


def test_a_deployments_batches_are_read_from_its_list_pages_and_only_the_unlisted_retrieved(world: World) -> None:
    batch_ids = [running(world, [f"r{i}"]) for i in range(10)]
    world.provider.unlisted = {f"prov_{batch_ids[0]}"}
    world.provider.finish()
    world.provider.refreshes = 0
    outcomes = world.poller.tick(Deadline.after(30))
    assert outcomes["ended"] == 10
    assert world.provider.lists == 1 and world.provider.refreshes == 1


def test_a_failing_list_falls_back_to_retrieving_each_batch(world: World) -> None:
    for i in range(4):
        running(world, [f"r{i}"])
    world.provider.finish()

    def broken(refs: object) -> dict[str, object]:
        raise ProviderError("list: 500", retryable=True)

    world.provider.list_statuses = broken  # type: ignore[assignment,method-assign]
    assert world.poller.tick(Deadline.after(30))["ended"] == 4


def test_a_list_that_takes_all_the_time_it_is_given_still_leaves_time_to_retrieve_each_batch(world: World) -> None:
    for i in range(4):
        running(world, [f"r{i}"])
    world.provider.finish()

    def throttled(refs: object) -> dict[str, object]:
        # as a 429 with a long Retry-After, or a page that never comes, does: it waits out its deadline
        time.sleep(max(remaining() or 0.0, 0.0))
        raise ProviderError("list batches: HTTP 429: Rate limit reached", retryable=True)

    world.provider.list_statuses = throttled  # type: ignore[assignment,method-assign]
    outcomes = world.poller.tick(Deadline.after(6))
    assert outcomes["ended"] == 4 and outcomes["deferred"] == 0


def test_a_list_answer_that_breaks_its_parsing_falls_back_to_retrieving_each_batch(world: World) -> None:
    for i in range(4):
        running(world, [f"r{i}"])
    world.provider.finish()
    world.provider.refreshes = 0

    def odd(refs: object) -> dict[str, object]:
        raise TypeError("'int' object is not iterable")

    world.provider.list_statuses = odd  # type: ignore[assignment,method-assign]
    assert world.poller.tick(Deadline.after(30))["ended"] == 4
    assert world.provider.refreshes == 4


def test_more_work_than_one_invocation_polls_is_handed_out_one_deployment_per_message(world: World) -> None:
    # each invocation holds one deployment's batches, so it reads that provider's list pages once: handed out
    # by batch id, each of 8 invocations read every deployment's pages for an eighth of its batches
    world.settings = world.settings.model_copy(update={"fanout_threshold": 4})
    batch_ids = [running(world, [f"r{i}"]) for i in range(40)]
    claude = [world.create(chat_lines([f"c{i}"], model="claude-sonnet-4-5")) for i in range(3)]
    for batch_id in claude:
        world.submission.submit(batch_id)
    world.provider.finish()
    world.provider.refreshes = 0
    scheduled = world.poller.tick(Deadline.after(30))
    assert scheduled["fanned_out"] == len(world.routing.models) == len(world.queue.sent)
    assert scheduled["ended"] == 0
    for part in world.queue.sent:
        world.poller.tick(Deadline.after(30), part)
    assert all(world.db.batches[b].finalize_to == "completed" for b in [*batch_ids, *claude])
    assert world.provider.lists == 2 and world.provider.refreshes == 0


def test_a_deployment_with_more_batches_than_one_invocation_polls_is_split_in_work_key_order(world: World) -> None:
    # a deployment's batches were one invocation's work however many there were: a team with one deployment
    # and 50,000 running batches had them all in one invocation, which cannot poll them in its time
    world.settings = world.settings.model_copy(update={"fanout_threshold": 4, "split_threshold": 10})
    batch_ids = [running(world, [f"r{i}"]) for i in range(25)]
    world.provider.finish()
    asked: list[list[str]] = []  # the batches each invocation read list pages for
    listing = world.provider.list_statuses

    def recorded(refs: Sequence[Mapping[str, str]]) -> dict[str, ProviderStatus]:
        asked.append(sorted(r["batch_id"].removeprefix("prov_") for r in refs))
        return listing(refs)

    world.provider.list_statuses = recorded  # type: ignore[method-assign]
    assert world.poller.tick(Deadline.after(30))["fanned_out"] == len(world.routing.models)
    handed_on = 0
    while world.queue.sent:
        part = world.queue.sent.pop(0)
        before = len(world.queue.sent)
        outcomes = world.poller.tick(Deadline.after(30), part)
        assert outcomes["ended"] <= 10
        handed_on += outcomes["handed_on"]
        assert len(world.queue.sent) - before == outcomes["handed_on"]
    assert all(world.db.batches[b].finalize_to == "completed" for b in batch_ids)
    # three invocations, each a contiguous slice of the deployment's batches, as they lie in its list pages
    ordered = sorted(batch_ids)
    assert handed_on == 2 and asked == [ordered[:10], ordered[10:20], ordered[20:]]
    assert world.provider.refreshes == 0


def test_the_handed_out_ranges_reach_a_removed_deployments_batches_too(world: World) -> None:
    world.settings = world.settings.model_copy(update={"fanout_threshold": 4})
    batch_ids = [running(world, [f"r{i}"]) for i in range(10)]
    gone = batch_ids[0]
    world.db.batches[gone] = world.db.batches[gone].model_copy(update={"deployment": "removed-since"})
    world.provider.finish()
    assert world.poller.tick(Deadline.after(30))["fanned_out"] == len(world.routing.models)
    for part in world.queue.sent:
        world.poller.tick(Deadline.after(30), part)
    assert world.db.batches[gone].finalize_to == "failed"
    assert world.db.batches[gone].errors[0].code == "deployment_removed"
    assert all(world.db.batches[b].finalize_to == "completed" for b in batch_ids[1:])


@pytest.mark.parametrize(
    "deployments", [[], ["one"], ["b", "a", "c"], ["a", "a-b", "a.b", "a_b", "a0"], ["openai-0f3a", "openai-0f3a9"]]
)
def test_work_ranges_hold_every_work_key_exactly_once(deployments: list[str]) -> None:
    from shared.storage.batch_store import work_key

    ranges = work_ranges(deployments)
    assert len(ranges) == max(1, len(set(deployments)))
    keys = [work_key(d, b) for d in [*deployments, "", "removed", "~zz", "!a"] for b in ("batch_0", "batch_z")]
    keys += ["batch_legacy", "", "#"]  # written before work keys, and the extremes
    for key in keys:
        assert sum(r.holds(key) for r in ranges) == 1, key
    for deployment in set(deployments):  # each deployment's batches in one range (keys never hold a "#")
        assert len({next(i for i, r in enumerate(ranges) if r.holds(work_key(deployment, b))) for b in "0az"}) == 1


def test_work_outside_the_first_shard_is_handed_out_too(world: World) -> None:
    # the scheduled run once judged the work by shard 0 alone: 12 batches none of which hashed there were
    # polled by one invocation whatever their number
    world.settings = world.settings.model_copy(update={"fanout_threshold": 4})
    batch_ids = [running(world, [f"r{i}"]) for i in range(40)]
    for batch_id in batch_ids:
        if world.db.work[batch_id] == "WORK#0":
            del world.db.work[batch_id]
    assert sum(1 for where in world.db.work.values() if where.startswith("WORK#")) > 4
    assert world.poller.tick(Deadline.after(30))["fanned_out"] == len(world.routing.models)


def test_work_within_the_threshold_is_polled_by_the_scheduled_run_itself(world: World) -> None:
    world.settings = world.settings.model_copy(update={"fanout_threshold": 4})
    batch_ids = [running(world, [f"r{i}"]) for i in range(4)]
    world.provider.finish()
    scheduled = world.poller.tick(Deadline.after(30))
    assert "fanned_out" not in scheduled and world.queue.sent == []
    assert all(world.db.batches[b].finalize_to == "completed" for b in batch_ids)


def test_a_shard_that_cannot_be_read_stops_no_other_shard(world: World) -> None:
    batch_ids = [running(world, [f"r{i}"]) for i in range(20)]
    world.provider.finish()
    broken_shard = shard_of(batch_ids[0])
    store = world.batch_store
    real_work = store.work

    def work(shard: int, within: WorkRange = EVERYTHING) -> Iterator[WorkItem]:
        if shard == broken_shard:
            raise StorageError("throttled")
        return real_work(shard, within)

    store.work = work  # type: ignore[method-assign]
    poller = replace(world.poller, batches=store)
    for part in [None, *work_ranges(d.key for d in world.routing.models)]:  # scheduled, and handed out
        assert poller.tick(Deadline.after(30), part)["shards_unread"] == 1
    ended = {b for b in batch_ids if world.db.batches[b].finalize_to == "completed"}
    assert ended == {b for b in batch_ids if shard_of(b) != broken_shard} and len(ended) < len(batch_ids)
    store.work = real_work  # type: ignore[method-assign]
    world.poller.tick(Deadline.after(30))  # the shard is back: the next tick polls it
    assert all(world.db.batches[b].finalize_to == "completed" for b in batch_ids)


def busy(retry_after: float = 60) -> ProviderStatus:
    """A run its provider failed in validation only because it was busy (Azure's full enqueued-token quota)."""
    full = ErrorEntry(code="token_limit_exceeded", message="The number of enqueued tokens has surpassed the limit.")
    return ProviderStatus("failed", Counts(), (full,), retry_after=retry_after)


def test_a_run_failed_as_busy_is_forgotten_and_submitted_again_after_a_doubling_wait(world: World) -> None:
    batch_id = running(world, ["a", "b"])
    provider_batch = f"prov_{batch_id}"
    now = int(world.clock())

    assert world.poller.poll(world.db.batches[batch_id], now=now, listed={provider_batch: busy()}) == "requeued"
    waiting = world.db.batches[batch_id]
    assert waiting.status == "in_progress" and waiting.provider_refs == {} and waiting.retry_at == now + 60
    assert world.poller.poll(waiting, now=now + 59) == "waiting"
    assert world.poller.poll(waiting, now=now + 60) == "redriven"
    assert [d["batch_id"] for d in world.bus.of("Batch Created")][-1] == batch_id

    world.clock.advance(60)
    world.submission.submit(batch_id)
    again = world.db.batches[batch_id]
    assert world.provider.submits == 2 and again.provider_refs == {"batch_id": provider_batch}
    assert (again.status, again.submit_lease_until, again.retry_at) == ("in_progress", 0, 0)

    # failed as busy once more: the wait doubles
    later = int(world.clock())
    assert world.poller.poll(again, now=later, listed={provider_batch: busy()}) == "requeued"
    assert world.db.batches[batch_id].retry_at == later + 120
    world.clock.advance(120)
    world.poller.poll(world.db.batches[batch_id], now=int(world.clock()))
    world.submission.submit(batch_id)
    world.provider.finish()
    world.poller.poll(world.db.batches[batch_id], now=int(world.clock()))
    world.deliver_ended()
    done = world.db.batches[batch_id]
    assert done.status == "completed" and done.request_counts == Counts(total=2, completed=2, failed=0)


def test_a_run_failed_as_busy_ends_as_asked_when_the_batch_was_to_stop_anyway(world: World) -> None:
    cancelled, expiring = running(world, ["a"]), running(world, ["b"])
    listed = {f"prov_{b}": busy() for b in (cancelled, expiring)}
    world.batches.cancel(MASTER, cancelled)
    assert world.poller.poll(world.db.batches[cancelled], now=int(world.clock()), listed=listed) == "ended"
    world.clock.advance(24 * 3600 + EXPIRY_GRACE_SECONDS)
    assert world.poller.poll(world.db.batches[expiring], now=int(world.clock()), listed=listed) == "ended"
    world.deliver_ended()
    assert (world.db.batches[cancelled].status, world.db.batches[expiring].status) == ("cancelled", "expired")
    assert world.provider.submits == 2


def test_two_submitters_of_a_run_failed_as_busy_create_one_provider_batch(world: World) -> None:
    batch_id = running(world, ["a"])
    now = int(world.clock())
    world.poller.poll(world.db.batches[batch_id], now=now, listed={f"prov_{batch_id}": busy()})
    world.clock.advance(60)
    seen = world.db.batches[batch_id]
    world.submission.submit(batch_id)
    assert world.provider.submits == 2
    with pytest.raises(StaleState):  # a second submitter that read the batch before the first took it
        world.batch_store.rerun(seen, seen.provider_refs, lease_until=now + 999, retry_at=seen.retry_at, now=now)
    world.submission.submit(batch_id)  # a duplicate event
    assert world.provider.submits == 2


def test_a_run_failed_as_busy_and_refused_again_at_create_waits_longer(world: World) -> None:
    batch_id = running(world, ["a"])
    world.poller.poll(world.db.batches[batch_id], now=int(world.clock()), listed={f"prov_{batch_id}": busy()})
    world.clock.advance(60)
    world.provider.fail_submit = ProviderBusy("queue full", retry_after=60)
    world.submission.submit(batch_id)
    waiting = world.db.batches[batch_id]
    assert (waiting.status, waiting.submit_lease_until) == ("in_progress", 0)
    assert waiting.retry_at == int(world.clock()) + 120 and "batch_id" not in waiting.provider_refs
