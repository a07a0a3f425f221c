"""The poller function: on its EventBridge schedule, move every unfinished batch forward (shared.polling);
on a message of its queue, the range of the work index (one deployment's batches) the scheduled run handed out."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.deadline import Deadline
from shared.files import Files
from shared.logs import log_metrics, share_config
from shared.polling import Poller
from shared.runtime import runtime
from shared.storage.queue import work_range
from shared.tracing import traced

logger = Logger(service="batchgw")
metrics = Metrics(namespace="batchgw", service="poller")
share_config(logger)

# seconds of the invocation kept for reporting after the last provider call
RESERVE_SECONDS = 3.0


def compose() -> Poller:
    rt = runtime()
    files = Files(rt.file_store, rt.blobs)
    return Poller(rt.batch_store, files, rt.bus, rt.providers, rt.routing, rt.settings, rt.work_queue)


def _handed_out(poller: Poller, records: list[dict[str, Any]], deadline: Deadline) -> tuple[Counter[str], list[str]]:
    """Poll the ranges queue messages name, each on its own; the ids of the messages whose range failed."""
    outcomes: Counter[str] = Counter()
    failed = []
    for record in records:
        try:
            outcomes.update(poller.tick(deadline, work_range(record["body"])))
        except Exception:
            logger.exception("polling a range failed; it is retried", extra={"message_id": record["messageId"]})
            failed.append(record["messageId"])
    return outcomes, failed


@traced
@log_metrics(metrics)
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext, *, poller: Poller | None = None) -> dict[str, Any]:
    deadline = Deadline.of_invocation(context, reserve=RESERVE_SECONDS)
    records = event.get("Records")
    if records:  # from the queue: ranges a scheduled run handed out
        outcomes, failed = _handed_out(poller or compose(), records, deadline)
        response: dict[str, Any] = {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}
    else:
        outcomes = (poller or compose()).tick(deadline)
        response = dict(outcomes)
        scheduled = event.get("time")
        if isinstance(scheduled, str):
            lag = time.time() - datetime.fromisoformat(scheduled.replace("Z", "+00:00")).timestamp()
            metrics.add_metric(name="PollLagSeconds", unit=MetricUnit.Seconds, value=max(0.0, lag))
    metrics.add_metric(name="BatchesPolled", unit=MetricUnit.Count, value=outcomes.total())
    metrics.add_metric(name="BatchesEnded", unit=MetricUnit.Count, value=outcomes["ended"])
    metrics.add_metric(name="PollErrors", unit=MetricUnit.Count, value=outcomes["error"] + outcomes["provider_error"])
    metrics.add_metric(name="UnreadableItems", unit=MetricUnit.Count, value=outcomes["unreadable"])
    logger.info("poll finished", extra={"outcomes": dict(outcomes)})
    return response
