"""Submission: move a `validating` batch onto its provider, out of the request path.

The submitter takes a lease on the batch, so duplicate events do not submit twice at once. It first
screens the input against the provider (shared/providers/registry.py `screen`): a request the provider
cannot take is set aside, to fail alone as `invalid_request`, and the rest runs. The adapter records each
provider id in the batch item before its next step, so a retry after a crash resumes where the last
attempt stopped. A provider that asks to wait (ProviderBusy) has the batch wait, with backoff, until its
window closes; a permanent refusal moves it to another deployment of its model or ends it `failed`; a
transient fault is raised for Lambda's retry, and the poller re-drives a submission that was lost.

A provider may also fail a run it accepted only because it was busy (shared/polling.py forgets that run):
the batch stays `in_progress` and is submitted again here, from the same upload, once its wait is over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass

import orjson

from shared import notifications
from shared.errors import ProviderBusy, ProviderError, StaleState
from shared.files import blob_key
from shared.jsonl import iter_lines
from shared.providers.base import InputLine, SubmitRequest
from shared.providers.registry import ProviderSource, screen
from shared.records import BatchRecord, ErrorEntry
from shared.routing import Deployment, RoutingConfig, place
from shared.settings import Settings
from shared.storage.ports import BatchStore, Blobs, Bus, ClaimStore
from shared.transitions import end_run

logger = logging.getLogger(__name__)

HEALTH_SECONDS = 300  # how long placement avoids a deployment that failed a submission
MAX_WAIT_SECONDS = 1800  # the longest a busy provider makes a batch wait between two tries


def busy_wait(retry_after: float, attempts: int) -> int:
    """How long a batch waits for a busy provider after its `attempts`-th try: doubling with each one."""
    return int(min(retry_after * 2 ** min(max(attempts, 1) - 1, 10), MAX_WAIT_SECONDS))


def rejections_key(batch_id: str) -> str:
    """Where the requests refused before a batch's provider run are kept, with why, as JSON lines."""
    return f"batches/{batch_id}/rejected.jsonl"


def read_rejections(blobs: Blobs, batch: BatchRecord) -> dict[str, str]:
    """custom_id -> why its provider cannot take it, for the requests screened out of `batch`."""
    if batch.rejected <= 0:
        return {}
    raw = blobs.get(rejections_key(batch.id)) or b""
    lines = (orjson.loads(line) for line in raw.split(b"\n") if line)
    return {line["custom_id"]: line["reason"] for line in lines}


def input_lines(blobs: Blobs, batch: BatchRecord) -> Iterator[InputLine]:
    """The batch's requests, as stored (validated at upload); a run's, those of its model."""
    for raw in iter_lines(blobs.read(blob_key(batch.input_file_id))):
        if raw.strip():
            line = orjson.loads(raw)
            if batch.parent is None or line["body"]["model"] == batch.model:
                yield InputLine(line["custom_id"], line["body"])


class BatchJournal:
    """Records provider ids on the batch item, only while the batch still waits for them."""

    def __init__(self, batches: BatchStore, claims: ClaimStore, batch: BatchRecord) -> None:
        self._batches = batches
        self._claims = claims
        self._batch_id = batch.id
        self._refs = dict(batch.provider_refs)

    @property
    def refs(self) -> Mapping[str, str]:
        return self._refs

    def record(self, **refs: str) -> None:
        provider_batch = refs.get("batch_id")
        if provider_batch is not None and not self._claims.claim(provider_batch, self._batch_id):
            raise ProviderError(f"provider batch {provider_batch} belongs to another batch", retryable=True)
        self._write(refs)
        self._refs.update(refs)

    def _write(self, refs: Mapping[str, str]) -> None:
        self._batches.record_refs(self._batch_id, refs)

    def claimed_by_another(self, provider_batch_id: str) -> bool:
        owner = self._claims.owner(provider_batch_id)
        return owner is not None and owner != self._batch_id


class RerunJournal(BatchJournal):
    """Records provider ids on a running batch submitted again (its last run failed as busy), only while its
    ids and submission lease are as this journal last wrote them; and at the end, gives up the lease."""

    def __init__(self, batches: BatchStore, claims: ClaimStore, batch: BatchRecord, clock: Callable[[], float]) -> None:
        super().__init__(batches, claims, batch)
        self._batch = batch
        self._clock = clock

    @property
    def batch(self) -> BatchRecord:
        return self._batch

    def _write(self, refs: Mapping[str, str]) -> None:
        self._rerun({**self._batch.provider_refs, **refs}, lease_until=self._batch.submit_lease_until)

    def release(self, *, retry_at: int) -> None:
        self._rerun(self._batch.provider_refs, lease_until=0, retry_at=retry_at)

    def _rerun(self, refs: Mapping[str, str], *, lease_until: int, retry_at: int | None = None) -> None:
        retry = self._batch.retry_at if retry_at is None else retry_at
        now = int(self._clock())
        self._batch = self._batches.rerun(self._batch, refs, lease_until=lease_until, retry_at=retry, now=now)


@dataclass(frozen=True, slots=True)
class Submission:
    batches: BatchStore
    claims: ClaimStore
    blobs: Blobs
    bus: Bus
    providers: ProviderSource
    routing: RoutingConfig
    settings: Settings
    clock: Callable[[], float] = time.time

    def submit(self, batch_id: str) -> None:
        """Submit one batch to its provider; safe to call any number of times, concurrently."""
        now = int(self.clock())
        try:
            batch = self.batches.claim_submission(batch_id, now=now, lease_seconds=self.settings.submit_lease_seconds)
        except StaleState:
            running = self.batches.get(batch_id)
            if running is not None and running.status == "in_progress" and running.retry_at:
                self._submit_again(running, now)
                return
            logger.info("batch not waiting for submission, or another submitter holds it", extra={"batch_id": batch_id})
            return
        while True:
            deployment = self.routing.deployment(batch.deployment)
            if deployment is None:
                error = ErrorEntry(code="deployment_removed", message=f"Deployment {batch.deployment} is gone.")
                end_run(self.batches, self.bus, batch, "failed", now=int(self.clock()), errors=(error,))
                return
            journal = BatchJournal(self.batches, self.claims, batch)
            try:
                batch = self._screen(batch, deployment)
                if batch.rejected == batch.request_counts.total:
                    # nothing left to send: every request fails alone, and the batch is done
                    started = self._start(batch)
                    if started is not None:
                        end_run(self.batches, self.bus, started, "completed", now=int(self.clock()))
                    return
                self.providers.get(deployment).submit(self._request(batch, deployment), journal)
                break
            except StaleState:
                logger.info("batch left validating during submission", extra={"batch_id": batch.id})
                return
            except ProviderError as exc:
                moved = self._after_failure(batch, deployment, journal.refs, exc)
                if moved is None:
                    return
                batch = moved
        if self._start(batch) is None:
            self._cancel_at_provider(batch.id, deployment)

    def _submit_again(self, batch: BatchRecord, now: int) -> None:
        """Create another provider run for a running batch whose last one its provider failed as busy, from
        what it uploaded, once its wait is over; under the submission lease, as a first submission."""
        deployment = self.routing.deployment(batch.deployment)
        if (
            deployment is None
            or "batch_id" in batch.provider_refs
            or max(batch.retry_at, batch.submit_lease_until) > now
        ):
            return  # not due, or held; a removed deployment's batch ends `expired` at the poller, with its window
        try:
            lease = now + self.settings.submit_lease_seconds
            held = self.batches.rerun(
                batch, batch.provider_refs, lease_until=lease, retry_at=batch.retry_at, now=now, attempt=True
            )
        except StaleState:
            logger.info("another submitter took the batch", extra={"batch_id": batch.id})
            return
        journal = RerunJournal(self.batches, self.claims, held, self.clock)
        try:
            self.providers.get(deployment).submit(self._request(held, deployment), journal)
            journal.release(retry_at=0)
        except StaleState:
            logger.info("batch moved during its submission", extra={"batch_id": batch.id})
            return
        except ProviderBusy as exc:
            wait = busy_wait(exc.retry_after, held.submit_attempts)
            logger.info("provider asks to wait", extra={"batch_id": batch.id, "seconds": wait, "why": exc.message})
            journal.release(retry_at=now + wait)
            return
        except ProviderError as exc:
            if exc.retryable:
                journal.release(retry_at=now)  # the poller sends it again
                raise
            logger.warning("provider refused the batch", extra={"batch_id": batch.id, "code": exc.code})
            error = ErrorEntry(code=exc.code, message=exc.message)
            end_run(self.batches, self.bus, journal.batch, "failed", now=int(self.clock()), errors=(error,))
            return
        self._cancel_at_provider(batch.id, deployment)

    def _screen(self, batch: BatchRecord, deployment: Deployment) -> BatchRecord:
        """Set aside the requests `deployment`'s provider cannot take, once per deployment."""
        if batch.rejected >= 0:
            return batch
        rejected = bytearray()
        count = 0
        for line in input_lines(self.blobs, batch):
            reason = screen(deployment, line.body)
            if reason is not None:
                rejected += orjson.dumps(
                    {"custom_id": line.custom_id, "reason": reason}, option=orjson.OPT_APPEND_NEWLINE
                )
                count += 1
        if count:
            self.blobs.put(rejections_key(batch.id), bytes(rejected), "application/jsonl")
            logger.info("requests the provider cannot take will fail alone", extra={"batch_id": batch.id, "n": count})
        return self.batches.record_screening(batch.id, count)

    def _request(self, batch: BatchRecord, deployment: Deployment) -> SubmitRequest:
        rejected = read_rejections(self.blobs, batch)

        def open_lines() -> Iterator[InputLine]:
            return (line for line in input_lines(self.blobs, batch) if line.custom_id not in rejected)

        return SubmitRequest(
            batch_id=batch.id,
            endpoint=batch.endpoint,
            model=deployment.provider_model,
            line_count=batch.request_counts.total - len(rejected),
            open_lines=open_lines,
            expires_at=batch.expires_at,
            metadata=batch.metadata or {},
        )

    def _after_failure(
        self, batch: BatchRecord, deployment: Deployment, refs: Mapping[str, str], exc: ProviderError
    ) -> BatchRecord | None:
        """Where a failed submission goes next: another deployment (returned), a wait, a retry, or the end."""
        now = int(self.clock())
        if not isinstance(exc, ProviderBusy):
            self.claims.mark_failing(deployment.key, until=now + HEALTH_SECONDS, error=exc.message)
        moved = self._fail_over(batch, deployment, refs, exc)
        if moved is not None:
            return moved
        if isinstance(exc, ProviderBusy):
            wait = busy_wait(exc.retry_after, batch.submit_attempts)
            logger.info("provider asks to wait", extra={"batch_id": batch.id, "seconds": wait, "why": exc.message})
            self.batches.release_submission(batch.id, retry_at=now + wait, now=now)
            return None
        if exc.retryable and batch.submit_attempts < self.settings.max_redrives:
            self.batches.release_submission(batch.id, retry_at=0, now=now)
            raise exc
        logger.warning("provider refused the batch", extra={"batch_id": batch.id, "code": exc.code})
        error = ErrorEntry(code=exc.code, message=exc.message)
        end_run(self.batches, self.bus, batch, "failed", now=now, errors=(error,))
        return None

    def _fail_over(
        self, batch: BatchRecord, failed: Deployment, refs: Mapping[str, str], error: ProviderError
    ) -> BatchRecord | None:
        """Move `batch` to the next untried deployment of its model; None when there is none or it is unsafe
        (the failed one may already hold the batch: a create whose answer was lost would run it twice)."""
        busy = isinstance(error, ProviderBusy)  # a definite "not now": nothing was created
        if error.retryable and not busy and ("create_started" in refs or "batch_id" in refs):
            return None
        tried = (*batch.tried_deployments, failed.key)
        remaining = [d for d in self.routing.deployments_for(batch.model) if d.key not in tried]
        if not remaining:
            return None
        now = int(self.clock())
        chosen = place(remaining, avoid=self.claims.failing([d.key for d in remaining], now=now))
        try:
            moved = self.batches.move(batch.id, deployment=chosen.key, tried=tried, now=now)
        except StaleState:
            return None
        if refs:
            try:
                self.providers.get(failed).cleanup(refs)
            except ProviderError as exc:
                logger.warning("could not remove the input left at the failed deployment", extra={"error": exc.message})
        logger.warning(
            "deployment failed the submission; trying the next one",
            extra={"batch_id": batch.id, "failed": failed.key, "next": chosen.key, "error": error.message},
        )
        return moved

    def _cancel_at_provider(self, batch_id: str, deployment: Deployment) -> None:
        """Cancel the provider batch of a batch cancelled while it was being submitted, now: at the poller's
        next tick a fast provider may have run all of it. What fails here, the poller retries."""
        batch = self.batches.get(batch_id)
        if batch is None or batch.status != "cancelling" or batch.cancel_sent or "batch_id" not in batch.provider_refs:
            return
        try:
            self.providers.get(deployment).cancel(batch.provider_refs)
            self.batches.mark_cancel_sent(batch.id, expiring=False)
        except (ProviderError, StaleState) as exc:
            logger.warning(
                "could not cancel at the provider yet; the poller will", extra={"batch_id": batch.id, "error": str(exc)}
            )

    def _start(self, batch: BatchRecord) -> BatchRecord | None:
        try:
            started = self.batches.start(batch.id, now=int(self.clock()))
        except StaleState:
            # cancelled meanwhile (the provider batch is cancelled by the caller, or by the poller)
            logger.info("batch was cancelled during submission", extra={"batch_id": batch.id})
            return None
        notifications.status_changed(self.bus, started, batch.status)
        if batch.parent is not None:  # a batch of several models is in progress once one of its runs is
            with suppress(StaleState):
                parent = self.batches.start(batch.parent, now=int(self.clock()))
                notifications.status_changed(self.bus, parent, "validating")
        return started
