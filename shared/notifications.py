"""Events for users on the stack's bus: every status change, and each batch's completion with its figures.

| detail-type          | detail                                                                          |
| Batch Status Changed | batch_id, owner, model, endpoint, status, previous_status, at                    |
| Batch Completed      | batch_id, owner, model, endpoint, status, request_counts, usage, cost,           |
|                      | output_file_id, error_file_id, at                                                |

They are informational: a failure to publish is logged and never undoes the change it reports. Rules on
the bus route them anywhere EventBridge can (SNS, SQS, an API destination for a webhook).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from shared.errors import PublishFailed
from shared.records import BatchRecord
from shared.storage.ports import Bus

logger = logging.getLogger(__name__)

BATCH_STATUS_CHANGED: Final = "Batch Status Changed"
BATCH_COMPLETED: Final = "Batch Completed"


def _about(batch: BatchRecord) -> dict[str, Any]:
    return {
        "batch_id": batch.id,
        "owner": batch.owner,
        "model": batch.model,
        "endpoint": batch.endpoint,
        "status": batch.status,
        "at": int(time.time()),
    }


def _publish(bus: Bus, detail_type: str, detail: dict[str, Any]) -> None:
    try:
        bus.publish(detail_type, detail)
    except PublishFailed as exc:
        logger.warning("could not publish %s: %s", detail_type, exc, extra={"batch_id": detail["batch_id"]})


def status_changed(bus: Bus, batch: BatchRecord, previous: str | None) -> None:
    """Report that `batch` moved from `previous` (None for a new batch) to its current status; the runs of a
    batch of several models are its own business, never reported."""
    if batch.status != previous and batch.parent is None:
        _publish(bus, BATCH_STATUS_CHANGED, {**_about(batch), "previous_status": previous})


def completed(bus: Bus, batch: BatchRecord, previous: str) -> None:
    """Report a finished batch: its final status, counts, usage and cost."""
    if batch.parent is not None:
        return
    status_changed(bus, batch, previous)
    usage, cost = batch.usage, batch.cost
    _publish(
        bus,
        BATCH_COMPLETED,
        {
            **_about(batch),
            "request_counts": batch.request_counts.model_dump(),
            "usage": {**usage.model_dump(), "total_tokens": usage.total_tokens} if usage else None,
            "cost": {
                "value": float(cost.total),
                "currency": "usd",
                "input": float(cost.input),
                "output": float(cost.output),
            }
            if cost
            else None,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
        },
    )
