"""Polling: move every unfinished batch forward against its provider, on a schedule, within a deadline.

Batches come from the shards of the work index, never a Scan; past `fanout_threshold` the scheduled run
hands the work out through a queue, one deployment's batches to each invocation, and an invocation handed
more than `split_threshold` polls that many (the first in work-key order: a slice of the deployment's
batches by creation, as they lie in its provider's list pages) and hands the rest of its range on. Each
batch is polled on its own, several at a time: a provider's outage, a hanging provider, a shard or an item
that cannot be read stops only itself. Each provider call is bounded by what the invocation has left
(shared/deadline.py); near the end no new batch is started and the rest waits for the next tick (which
takes them in a new order, so that no batch is left every time); a list call takes at most a share of it. Each
status or count change is a conditional write; a provider that reports a terminal state hands the batch
to the completion step. batchgw keeps the 24-hour window itself: past `expires_at` a batch is cancelled at
its provider and ends `expired` with what finished. A run its provider failed only because it was busy (no
request run) is forgotten, and the batch, still `in_progress`, is submitted again after a wait that doubles
each time, within its window. Batches whose submission or completion was lost are re-driven. Each tick
also retries the removal of provider objects that failed at completion and sweeps expired files.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter

from shared.deadline import Deadline, within
from shared.errors import ProviderError, PublishFailed, StaleState, StorageError
from shared.files import Files
from shared.lifecycle import Outcome
from shared.providers.base import RUN_REFS, ListsBatches, ProviderStatus
from shared.providers.registry import ProviderSource
from shared.records import BatchRecord, Counts, ErrorEntry
from shared.routing import RoutingConfig
from shared.runs import Runs
from shared.settings import Settings
from shared.storage.batch_store import WORK_SHARDS, work_ranges
from shared.storage.bus import BATCH_CREATED
from shared.storage.ports import EVERYTHING, BatchStore, Broken, Bus, WorkItem, WorkQueue, WorkRange
from shared.submission import busy_wait
from shared.threads import Pool
from shared.transitions import end_run, publish_ended

logger = logging.getLogger(__name__)

# seconds past `expires_at` before batchgw cancels a run, and past that before it stops waiting for the
# provider to confirm and ends the batch with what it has
EXPIRY_GRACE_SECONDS = 300
EXPIRY_GIVE_UP_SECONDS = 3600
# how long the poller keeps retrying the removal of a finished batch's provider objects
CLEANUP_GIVE_UP_SECONDS = 7 * 24 * 3600
# what a tick leaves of its deadline unstarted: one provider call's worth, for the calls under way
_STOP_STARTING_SECONDS = 2.0
# provider calls in a row that may fail on one deployment before the tick leaves it alone
BREAKER_FAILURES = 3
# running batches on one deployment from which its list pages are read rather than each batch retrieved
LIST_FROM = 3
# the most of what a tick has left that a deployment's list pages may take (a throttled or hanging list
# would take all of it): past it, each batch is retrieved with the rest
LIST_SHARE = 0.5


def stuck_after(base_seconds: int, redrives: int) -> int:
    """How long a batch waits on a step before its next re-drive: doubling with each one, so that a step
    queued behind a backlog (a throttled function, a burst of creates) is waited for, not given up on."""
    return base_seconds << min(redrives, 8)


class _Breaker:
    """Counts a deployment's provider failures in a row within one tick; open once there are enough."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._failures = 0
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        return self._failures >= self._limit

    def failed(self) -> None:
        with self._lock:
            self._failures += 1

    def succeeded(self) -> None:
        with self._lock:
            self._failures = 0


@dataclass(frozen=True, slots=True)
class Poller:
    batches: BatchStore
    files: Files
    bus: Bus
    providers: ProviderSource
    routing: RoutingConfig
    settings: Settings
    queue: WorkQueue | None = None
    clock: Callable[[], float] = time.time

    @property
    def _runs(self) -> Runs:
        return Runs(self.batches, self.bus, self.clock)

    def tick(self, deadline: Deadline, part: WorkRange | None = None) -> Counter[str]:
        """One run over `part` of the work index, every shard of it. The scheduled run (`part` None) polls all
        of it itself, unless the work is more than one invocation polls in time: then it hands it out through
        the queue, one range per deployment, so that each invocation finds its batches in one provider's list
        pages; an invocation handed more than it polls in time hands the rest of its range on (`_handed`).
        The scheduled run also retries cleanups and sweeps expired files."""
        outcomes: Counter[str] = Counter()
        if part is not None:
            items = self._handed(part, outcomes)
        elif self.queue is not None:
            # read no further than it takes to know: past the threshold, the pages already read are dropped
            items = [batch for _, batch in islice(self._work(EVERYTHING, outcomes), self.settings.fanout_threshold + 1)]
            if len(items) > self.settings.fanout_threshold:
                ranges = work_ranges(d.key for d in self.routing.models)
                self.queue.send(ranges)
                outcomes["fanned_out"] = len(ranges)
                items = []
        else:
            items = [batch for _, batch in self._work(EVERYTHING, outcomes)]
        outcomes.update(self._poll_items(items, deadline))
        if part is None:
            with within(deadline):
                if not deadline.passed():
                    outcomes["cleaned"] += self._retry_cleanups(deadline)
                if not deadline.passed():
                    outcomes["files_swept"] += self.files.sweep()
        return outcomes

    def _handed(self, part: WorkRange, outcomes: Counter[str]) -> list[BatchRecord | Broken]:
        """The batches of a range handed out: past `split_threshold`, the first that many in work-key order,
        the rest of the range handed on through the queue before any is polled. The shards are read side by
        side, page by page, merged in work-key order, so only about as many as are kept are read."""
        merged = heapq.merge(*(self._shard(shard, part, outcomes) for shard in range(WORK_SHARDS)), key=itemgetter(0))
        if self.queue is None:
            return [batch for _, batch in merged]
        kept = list(islice(merged, self.settings.split_threshold + 1))
        if len(kept) > self.settings.split_threshold:
            first_left = kept.pop()
            self.queue.send([WorkRange(first_left.key, part.stop)])
            outcomes["handed_on"] += 1
        return [batch for _, batch in kept]

    def _work(self, part: WorkRange, outcomes: Counter[str]) -> Iterator[WorkItem]:
        """Each shard's batches in `part`, a shard after another."""
        for shard in range(WORK_SHARDS):
            yield from self._shard(shard, part, outcomes)

    def _shard(self, shard: int, part: WorkRange, outcomes: Counter[str]) -> Iterator[WorkItem]:
        """One shard's batches in `part`. A shard that cannot be read now (throttled) stops only itself: the
        others are polled and it waits for the next tick."""
        try:
            yield from self.batches.work(shard, part)
        except StorageError as exc:
            logger.error("a shard of the work index could not be read", extra={"shard": shard, "error": str(exc)})
            outcomes["shards_unread"] += 1

    def _poll_items(self, items: Iterable[BatchRecord | Broken], deadline: Deadline) -> Counter[str]:
        """Poll each deployment's batches on its own workers; skip (and count) what cannot be read."""
        outcomes: Counter[str] = Counter()
        by_deployment: dict[str, list[BatchRecord]] = defaultdict(list)
        for item in items:
            if isinstance(item, Broken):
                logger.error("a batch item cannot be read; skipped", extra={"key": item.key, "why": item.reason})
                outcomes["unreadable"] += 1
            else:
                by_deployment[item.deployment].append(item)
        if by_deployment:
            with Pool(max_workers=len(by_deployment), thread_name_prefix="poll") as pool:
                for counted in pool.map(lambda group: self._poll_group(group, deadline), by_deployment.values()):
                    outcomes.update(counted)
        return outcomes

    def _poll_group(self, batches: list[BatchRecord], deadline: Deadline) -> Counter[str]:
        """One deployment's batches, `poll_concurrency` at a time, their statuses read from the provider's list
        pages where it has them. A deployment whose calls keep failing (down, or hanging until the deadline
        cuts them) is left alone for the rest of the tick: it holds only its own workers."""
        listed = self._listed(batches, deadline)
        breaker = _Breaker(BREAKER_FAILURES)
        workers = min(self.settings.poll_concurrency, len(batches))
        # in a new order each tick: those a tick has no time for are not the same ones every tick
        shuffled = random.sample(batches, len(batches))
        with Pool(max_workers=workers, thread_name_prefix="poll-deployment") as pool:
            return Counter(pool.map(lambda batch: self._poll_isolated(batch, deadline, breaker, listed), shuffled))

    def _listed(self, batches: list[BatchRecord], deadline: Deadline) -> dict[str, ProviderStatus]:
        """The statuses of the group's running provider batches, from the provider's list pages; {} when it has
        none, or they fail or outlast their share of the time (each batch is then retrieved on its own)."""
        running = [b for b in batches if b.finalize_to is None and "batch_id" in b.provider_refs]
        # newest submitted first, as the provider's list pages are
        running.sort(key=lambda b: (b.in_progress_at or b.created_at, b.id), reverse=True)
        deployment = self.routing.deployment(batches[0].deployment)
        if len(running) < LIST_FROM or deployment is None:
            return {}
        provider = self.providers.get(deployment)
        if not isinstance(provider, ListsBatches):
            return {}
        try:
            with within(deadline.share(LIST_SHARE)):
                return provider.list_statuses([b.provider_refs for b in running])
        except ProviderError as exc:
            logger.warning("listing the provider's batches failed; retrieving each", extra={"error": exc.message})
        except Exception:
            logger.exception("listing the provider's batches failed; retrieving each")
        return {}

    def _poll_isolated(
        self, batch: BatchRecord, deadline: Deadline, breaker: _Breaker, listed: Mapping[str, ProviderStatus]
    ) -> str:
        if deadline.remaining() < _STOP_STARTING_SECONDS or breaker.open:
            return "deferred"
        try:
            with within(deadline):
                outcome = self.poll(batch, now=int(self.clock()), listed=listed)
        except ProviderError as exc:
            breaker.failed()
            logger.warning(
                "provider call failed; will retry on the next poll",
                extra={"batch_id": batch.id, "error": exc.message, "retryable": exc.retryable},
            )
            return "provider_error"
        except Exception:
            logger.exception("polling a batch failed", extra={"batch_id": batch.id})
            return "error"
        breaker.succeeded()
        return outcome

    def poll(self, batch: BatchRecord, *, now: int, listed: Mapping[str, ProviderStatus] | None = None) -> str:
        """Move one batch forward as far as its provider allows; returns what happened. `listed` holds statuses
        already read from the provider's list pages."""
        if batch.finalize_to is not None:
            return self._redrive_completion(batch, now)
        if batch.runs:  # a batch of several models: its runs are polled; it ends when they all have
            return self._runs.end_if_done(batch)
        past_window = now >= batch.expires_at + EXPIRY_GRACE_SECONDS
        if batch.status == "validating" and not past_window:
            return self._redrive_submission(batch, now)
        refs = batch.provider_refs
        if "batch_id" not in refs:
            # never reached its provider: wait out a submission under way, then end it
            if batch.submit_lease_until >= now:
                return "waiting"
            if past_window:
                return self._end(batch, "expired", now)
            if batch.status == "cancelling":
                return self._end(batch, "cancelled", now)
            return self._redrive_run(batch, now) if batch.retry_at else "waiting"
        return self._refresh(batch, now, past_window=past_window, listed=listed or {})

    def _refresh(self, batch: BatchRecord, now: int, *, past_window: bool, listed: Mapping[str, ProviderStatus]) -> str:
        """Cancel at the provider what must be cancelled, then take the provider's word on the run. Past the
        give-up time an expired batch ends `expired` whether or not the provider stopped it or still answers."""
        refs = batch.provider_refs
        deployment = self.routing.deployment(batch.deployment)
        if deployment is None:
            error = ErrorEntry(code="deployment_removed", message=f"Deployment {batch.deployment} is gone.")
            return self._end(batch, "failed", now, errors=(error,), without_results=True)
        provider = self.providers.get(deployment)
        give_up = now >= batch.expires_at + EXPIRY_GRACE_SECONDS + EXPIRY_GIVE_UP_SECONDS
        try:
            if past_window and not batch.expiring:
                provider.cancel(refs)
                batch = self.batches.mark_cancel_sent(batch.id, expiring=True)
            elif batch.status == "cancelling" and not batch.cancel_sent and not batch.expiring:
                provider.cancel(refs)
                batch = self.batches.mark_cancel_sent(batch.id, expiring=False)
            status = listed.get(refs["batch_id"]) or provider.refresh(refs)
        except ProviderError as exc:
            if not give_up:
                raise
            # gone (404), no longer reachable (401/403) or down for longer than the give-up: it would never end.
            # A provider that refuses for good has no results to give either: none are asked for
            logger.warning(
                "provider no longer answers for an expired batch; ending it with what it has",
                extra={"batch_id": batch.id, "error": exc.message},
            )
            return self._end(batch, "expired", now, without_results=not exc.retryable)
        if status.terminal:
            return self._ended(batch, status, now)
        if batch.expiring and give_up:
            logger.warning(
                "provider did not stop an expired batch; ending it with what it has", extra={"batch_id": batch.id}
            )
            return self._end(batch, "expired", now)
        counts = self._counts(batch, status.counts)
        if counts is not None and counts != batch.request_counts:
            try:
                self.batches.record_counts(batch, counts, now=now)
            except StaleState:
                return "raced"
            return "progressed"
        return "unchanged"

    @staticmethod
    def _counts(batch: BatchRecord, provider: Counts | None) -> Counts | None:
        """The batch's progress: what its provider reports, plus the requests refused before the run."""
        if provider is None or not provider.total:
            return None
        refused = max(batch.rejected, 0)
        return Counts(total=batch.request_counts.total, completed=provider.completed, failed=provider.failed + refused)

    def _end(
        self,
        batch: BatchRecord,
        outcome: Outcome,
        now: int,
        *,
        errors: tuple[ErrorEntry, ...] = (),
        without_results: bool = False,
    ) -> str:
        ended = end_run(self.batches, self.bus, batch, outcome, now=now, errors=errors, without_results=without_results)
        return "ended" if ended else "raced"

    def _redrive_submission(self, batch: BatchRecord, now: int) -> str:
        if batch.submit_lease_until >= now:
            return "waiting"  # a submitter holds it
        if batch.retry_at:
            if now < batch.retry_at:
                return "waiting"  # its provider asked to wait
        elif now - batch.updated_at < stuck_after(self.settings.submit_stuck_seconds, batch.submit_redrives):
            return "waiting"
        elif batch.submit_redrives >= self.settings.max_redrives:
            waited = (now - batch.created_at) // 60
            error = ErrorEntry(
                code="submission_failed",
                message=f"The batch could not be submitted to its provider: still waiting after "
                f"{batch.submit_redrives} re-drives over {waited} minutes.",
            )
            return self._end(batch, "failed", now, errors=(error,))
        try:
            self.batches.redrive_submission(batch, now=now)
            self.bus.publish(BATCH_CREATED, {"batch_id": batch.id})
        except (StaleState, PublishFailed):
            return "raced"
        logger.info("re-drove a submission", extra={"batch_id": batch.id})
        return "redriven"

    def _ended(self, batch: BatchRecord, status: ProviderStatus, now: int) -> str:
        """The provider's run is over: the batch ends as it did, or, if no request ran only because the
        provider was busy, runs again (unless it was to stop anyway)."""
        outcome: Outcome = status.state  # type: ignore[assignment]  # terminal: one of the outcomes
        errors = status.errors
        if status.retry_after:
            if batch.status == "in_progress" and not batch.expiring:
                return self._requeue(batch, status.retry_after, now)
            outcome, errors = "cancelled", ()
        if batch.expiring and outcome == "cancelled":
            outcome = "expired"
        return self._end(batch, outcome, now, errors=errors)

    def _requeue(self, batch: BatchRecord, retry_after: float, now: int) -> str:
        """Forget a run the provider failed only because it was busy (its ids, not its upload): the submitter
        creates the next one once the wait is over."""
        refs = {name: ref for name, ref in batch.provider_refs.items() if name not in RUN_REFS}
        wait = busy_wait(retry_after, batch.submit_attempts)
        try:
            self.batches.rerun(batch, refs, lease_until=batch.submit_lease_until, retry_at=now + wait, now=now)
        except StaleState:
            return "raced"
        logger.info("provider failed the run as busy; it will be submitted again", extra={"batch_id": batch.id})
        return "requeued"

    def _redrive_run(self, batch: BatchRecord, now: int) -> str:
        """Send a running batch whose last run was failed as busy to the submitter, once its wait is over."""
        if now < batch.retry_at:
            return "waiting"
        try:
            self.bus.publish(BATCH_CREATED, {"batch_id": batch.id})
        except PublishFailed:
            return "raced"
        return "redriven"

    def _redrive_completion(self, batch: BatchRecord, now: int) -> str:
        if now - batch.updated_at < stuck_after(self.settings.finalize_stuck_seconds, batch.finalize_redrives):
            return "waiting"
        give_up = batch.finalize_redrives >= self.settings.max_redrives
        try:
            batch = self.batches.redrive_completion(batch, now=now)
        except StaleState:
            return "raced"
        publish_ended(self.bus, batch, without_results=give_up)
        logger.info("re-drove a stuck completion", extra={"batch_id": batch.id, "without_results": give_up})
        return "redriven"

    def _retry_cleanups(self, deadline: Deadline) -> int:
        """Retry removing provider objects whose removal failed at completion; give up after a week."""
        cleaned = 0
        for batch_id in self.batches.cleanups():
            if deadline.remaining() < _STOP_STARTING_SECONDS:
                break
            batch = self.batches.get(batch_id)
            deployment = self.routing.deployment(batch.deployment) if batch else None
            try:
                if batch is not None and deployment is not None:
                    self.providers.get(deployment).cleanup(batch.provider_refs)
            except ProviderError as exc:
                if batch is not None and self.clock() - batch.updated_at < CLEANUP_GIVE_UP_SECONDS:
                    logger.warning(
                        "provider objects still not removed", extra={"batch_id": batch_id, "error": exc.message}
                    )
                    continue
                logger.error("gave up removing a batch's provider objects", extra={"batch_id": batch_id})
            self.batches.cleaned(batch_id)
            cleaned += 1
        return cleaned
