"""The submitter function: on "Batch Created", submit the batch to its provider (shared.submission)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.deadline import Deadline, within
from shared.logs import log_metrics, share_config
from shared.runtime import runtime
from shared.storage.bus import BatchEvent
from shared.submission import Submission
from shared.tracing import annotate, traced

logger = Logger(service="batchgw")
metrics = Metrics(namespace="batchgw", service="submitter")
share_config(logger)


def compose() -> Submission:
    rt = runtime()
    return Submission(rt.batch_store, rt.claim_store, rt.blobs, rt.bus, rt.providers, rt.routing, rt.settings)


@traced
@log_metrics(metrics)
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext, *, submission: Submission | None = None) -> dict[str, str]:
    detail = BatchEvent.model_validate(event).detail
    logger.set_correlation_id(detail.batch_id)
    annotate("batch_id", detail.batch_id)
    metrics.add_metric(name="SubmissionsAttempted", unit=MetricUnit.Count, value=1)
    with within(Deadline.of_invocation(context, reserve=5)):
        (submission or compose()).submit(detail.batch_id)
    return {"batch_id": detail.batch_id}
