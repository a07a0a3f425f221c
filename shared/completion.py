"""Completion: turn an ended provider run into OpenAI result files, usage and cost, exactly once.

The provider's results are streamed line by line into our output and error files (S3 multipart,
under file ids reserved when the run ended, so a re-run overwrites rather than duplicates). Every
input custom_id lands in exactly one of the two files: requests the provider never ran are written
as errors (`batch_expired`, `batch_cancelled`, ...). Usage is summed and priced at batch rates, then
one DynamoDB transaction moves the batch to its final status, stores files, usage and cost, releases
the input file and adds to the owner's spend. The transaction is conditional on the batch still
waiting for completion, so a repeated or concurrent delivery books nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from shared import lifecycle, notifications
from shared.context import Context
from shared.errors import StaleState
from shared.files import BATCH_FILE_TTL, blob_key, ids_key
from shared.pricing import BatchPricer
from shared.providers.base import ResultLine
from shared.records import BatchRecord, Cost, Counts, ErrorEntry, FileRecord, Usage
from shared.results import not_run, render
from shared.storage.blobs import BlobWriter
from shared.storage.table import SpendEntry
from shared.submission import submit_request

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Completed:
    """What one completion booked, for logs and metrics."""

    batch_id: str
    status: str
    counts: Counts
    usage: Usage
    cost: Cost
    priced: bool


class _ResultFiles:
    """The output and error files being written, with their counts."""

    def __init__(self, ctx: Context, batch: BatchRecord) -> None:
        assert batch.reserved_output_file_id and batch.reserved_error_file_id
        self.output_id, self.error_id = batch.reserved_output_file_id, batch.reserved_error_file_id
        self.output = ctx.blobs.writer(blob_key(self.output_id), "application/jsonl")
        self.errors = ctx.blobs.writer(blob_key(self.error_id), "application/jsonl")
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

    def records(self, batch: BatchRecord, now: int) -> list[FileRecord]:
        expires_at = now + (batch.output_expires_after or BATCH_FILE_TTL)
        made: list[tuple[str, BlobWriter, int, str]] = [
            (self.output_id, self.output, self.completed, f"{batch.id}_output.jsonl"),
            (self.error_id, self.errors, self.failed, f"{batch.id}_error.jsonl"),
        ]
        return [
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
        ]


def _input_custom_ids(ctx: Context, batch: BatchRecord) -> list[str]:
    raw = ctx.blobs.get(ids_key(batch.input_file_id))
    return raw.decode().split("\n") if raw else []


def complete_batch(ctx: Context, batch_id: str, *, without_results: bool = False) -> Completed | None:
    """Finalize one ended batch; None when there is nothing to do (already done, or not ended)."""
    batch = ctx.table.get_batch(batch_id)
    if batch is None or batch.finalize_to is None:
        logger.info("nothing to complete", extra={"batch_id": batch_id})
        return None
    outcome = batch.finalize_to
    errors = batch.errors
    if without_results:
        outcome = "failed"
        errors = (
            *errors,
            ErrorEntry(code="results_unavailable", message="The provider's results could not be retrieved."),
        )
    deployment = ctx.routing.deployment(batch.deployment)
    expected = _input_custom_ids(ctx, batch)
    remaining = set(expected)
    pricer = BatchPricer(deployment) if deployment else None
    files = _ResultFiles(ctx, batch)
    try:
        if deployment is not None and pricer is not None and "batch_id" in batch.provider_refs and not without_results:
            request = submit_request(ctx, batch, deployment.provider_model)
            for line in ctx.provider(deployment).results(batch.provider_refs, request):
                if line.custom_id not in remaining:
                    continue  # unknown or repeated: every custom_id appears exactly once
                remaining.discard(line.custom_id)
                files.write(line)
                if line.usage is not None and line.succeeded:
                    pricer.add(line.usage)
        for custom_id in expected:
            if custom_id in remaining:
                files.write(not_run(custom_id, outcome))
        files.commit()
    except BaseException:
        files.abort()
        raise
    return _book(ctx, batch, outcome, errors, files, pricer)


def _book(
    ctx: Context,
    batch: BatchRecord,
    outcome: str,
    errors: tuple[ErrorEntry, ...],
    files: _ResultFiles,
    pricer: BatchPricer | None,
) -> Completed | None:
    now = int(time.time())
    usage = pricer.usage if pricer else Usage()
    cost = pricer.cost() if pricer else Cost()
    if pricer is not None and not pricer.known:
        logger.warning(
            "no batch price for this model; its cost is recorded as 0",
            extra={"batch_id": batch.id, "model": batch.model},
        )
    counts = Counts(total=batch.request_counts.total, completed=files.completed, failed=files.failed)
    status = outcome if lifecycle.can_move(batch.status, outcome) else "failed"
    records = files.records(batch, now)
    fields = {
        "status": status,
        lifecycle.TIMESTAMP_FIELD[status]: now,
        "output_file_id": files.output_id if files.completed else None,
        "error_file_id": files.error_id if files.failed else None,
        "request_counts": counts.model_dump(),
        "usage": usage.model_dump(),
        "cost": cost.model_dump(),
        "errors": [e.model_dump(exclude_none=True) for e in errors] or None,
        "finalize_to": None,
        "reserved_output_file_id": None,
        "reserved_error_file_id": None,
        "updated_at": now,
    }
    day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    spend = SpendEntry(
        owner=batch.owner,
        day=day,
        model=batch.model,
        cost=cost,
        usage=usage,
        requests=files.completed + files.failed,
    )
    try:
        ctx.table.finish_batch(batch, fields=fields, files=records, spend=spend)
    except StaleState:
        logger.info("batch already completed by another delivery; nothing booked", extra={"batch_id": batch.id})
        return None
    # what the transaction wrote, without reading it back
    finished = batch.model_copy(
        update={
            "status": status,
            "output_file_id": fields["output_file_id"],
            "error_file_id": fields["error_file_id"],
            "request_counts": counts,
            "usage": usage,
            "cost": cost,
        }
    )
    notifications.completed(ctx.bus, finished, batch.status)
    return Completed(batch.id, status, counts, usage, cost, priced=pricer is not None and pricer.known)
