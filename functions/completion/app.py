"""The completion function: on "Batch Ended", write the result files and book usage and cost once."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.completion import Completion
from shared.deadline import Deadline, within
from shared.logs import log_metrics, share_config
from shared.runtime import runtime
from shared.storage.bus import BatchEvent
from shared.tracing import annotate, traced

logger = Logger(service="batchgw")
metrics = Metrics(namespace="batchgw", service="completion")
share_config(logger)

_STATUS_METRIC = {
    "completed": "BatchesCompleted",
    "failed": "BatchesFailed",
    "expired": "BatchesExpired",
    "cancelled": "BatchesCancelled",
}


def compose() -> Completion:
    rt = runtime()
    return Completion(rt.batch_store, rt.blobs, rt.bus, rt.providers, rt.routing)


@traced
@log_metrics(metrics)
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext, *, completion: Completion | None = None) -> dict[str, Any]:
    detail = BatchEvent.model_validate(event).detail
    logger.set_correlation_id(detail.batch_id)
    annotate("batch_id", detail.batch_id)
    with within(Deadline.of_invocation(context, reserve=10)):
        done = (completion or compose()).complete(detail.batch_id, without_results=detail.without_results)
    if done is None:
        metrics.add_metric(name="CompletionsSkipped", unit=MetricUnit.Count, value=1)
        return {"batch_id": detail.batch_id, "booked": False}
    if done.run:  # a run of a batch of several models: its batch is counted when it completes
        metrics.add_metric(name="RunsCompleted", unit=MetricUnit.Count, value=1)
        return {"batch_id": detail.batch_id, "booked": True, "status": done.status}
    metrics.add_metric(name=_STATUS_METRIC[done.status], unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="RequestsSucceeded", unit=MetricUnit.Count, value=done.counts.completed)
    metrics.add_metric(name="RequestsFailed", unit=MetricUnit.Count, value=done.counts.failed)
    metrics.add_metric(name="CostUSD", unit=MetricUnit.NoUnit, value=float(done.cost.total))
    if not done.priced:
        metrics.add_metric(name="UnpricedBatches", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="ResultLinesUnreadable", unit=MetricUnit.Count, value=done.unreadable)
    logger.info(
        "batch completed",
        extra={
            "status": done.status,
            "completed": done.counts.completed,
            "failed": done.counts.failed,
            "cost_usd": str(done.cost.total),
        },
    )
    return {"batch_id": detail.batch_id, "booked": True, "status": done.status}
