"""The poller function: on its EventBridge schedule, move every active batch forward (shared.polling)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.context import Context, get_context
from shared.polling import poll_batches

logger = Logger(service="batchgw")
tracer = Tracer(service="batchgw")
metrics = Metrics(namespace="batchgw", service="poller")
copy_config_to_registered_loggers(source_logger=logger)


@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext, *, ctx: Context | None = None) -> dict[str, int]:
    outcomes = poll_batches(ctx or get_context())
    scheduled = event.get("time")
    if isinstance(scheduled, str):
        lag = time.time() - datetime.fromisoformat(scheduled.replace("Z", "+00:00")).timestamp()
        metrics.add_metric(name="PollLagSeconds", unit=MetricUnit.Seconds, value=max(0.0, lag))
    metrics.add_metric(name="BatchesPolled", unit=MetricUnit.Count, value=outcomes.total())
    metrics.add_metric(name="BatchesEnded", unit=MetricUnit.Count, value=outcomes["ended"])
    metrics.add_metric(name="PollErrors", unit=MetricUnit.Count, value=outcomes["error"] + outcomes["provider_error"])
    logger.info("poll finished", extra={"outcomes": dict(outcomes)})
    return dict(outcomes)
