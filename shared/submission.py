"""Submission: move a `validating` batch onto its provider, out of the request path.

The submitter takes a lease on the batch, so duplicate events do not submit twice at once, and the
adapter records each provider id in the batch item before its next step, so a retry after a crash
resumes where the last attempt stopped. A permanent refusal ends the batch `failed`; a transient
fault is raised for Lambda's retry, and the poller re-drives a batch whose submission was lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from shared import ids, lifecycle, notifications
from shared.context import Context
from shared.errors import ProviderError, StaleState
from shared.files import blob_key
from shared.providers.base import SubmitRequest
from shared.records import BatchRecord, ErrorEntry
from shared.routing import Deployment, place
from shared.storage.bus import BATCH_ENDED, PublishFailed

logger = logging.getLogger(__name__)

HEALTH_SECONDS = 300  # how long placement avoids a deployment that failed a submission


class BatchJournal:
    """Records provider ids on the batch item, only while the batch still waits for them."""

    def __init__(self, ctx: Context, batch: BatchRecord) -> None:
        self._ctx = ctx
        self._batch_id = batch.id
        self._refs = dict(batch.provider_refs)

    @property
    def refs(self) -> Mapping[str, str]:
        return self._refs

    def record(self, **refs: str) -> None:
        provider_batch = refs.get("batch_id")
        if provider_batch is not None and not self._ctx.table.claim_provider_batch(provider_batch, self._batch_id):
            raise ProviderError(f"provider batch {provider_batch} belongs to another batch", retryable=True)
        self._ctx.table.update_batch(
            self._batch_id,
            expect={"validating", "cancelling"},
            fields={f"provider_refs.{name}": value for name, value in refs.items()},
        )
        self._refs.update(refs)

    def claimed_by_another(self, provider_batch_id: str) -> bool:
        owner = self._ctx.table.provider_batch_owner(provider_batch_id)
        return owner is not None and owner != self._batch_id


def submit_request(ctx: Context, batch: BatchRecord, model: str) -> SubmitRequest:
    """What a provider needs to run `batch`; reading the input is deferred until the adapter streams it."""
    file = ctx.table.get_file(batch.input_file_id)
    key = file.s3_key if file else blob_key(batch.input_file_id)
    return SubmitRequest(
        batch_id=batch.id,
        endpoint=batch.endpoint,
        model=model,
        line_count=batch.request_counts.total,
        open_input=lambda: ctx.blobs.read(key),
        metadata=batch.metadata or {},
    )


def end_batch(
    ctx: Context,
    batch: BatchRecord,
    outcome: str,
    *,
    errors: tuple[ErrorEntry, ...] = (),
    without_results: bool = False,
) -> BatchRecord | None:
    """Record that the provider run is over (`outcome` is the final status) and hand over to completion.

    Returns None when another worker ended the batch first.
    """
    now = int(time.time())
    shown = lifecycle.shown_while_finalizing(batch.status, outcome)
    fields: dict[str, object] = {
        "finalize_to": outcome,
        "status": shown,
        "updated_at": now,
        "reserved_output_file_id": ids.new_id(ids.FILE),
        "reserved_error_file_id": ids.new_id(ids.FILE),
    }
    if shown != batch.status:
        fields[lifecycle.TIMESTAMP_FIELD[shown]] = now
    if errors:
        fields["errors"] = [e.model_dump(exclude_none=True) for e in errors]
    try:
        ended = ctx.table.update_batch(batch.id, expect={batch.status}, fields=fields, when={"finalize_to": None})
    except StaleState:
        logger.info("batch already ended by another worker", extra={"batch_id": batch.id})
        return None
    notifications.status_changed(ctx.bus, ended, batch.status)
    publish_ended(ctx, ended, without_results=without_results)
    return ended


def publish_ended(ctx: Context, batch: BatchRecord, *, without_results: bool = False) -> None:
    try:
        ctx.bus.publish(BATCH_ENDED, {"batch_id": batch.id, "without_results": without_results})
    except PublishFailed:
        logger.warning(
            "batch ended but its event was not published; the poller will re-drive it", extra={"batch_id": batch.id}
        )


def submit_batch(ctx: Context, batch_id: str) -> None:
    """Submit one batch to its provider; safe to call any number of times, concurrently.

    A provider error moves the batch to the model's next deployment, unless the failed one may already
    hold the batch (a create whose answer was lost), which would run it twice.
    """
    now = int(time.time())
    try:
        batch = ctx.table.claim_submission(batch_id, now=now, lease_seconds=ctx.settings.submit_lease_seconds)
    except StaleState:
        logger.info("batch not waiting for submission, or another submitter holds it", extra={"batch_id": batch_id})
        return
    while True:
        deployment = ctx.routing.deployment(batch.deployment)
        if deployment is None:
            message = f"Deployment {batch.deployment} is no longer configured."
            end_batch(ctx, batch, "failed", errors=(ErrorEntry(code="deployment_removed", message=message),))
            return
        journal = BatchJournal(ctx, batch)
        try:
            ctx.provider(deployment).submit(submit_request(ctx, batch, deployment.provider_model), journal)
            break
        except StaleState:
            logger.info("batch left validating during submission", extra={"batch_id": batch.id})
            return
        except ProviderError as exc:
            ctx.table.mark_deployment_failing(
                deployment.key, until=int(time.time()) + HEALTH_SECONDS, error=exc.message
            )
            moved = _fail_over(ctx, batch, deployment, journal.refs, exc)
            if moved is not None:
                batch = moved
                continue
            if exc.retryable and batch.submit_attempts < ctx.settings.max_redrives:
                ctx.table.update_batch(batch.id, expect={"validating", "cancelling"}, fields={"submit_lease_until": 0})
                raise
            logger.warning("provider refused the batch", extra={"batch_id": batch.id, "code": exc.code})
            end_batch(ctx, batch, "failed", errors=(ErrorEntry(code=exc.code, message=exc.message),))
            return
    now = int(time.time())
    try:
        started = ctx.table.update_batch(
            batch.id,
            expect={"validating"},
            fields={"status": "in_progress", "in_progress_at": now, "submit_lease_until": 0, "updated_at": now},
        )
    except StaleState:
        # cancelled meanwhile: the provider ids are recorded, so the poller cancels the provider batch
        logger.info("batch was cancelled during submission", extra={"batch_id": batch.id})
        return
    notifications.status_changed(ctx.bus, started, batch.status)


def _fail_over(
    ctx: Context, batch: BatchRecord, failed: Deployment, refs: Mapping[str, str], error: ProviderError
) -> BatchRecord | None:
    """Move `batch` to the next untried deployment of its model; None when there is none or it is unsafe."""
    if error.retryable and ("create_started" in refs or "batch_id" in refs):
        return None
    tried = (*batch.tried_deployments, failed.key)
    remaining = [d for d in ctx.routing.deployments_for(batch.model) if d.key not in tried]
    if not remaining:
        return None
    now = int(time.time())
    chosen = place(remaining, avoid=ctx.table.failing_deployments([d.key for d in remaining], now=now))
    try:
        moved = ctx.table.update_batch(
            batch.id,
            expect={"validating"},
            fields={"deployment": chosen.key, "provider_refs": {}, "tried_deployments": list(tried), "updated_at": now},
        )
    except StaleState:
        return None
    logger.warning(
        "deployment failed the submission; trying the next one",
        extra={"batch_id": batch.id, "failed": failed.key, "next": chosen.key, "error": error.message},
    )
    return moved
