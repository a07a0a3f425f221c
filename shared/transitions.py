"""Ending a provider run: the one transition submission, polling and expiry share, with its events.

Once a run has ended, the batch carries its final status to come (`finalize_to`) and the ids its result
files will have, and "Batch Ended" hands it to the completion function. Should that event be lost, the
poller re-drives the completion from the table.
"""

from __future__ import annotations

import logging

from shared import ids, notifications
from shared.errors import PublishFailed, StaleState
from shared.lifecycle import Outcome
from shared.records import BatchRecord, ErrorEntry
from shared.storage.bus import BATCH_ENDED
from shared.storage.ports import BatchStore, Bus

logger = logging.getLogger(__name__)


def end_run(
    batches: BatchStore,
    bus: Bus,
    batch: BatchRecord,
    outcome: Outcome,
    *,
    now: int,
    errors: tuple[ErrorEntry, ...] = (),
    without_results: bool = False,
) -> BatchRecord | None:
    """Record that `batch`'s provider run is over and hand it to completion; None when another worker
    ended it first. `without_results` tells completion not to fetch results from the provider.

    A batch its owner cancelled ends cancelled, as OpenAI's do once cancelling, even when its provider ran
    every request before the cancel reached it: its results are kept and priced all the same."""
    if batch.status == "cancelling" and outcome == "completed":
        outcome = "cancelled"
    try:
        ended = batches.end_run(
            batch,
            outcome,
            errors=errors,
            output_file_id=ids.new_id(ids.FILE),
            error_file_id=ids.new_id(ids.FILE),
            now=now,
        )
    except StaleState:
        logger.info("batch already ended by another worker", extra={"batch_id": batch.id})
        return None
    notifications.status_changed(bus, ended, batch.status)
    publish_ended(bus, ended, without_results=without_results)
    return ended


def publish_ended(bus: Bus, batch: BatchRecord, *, without_results: bool = False) -> None:
    try:
        bus.publish(BATCH_ENDED, {"batch_id": batch.id, "without_results": without_results})
    except PublishFailed:
        logger.warning("batch ended but its event was lost; the poller will re-drive it", extra={"batch_id": batch.id})
