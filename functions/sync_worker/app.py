"""The sync worker function: on a message of the sync queue, run that chunk of a sync deployment's batch
(shared.sync_worker). Its event source delivers one message at a time; the queue's FIFO message groups
keep each deployment within its `max_concurrency`."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.deadline import Deadline
from shared.logs import log_metrics, share_config
from shared.providers.sync import ChunkTask
from shared.runtime import runtime
from shared.settings import SettingsError
from shared.sync_worker import SyncWorker
from shared.tracing import traced

logger = Logger(service="batchgw")
metrics = Metrics(namespace="batchgw", service="sync_worker")
share_config(logger)

# seconds of the invocation kept for writing the chunk's part and queueing what is left of it
RESERVE_SECONDS = 10.0


def compose() -> SyncWorker:
    rt = runtime()
    if rt.sync_queue is None:
        raise SettingsError("the sync worker needs BATCHGW_SYNC_QUEUE")
    return SyncWorker(rt.blobs, rt.routing, rt.providers, rt.sync_queue)


@traced
@log_metrics(metrics)
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext, *, worker: SyncWorker | None = None) -> dict[str, int]:
    deadline = Deadline.of_invocation(context, reserve=RESERVE_SECONDS)
    outcomes: Counter[str] = Counter()
    for record in event["Records"]:
        task = ChunkTask.parse(record["body"])
        logger.append_keys(batch_id=task.batch_id, chunk=task.chunk)
        outcomes[(worker or compose()).run(task, deadline)] += 1
    for outcome, count in outcomes.items():
        metrics.add_metric(name=f"Chunks{outcome.capitalize()}", unit=MetricUnit.Count, value=count)
    return dict(outcomes)
