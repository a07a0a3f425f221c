"""Polling: refresh every active batch against its provider, on a schedule (EventBridge, or the dev stack's).

Active batches come from the sparse active index, never a Scan, and are refreshed concurrently
(`poll_concurrency` at a time). Each status or count change is a conditional write; a provider that
reports a terminal state hands the batch to the completion step. Batches whose submission or
completion was lost are re-driven after a threshold and failed after `max_redrives` tries. One
provider's outage or one broken batch never stops the rest: each batch is polled on its own.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from shared.context import Context
from shared.errors import ProviderError, StaleState
from shared.records import BatchRecord, ErrorEntry
from shared.storage.bus import BATCH_CREATED, PublishFailed
from shared.submission import end_batch, publish_ended

logger = logging.getLogger(__name__)


def poll_batches(ctx: Context, *, now: int | None = None) -> Counter[str]:
    """Poll every active batch once; returns how many ended up in each outcome."""
    at = int(time.time()) if now is None else now
    batches = list(ctx.table.active_batches())
    outcomes: Counter[str] = Counter()
    if not batches:
        return outcomes
    workers = min(ctx.settings.poll_concurrency, len(batches))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poll") as pool:
        outcomes.update(pool.map(partial(_poll_isolated, ctx, at), batches))
    return outcomes


def _poll_isolated(ctx: Context, now: int, batch: BatchRecord) -> str:
    try:
        return poll_batch(ctx, batch, now=now)
    except ProviderError as exc:
        logger.warning(
            "provider call failed; will retry on the next poll",
            extra={"batch_id": batch.id, "error": exc.message, "retryable": exc.retryable},
        )
        return "provider_error"
    except Exception:
        logger.exception("polling a batch failed", extra={"batch_id": batch.id})
        return "error"


def poll_batch(ctx: Context, batch: BatchRecord, *, now: int) -> str:
    """Move one batch forward as far as its provider allows; returns what happened."""
    if batch.finalize_to is not None:
        return _redrive_completion(ctx, batch, now)
    if batch.status == "validating":
        return _redrive_submission(ctx, batch, now)
    refs = batch.provider_refs
    if "batch_id" not in refs:
        # cancelled before the provider batch existed; wait out a submission under way
        if batch.status == "cancelling" and batch.submit_lease_until < now:
            return "ended" if end_batch(ctx, batch, "cancelled") else "raced"
        return "waiting"
    deployment = ctx.routing.deployment(batch.deployment)
    if deployment is None:
        error = ErrorEntry(code="deployment_removed", message=f"Deployment {batch.deployment} is no longer configured.")
        return "ended" if end_batch(ctx, batch, "failed", errors=(error,), without_results=True) else "raced"
    provider = ctx.provider(deployment)
    if batch.status == "cancelling" and not batch.cancel_sent:
        provider.cancel(refs)
        try:
            batch = ctx.table.update_batch(batch.id, expect={"cancelling"}, fields={"cancel_sent": True})
        except StaleState:
            return "raced"
    status = provider.refresh(refs)
    if status.terminal:
        return "ended" if end_batch(ctx, batch, status.state, errors=status.errors) else "raced"
    if status.counts is not None and status.counts != batch.request_counts and status.counts.total:
        try:
            ctx.table.update_batch(
                batch.id,
                expect={batch.status},
                fields={"request_counts": status.counts.model_dump(), "updated_at": now},
                when={"finalize_to": None},
            )
        except StaleState:
            return "raced"
        return "progressed"
    return "unchanged"


def _redrive_submission(ctx: Context, batch: BatchRecord, now: int) -> str:
    stuck_for = now - max(batch.updated_at, batch.submit_lease_until)
    if stuck_for < ctx.settings.submit_stuck_seconds:
        return "waiting"
    if batch.submit_redrives >= ctx.settings.max_redrives:
        error = ErrorEntry(
            code="submission_failed",
            message=f"The batch could not be submitted to its provider after {batch.submit_redrives} tries.",
        )
        return "ended" if end_batch(ctx, batch, "failed", errors=(error,)) else "raced"
    try:
        ctx.table.update_batch(
            batch.id,
            expect={"validating"},
            fields={"updated_at": now},
            add={"submit_redrives": 1},
            when={"finalize_to": None, "submit_lease_until": batch.submit_lease_until},
        )
        ctx.bus.publish(BATCH_CREATED, {"batch_id": batch.id})
    except (StaleState, PublishFailed):
        return "raced"
    logger.info("re-drove a stuck submission", extra={"batch_id": batch.id})
    return "redriven"


def _redrive_completion(ctx: Context, batch: BatchRecord, now: int) -> str:
    if now - batch.updated_at < ctx.settings.finalize_stuck_seconds:
        return "waiting"
    give_up = batch.finalize_redrives >= ctx.settings.max_redrives
    try:
        batch = ctx.table.update_batch(
            batch.id,
            expect={batch.status},
            fields={"updated_at": now},
            add={"finalize_redrives": 1},
            when={"finalize_to": batch.finalize_to, "updated_at": batch.updated_at},
        )
    except StaleState:
        return "raced"
    publish_ended(ctx, batch, without_results=give_up)
    logger.info("re-drove a stuck completion", extra={"batch_id": batch.id, "without_results": give_up})
    return "redriven"
