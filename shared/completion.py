"""Completion: turn an ended provider run into OpenAI result files, usage and cost, exactly once.

The provider's results are streamed line by line into our output and error files (S3 multipart, under
file ids reserved when the run ended, so a re-run overwrites rather than duplicates). Every input
custom_id lands in exactly one of the two files: a result line that cannot be read or priced becomes a
`provider_error` line of its own, requests refused before the run `invalid_request` lines, and requests
the provider never ran `batch_expired`, `batch_cancelled`, ... lines, by how the batch ended (a provider
that reports them cancelled when batchgw expired the batch included); repeated lines fold into the first,
and lines that name no request of the batch are counted and logged. An OpenAI-compatible provider's answered
lines are stored as it wrote them, read only as far as their usage (a Verbatim); every other
line is written from what was read. Usage is summed and priced at batch
rates, then one DynamoDB transaction moves the batch to its final status, stores files, usage and cost,
releases the input file and the budget reservation and books the real cost on the owner's spend. The
transaction is conditional on the batch still waiting for completion, so a repeated or concurrent
delivery books nothing. Then what batchgw put at the provider is removed (retried by the poller).

A run of a batch of several models (shared/runs.py) leaves its lines as parts and books only itself; its
batch's completion concatenates the parts and books the whole once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final

import msgspec

from shared import lifecycle, notifications
from shared.errors import ProviderError, StaleState
from shared.files import BATCH_FILE_TTL, blob_key, ids_key
from shared.lifecycle import BatchStatus, Outcome
from shared.pricing import BatchPricer
from shared.providers.base import ResultLine, Unreadable, Verbatim
from shared.providers.registry import ProviderSource
from shared.records import BatchRecord, Cost, Counts, ErrorEntry, FileRecord, Usage
from shared.results import as_ended, checked, invalid_request_line, not_run, provider_error_line, render, with_error
from shared.routing import Deployment, RoutingConfig
from shared.runs import Runs
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
    run: bool = False  # a run of a batch of several models: its batch books it


class ResultFiles:
    """The output and error files being written, with their counts: a batch's files (under the ids reserved
    when its run ended), or the parts a run of a batch of several models leaves for its batch."""

    def __init__(self, blobs: Blobs, batch: BatchRecord) -> None:
        assert batch.reserved_output_file_id and batch.reserved_error_file_id
        self.output_id, self.error_id = batch.reserved_output_file_id, batch.reserved_error_file_id
        keys = (
            (part_key(batch, "output"), part_key(batch, "errors"))
            if batch.parent
            else (blob_key(self.output_id), blob_key(self.error_id))
        )
        self.output = blobs.writer(keys[0], "application/jsonl")
        self.errors = blobs.writer(keys[1], "application/jsonl")
        self.completed = 0
        self.failed = 0
        self._batch_id = batch.parent or batch.id
        self._parts = batch.parent is not None

    def write(self, line: ResultLine) -> None:
        if line.succeeded:
            self.output.write(render(line, self._batch_id))
            self.completed += 1
        else:
            self.errors.write(render(with_error(line), self._batch_id))
            self.failed += 1

    def keep(self, raw: bytes, lines: int) -> None:
        """Answered requests' `lines`, as their provider wrote them (`raw`, each line ended by a LF)."""
        self.output.write(raw)
        self.completed += lines

    def commit(self) -> None:
        """Make the files that have lines (a run's parts always, so its batch finds them)."""
        for writer, count in ((self.output, self.completed), (self.errors, self.failed)):
            if count or self._parts:
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


def part_key(run: BatchRecord, kind: str) -> str:
    """Where a run of a batch of several models leaves its `output` or `errors` lines for its batch."""
    return f"batches/{run.parent}/runs/{run.id}/{kind}.jsonl"


class _Tally:
    """Each request's one line: the first readable line a provider gives for it wins, later ones are
    counted; a request whose every line is unreadable gets one provider_error line, written by `settle`."""

    def __init__(self, files: ResultFiles, pricer: BatchPricer | None, expected: list[str], outcome: Outcome) -> None:
        self._files = files
        self._outcome = outcome
        self._pricer = pricer
        self._expected = frozenset(expected)
        self.remaining = set(expected)
        self._unread: dict[str, str] = {}  # custom_id -> why its line could not be read, until one can be
        self.unreadable = 0
        self.repeated = 0

    def take(self, item: ResultLine | Verbatim | Unreadable, batch_id: str) -> None:
        if isinstance(item, Verbatim):
            self._keep(item, batch_id)
            return
        line = checked(item) if isinstance(item, ResultLine) else item
        custom_id = line.custom_id
        if custom_id is None or custom_id not in self.remaining:
            self._stray(custom_id, line.reason if isinstance(line, Unreadable) else None, batch_id)
            return
        if isinstance(line, Unreadable):
            logger.warning("a provider result line cannot be read", extra={"batch_id": batch_id, "why": line.reason})
            if custom_id in self._unread:
                self.repeated += 1
            else:
                self._unread[custom_id] = line.reason
            return
        self._claim(custom_id)
        self._files.write(as_ended(line, self._outcome))
        if line.usage is not None and line.succeeded and self._pricer is not None:
            self._pricer.add(line.usage)

    def _keep(self, kept: Verbatim, batch_id: str) -> None:
        """Answered lines kept as they are: written and priced at once when each is its request's first line,
        as almost all are; else line by line."""
        fresh = self.remaining.intersection(kept.custom_ids)
        if len(fresh) == len(kept.custom_ids) and (not self._unread or self._unread.keys().isdisjoint(fresh)):
            self.remaining -= fresh
            self._files.keep(kept.raw, len(fresh))
            if self._pricer is not None:
                self._pricer.add_all(kept.usages)
            return
        for custom_id, usage, raw in kept.each():
            if custom_id not in self.remaining:
                self._stray(custom_id, None, batch_id)
                continue
            self._claim(custom_id)
            self._files.keep(raw + b"\n", 1)
            if usage is not None and self._pricer is not None:
                self._pricer.add(usage)

    def _stray(self, custom_id: str | None, why: str | None, batch_id: str) -> None:
        """A line for a request that already has its line (repeated), or that names none of the batch's."""
        if custom_id in self._expected:
            self.repeated += 1
            return
        self.unreadable += 1
        logger.warning(
            "a provider result line names no request of the batch",
            extra={"batch_id": batch_id, "why": why or "its custom_id is not one of the batch's"},
        )

    def _claim(self, custom_id: str) -> None:
        """The request's line is the one being written: later ones are repeats, and so were its unreadable
        ones."""
        if self._unread and self._unread.pop(custom_id, None) is not None:
            self.repeated += 1
        self.remaining.discard(custom_id)

    def settle(self) -> None:
        """Write a provider_error line for each request whose lines could none be read."""
        for custom_id, why in self._unread.items():
            self.remaining.discard(custom_id)
            self._files.write(provider_error_line(custom_id, why))
        self._unread.clear()


# the ids object (shared/files.py: encode_custom_ids), decoded here, where only completion pays for the import
_ID_PAIRS: Final = msgspec.json.Decoder(tuple[str, int])


def read_custom_ids(blobs: Blobs, file_id: str, *, model: int | None = None) -> list[str]:
    """A batch input's custom_ids, in input order: all of them, or those of the `model`th model it names."""
    pairs = _ID_PAIRS.decode_lines(blobs.get(ids_key(file_id)) or b"")
    return [custom_id for custom_id, index in pairs if model is None or index == model]


_UNAVAILABLE = ErrorEntry(code="results_unavailable", message="The provider's results could not be retrieved.")


@dataclass(frozen=True, slots=True)
class Completion:
    batches: BatchStore
    blobs: Blobs
    bus: Bus
    providers: ProviderSource
    routing: RoutingConfig
    clock: Callable[[], float] = time.time

    @property
    def _runs(self) -> Runs:
        return Runs(self.batches, self.bus, self.clock)

    def complete(self, batch_id: str, *, without_results: bool = False) -> Completed | None:
        """Finalize one ended batch (or run); None when there is nothing to do (already done, or not ended)."""
        batch = self.batches.get(batch_id)
        if batch is None or batch.finalize_to is None:
            logger.info("nothing to complete", extra={"batch_id": batch_id})
            return None
        if batch.runs:
            return self._merge(batch)
        # without results a batch that ran to its end is failed; an expired or cancelled one stays so
        outcome: Outcome = (
            "failed" if without_results and batch.finalize_to not in ("expired", "cancelled") else batch.finalize_to
        )
        errors = (*batch.errors, _UNAVAILABLE) if without_results else batch.errors
        deployment = self.routing.deployment(batch.deployment)
        rejected = read_rejections(self.blobs, batch)
        sent = [c for c in self._custom_ids(batch) if c not in rejected]
        pricer = BatchPricer(deployment) if deployment else None
        files = ResultFiles(self.blobs, batch)
        tally = _Tally(files, pricer, sent, outcome)
        try:
            if deployment is not None and "batch_id" in batch.provider_refs and not without_results:
                for item in self.providers.get(deployment).results(batch.provider_refs, sent):
                    tally.take(item, batch.id)
                tally.settle()
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
        if done is not None:
            if deployment is not None:
                self._clean_up(batch, deployment)
            if batch.parent is not None:
                self._runs.finished(batch)
        return done

    def _custom_ids(self, batch: BatchRecord) -> list[str]:
        """The custom_ids `batch` runs: its input's, or, for a run, those of its model."""
        if batch.parent is None:
            return read_custom_ids(self.blobs, batch.input_file_id)
        parent = self.batches.get(batch.parent)
        index = parent.runs.index(batch.id) if parent is not None and batch.id in parent.runs else -1
        return read_custom_ids(self.blobs, batch.input_file_id, model=index)

    def _book(
        self,
        batch: BatchRecord,
        outcome: Outcome,
        errors: tuple[ErrorEntry, ...],
        files: ResultFiles,
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
        day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        booking = Booking(
            status=lifecycle.final_status(batch.status, outcome),
            at=now,
            counts=counts,
            usage=usage,
            cost=cost,
            errors=errors,
            files=() if batch.parent else files.records(batch, now),
            spend=(SpendEntry(batch.owner, day, batch.model, cost, usage, counts.total),),
            cleanup=bool(batch.provider_refs),
        )
        done = self._finish(batch, booking, files)
        if done is None:
            return None
        if batch.rejected > 0:
            self.blobs.delete(rejections_key(batch.id))
        priced = pricer is not None and pricer.known
        return Completed(
            batch.id, done.status, counts, usage, cost, priced, tally.unreadable, tally.repeated, run=bool(batch.parent)
        )

    def _merge(self, batch: BatchRecord) -> Completed | None:
        """A batch of several models: its runs' parts into one output and one error file, booked once."""
        runs = self.batches.get_many(batch.runs)
        files = ResultFiles(self.blobs, batch)
        try:
            for run in runs:
                for kind, writer in (("output", files.output), ("errors", files.errors)):
                    for chunk in self.blobs.read(part_key(run, kind)):
                        writer.write(chunk)
                files.completed += run.request_counts.completed
                files.failed += run.request_counts.failed
            files.commit()
        except BaseException:
            files.abort()
            raise
        now = int(self.clock())
        counts = Counts(total=files.completed + files.failed, completed=files.completed, failed=files.failed)
        booking = replace(self._runs.booking(batch, runs, counts, now), files=files.records(batch, now))
        if self._finish(batch, booking, files) is None:
            return None
        self.blobs.delete(*(part_key(run, kind) for run in runs for kind in ("output", "errors")))
        return Completed(batch.id, booking.status, counts, booking.usage, booking.cost, True, 0, 0, run=False)

    def _finish(self, batch: BatchRecord, booking: Booking, files: ResultFiles) -> BatchRecord | None:
        """The completion transaction, then the event; the batch as it now is, or None if it was done already."""
        try:
            self.batches.finish(batch, booking)
        except StaleState:
            logger.info("batch already completed by another delivery; nothing booked", extra={"batch_id": batch.id})
            return None
        written = {f.id for f in booking.files}
        # what the transaction wrote, without reading it back
        finished = batch.model_copy(
            update={
                "status": booking.status,
                "output_file_id": files.output_id if files.output_id in written else None,
                "error_file_id": files.error_id if files.error_id in written else None,
                "request_counts": booking.counts,
                "usage": booking.usage,
                "cost": booking.cost,
                "cost_by_model": booking.cost_by_model,
            }
        )
        notifications.completed(self.bus, finished, batch.status)
        return finished

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
