"""The poller function: on its EventBridge schedule, move every unfinished batch forward (shared.polling)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.deadline import Deadline
from shared.files import Files
from shared.polling import Poller
from shared.runtime import runtime

logger = Logger(service="batchgw")
tracer = Tracer(service="batchgw")
metrics = Metrics(namespace="batchgw", service="poller")
copy_config_to_registered_loggers(source_logger=logger)

# seconds of the invocation kept for reporting after the last provider call
RESERVE_SECONDS = 3.0


def compose() -> Poller:
    rt = runtime()
    files = Files(rt.file_store, rt.blobs)
    return Poller(rt.batch_store, files, rt.bus, rt.providers, rt.routing, rt.settings)


@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext, *, poller: Poller | None = None) -> dict[str, int]:
    outcomes = (poller or compose()).tick(Deadline.of_invocation(context, reserve=RESERVE_SECONDS))
    scheduled = event.get("time")
    if isinstance(scheduled, str):
        lag = time.time() - datetime.fromisoformat(scheduled.replace("Z", "+00:00")).timestamp()
        metrics.add_metric(name="PollLagSeconds", unit=MetricUnit.Seconds, value=max(0.0, lag))
    metrics.add_metric(name="BatchesPolled", unit=MetricUnit.Count, value=outcomes.total())
    metrics.add_metric(name="BatchesEnded", unit=MetricUnit.Count, value=outcomes["ended"])
    metrics.add_metric(name="PollErrors", unit=MetricUnit.Count, value=outcomes["error"] + outcomes["provider_error"])
    metrics.add_metric(name="UnreadableItems", unit=MetricUnit.Count, value=outcomes["unreadable"])
    logger.info("poll finished", extra={"outcomes": dict(outcomes)})
    return dict(outcomes)
