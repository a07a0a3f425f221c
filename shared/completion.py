"""Completion: turn an ended provider run into OpenAI result files, usage and cost, exactly once.

The provider's results are streamed line by line into our output and error files (S3 multipart, under
file ids reserved when the run ended, so a re-run overwrites rather than duplicates). Every input
custom_id lands in exactly one of the two files: a result line that cannot be read or priced becomes a
`provider_error` line of its own, requests refused before the run `invalid_request` lines, and requests
the provider never ran `batch_expired`, `batch_cancelled`, ... lines; repeated lines fold into the first,
and lines that name no request of the batch are counted and logged. Usage is summed and priced at batch
rates, then one DynamoDB transaction moves the batch to its final status, stores files, usage and cost,
releases the input file and the budget reservation and books the real cost on the owner's spend. The
transaction is conditional on the batch still waiting for completion, so a repeated or concurrent
delivery books nothing. Then what batchgw put at the provider is removed (retried by the poller).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from shared import lifecycle, notifications
from shared.errors import ProviderError, StaleState
from shared.files import BATCH_FILE_TTL, blob_key, read_custom_ids
from shared.lifecycle import BatchStatus, Outcome
from shared.pricing import BatchPricer
from shared.providers.base import ResultLine, Unreadable
from shared.providers.registry import ProviderSource
from shared.records import BatchRecord, Cost, Counts, ErrorEntry, FileRecord, Usage
from shared.results import checked, invalid_request_line, not_run, provider_error_line, render
from shared.routing import Deployment, RoutingConfig
from shared.storage.ports import BatchStore, Blobs, BlobSink, Booking, Bus, SpendEntry
from shared.submission import read_rejections, rejections_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Completed:
    """What one completion booked, for logs and metrics."""

    batch_id: str
    status: BatchStatus
    counts: Counts
    usage: Usage
    cost: Cost
    priced: bool
    unreadable: int  # provider lines that named no request of the batch
    repeated: int  # provider lines for a request that already had its line


class _ResultFiles:
    """The output and error files being written, with their counts."""

    def __init__(self, blobs: Blobs, batch: BatchRecord) -> None:
        assert batch.reserved_output_file_id and batch.reserved_error_file_id
        self.output_id, self.error_id = batch.reserved_output_file_id, batch.reserved_error_file_id
        self.output = blobs.writer(blob_key(self.output_id), "application/jsonl")
        self.errors = blobs.writer(blob_key(self.error_id), "application/jsonl")
        self.completed = 0
        self.failed = 0
        self._batch_id = batch.id

    def write(self, line: ResultLine) -> None:
        if line.succeeded:
            self.output.write(render(line, self._batch_id))
            self.completed += 1
        else:
            self.errors.write(render(line, self._batch_id))
            self.failed += 1

    def commit(self) -> None:
        for writer, count in ((self.output, self.completed), (self.errors, self.failed)):
            if count:
                writer.commit()
            else:
                writer.abort()

    def abort(self) -> None:
        self.output.abort()
        self.errors.abort()

    def records(self, batch: BatchRecord, now: int) -> tuple[FileRecord, ...]:
        expires_at = now + (batch.output_expires_after or BATCH_FILE_TTL)
        made: list[tuple[str, BlobSink, int, str]] = [
            (self.output_id, self.output, self.completed, f"{batch.id}_output.jsonl"),
            (self.error_id, self.errors, self.failed, f"{batch.id}_error.jsonl"),
        ]
        return tuple(
            FileRecord(
                id=file_id,
                owner=batch.owner,
                purpose="batch_output",
                filename=filename,
                bytes=writer.bytes,
                created_at=now,
                expires_at=expires_at,
                s3_key=blob_key(file_id),
                batch_id=batch.id,
            )
            for file_id, writer, count, filename in made
            if count
        )


class _Tally:
    """Each request's one line: the first a provider gives for it wins, later ones are counted."""

    def __init__(self, files: _ResultFiles, pricer: BatchPricer | None, expected: list[str]) -> None:
        self._files = files
        self._pricer = pricer
        self._expected = frozenset(expected)
        self.remaining = set(expected)
        self.unreadable = 0
        self.repeated = 0

    def take(self, item: ResultLine | Unreadable, batch_id: str) -> None:
        line = checked(item) if isinstance(item, ResultLine) else item
        custom_id = line.custom_id
        if custom_id is None or custom_id not in self.remaining:
            if custom_id in self._expected:
                self.repeated += 1
            else:
                self.unreadable += 1
                why = line.reason if isinstance(line, Unreadable) else "its custom_id is not one of the batch's"
                logger.warning(
                    "a provider result line names no request of the batch", extra={"batch_id": batch_id, "why": why}
                )
            return
        self.remaining.discard(custom_id)
        if isinstance(line, Unreadable):
            logger.warning("a provider result line cannot be read", extra={"batch_id": batch_id, "why": line.reason})
            self._files.write(provider_error_line(custom_id, line.reason))
            return
        self._files.write(line)
        if line.succeeded and line.usage is not None and self._pricer is not None:
            self._pricer.add(line.usage)


@dataclass(frozen=True, slots=True)
class Completion:
    batches: BatchStore
    blobs: Blobs
    bus: Bus
    providers: ProviderSource
    routing: RoutingConfig
    clock: Callable[[], float] = time.time

    def complete(self, batch_id: str, *, without_results: bool = False) -> Completed | None:
        """Finalize one ended batch; None when there is nothing to do (already done, or not ended)."""
        batch = self.batches.get(batch_id)
        if batch is None or batch.finalize_to is None:
            logger.info("nothing to complete", extra={"batch_id": batch_id})
            return None
        outcome: Outcome = batch.finalize_to
        errors = batch.errors
        if without_results:
            outcome = "failed"
            unavailable = ErrorEntry(
                code="results_unavailable", message="The provider's results could not be retrieved."
            )
            errors = (*errors, unavailable)
        deployment = self.routing.deployment(batch.deployment)
        rejected = read_rejections(self.blobs, batch)
        sent = [c for c in read_custom_ids(self.blobs, batch.input_file_id) if c not in rejected]
        pricer = BatchPricer(deployment) if deployment else None
        files = _ResultFiles(self.blobs, batch)
        tally = _Tally(files, pricer, sent)
        try:
            if deployment is not None and "batch_id" in batch.provider_refs and not without_results:
                for item in self.providers.get(deployment).results(batch.provider_refs, sent):
                    tally.take(item, batch.id)
            for custom_id, reason in rejected.items():
                files.write(invalid_request_line(custom_id, reason))
            for custom_id in sent:
                if custom_id in tally.remaining:
                    files.write(not_run(custom_id, outcome))
            files.commit()
        except BaseException:
            files.abort()
            raise
        done = self._book(batch, outcome, errors, files, pricer, tally)
        if done is not None and deployment is not None:
            self._clean_up(batch, deployment)
        return done

    def _book(
        self,
        batch: BatchRecord,
        outcome: Outcome,
        errors: tuple[ErrorEntry, ...],
        files: _ResultFiles,
        pricer: BatchPricer | None,
        tally: _Tally,
    ) -> Completed | None:
        now = int(self.clock())
        usage = pricer.usage if pricer else Usage()
        cost = pricer.cost() if pricer else Cost()
        if pricer is not None and not pricer.known:
            logger.warning(
                "no batch price for this model; its cost is recorded as 0",
                extra={"batch_id": batch.id, "model": batch.model},
            )
        counts = Counts(total=files.completed + files.failed, completed=files.completed, failed=files.failed)
        status = lifecycle.final_status(batch.status, outcome)
        records = files.records(batch, now)
        day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        booking = Booking(
            status=status,
            at=now,
            counts=counts,
            usage=usage,
            cost=cost,
            errors=errors,
            files=records,
            spend=SpendEntry(batch.owner, day, batch.model, cost, usage, files.completed + files.failed),
            cleanup=bool(batch.provider_refs),
        )
        try:
            self.batches.finish(batch, booking)
        except StaleState:
            logger.info("batch already completed by another delivery; nothing booked", extra={"batch_id": batch.id})
            return None
        written = {f.id for f in records}
        # what the transaction wrote, without reading it back
        finished = batch.model_copy(
            update={
                "status": status,
                "output_file_id": files.output_id if files.output_id in written else None,
                "error_file_id": files.error_id if files.error_id in written else None,
                "request_counts": counts,
                "usage": usage,
                "cost": cost,
            }
        )
        notifications.completed(self.bus, finished, batch.status)
        if batch.rejected > 0:
            self.blobs.delete(rejections_key(batch.id))
        return Completed(
            batch.id,
            status,
            counts,
            usage,
            cost,
            priced=pricer is not None and pricer.known,
            unreadable=tally.unreadable,
            repeated=tally.repeated,
        )

    def _clean_up(self, batch: BatchRecord, deployment: Deployment) -> None:
        """Remove what batchgw put at the provider; on failure the poller retries (the work index's CLEANUP)."""
        refs: Mapping[str, str] = batch.provider_refs
        if not refs:
            return
        try:
            self.providers.get(deployment).cleanup(refs)
        except ProviderError as exc:
            logger.warning("provider objects not removed yet; the poller retries", extra={"error": exc.message})
            return
        self.batches.cleaned(batch.id)
