"""The fan-out: 100,000 running batches across 8 deployments, one scheduled poll.

Run as `python -m bench.fanout AWS_ENDPOINT EMULATOR_PID DEPLOYMENTS PER_DEPLOYMENT RUNS`; prints one JSON
result. With the same handlers as in AWS: the scheduled invocation reads the work index until it finds
more work than one invocation should poll (`fanout_threshold`, 5,000 by default) and sends one SQS message
per deployment (a range of the work index); each message then invokes the poller with the SQS event
Lambda's event source mapping sends.

The provider holds every batch (its list pages show all of a deployment's batches, newest first), but the
table holds only the first deployment's eighth of them, and only that deployment's invocation runs: the
eight invocations run in parallel in AWS (the queue's MaximumConcurrency is 8) on equal shares, and seeding
and polling the other seven in moto on this 2-core machine would take many minutes without telling anything
more. So: the scheduled invocation as it is, one deployment's invocation as each of the eight is, and the
tick is theirs in sequence. As in bench/poller.py, one batch in ten moves between two ticks; the first tick
is metered for its cost, with its deadline lifted: what a complete poll of the deployment takes.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import orjson

from batchgw.devstack import sqs_event
from bench.common import Emulator, slow_provider, use_stack
from bench.metering import AwsMeter, functions
from bench.poller import (
    CHANGED_EVERY,
    FUNCTION_LOGGING,
    METERED_TIMEOUT_S,
    SECRET_CALLS_PER_TICK,
    TickClock,
    routing,
    scheduled_tick,
    seed,
)
from shared.runtime import runtime
from shared.storage.batch_store import work_key
from shared.storage.queue import work_range

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

# what Lambda's event source mapping asks of SQS for each message it hands to the function: the receive that
# found it and the delete once the function succeeded (batch size 1)
ESM_REQUESTS_PER_MESSAGE = 2


def handed_out(queue_url: str, count: int) -> list[MessageTypeDef]:
    """The scheduled run's messages, taken off the queue (by an uncounted client: Lambda's pollers do this)."""
    sqs = boto3.session.Session().client("sqs")
    found: list[MessageTypeDef] = []
    while len(found) < count:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in answer.get("Messages", []):
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            found.append(message)
    return found


def one_tick(
    meter: AwsMeter, clock_of: Callable[[], TickClock], queue_url: str, timeout_s: int | None = None
) -> list[dict[str, Any]]:
    """The scheduled invocation, then the first deployment's: each one's figures, with the usage the meter
    counted."""
    meter.reset()
    clock = clock_of()
    outcomes = scheduled_tick(meter, timeout_s)
    deployments = runtime().routing.models
    assert outcomes.get("fanned_out") == len(deployments), outcomes
    scheduled = clock.figures(meter) | {"outcomes": outcomes, "usage": meter.usage()}
    ours = work_key(deployments[0].key, "batch")
    (message,) = [m for m in handed_out(queue_url, len(deployments)) if work_range(m["Body"]).holds(ours)]
    meter.reset()
    clock = clock_of()
    answer = meter.invoke("PollerFunction", sqs_event(message, queue_url), timeout_s=timeout_s)
    assert not answer["batchItemFailures"], answer
    (finished,) = [orjson.loads(x) for x in meter.last_log if b'"poll finished"' in x]
    return [scheduled, clock.figures(meter) | {"outcomes": finished["outcomes"], "usage": meter.usage()}]


def main(emulator: Emulator, deployments: int, per_deployment: int, runs: int) -> None:
    os.environ.update(FUNCTION_LOGGING)
    with slow_provider() as provider, tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir) / "routing.yaml"
        config.write_text(routing(provider, deployments))
        queue_url = use_stack(emulator.url, str(config))["PollerFunction:SQS"]
        seed(provider, deployments, per_deployment, in_table=1)
        meter = AwsMeter(runtime().settings.table_name, units_on=False)
        meter.install()

        def advance_all() -> None:
            for n in range(deployments):
                provider.advance(f"d{n}", CHANGED_EVERY)

        # metered first, while exactly one batch in ten has moved since it was seeded: a deferred batch would
        # carry its moves over to later ticks
        advance_all()
        meter.units_on = True
        complete = one_tick(meter, lambda: TickClock(provider, emulator), queue_url, METERED_TIMEOUT_S)
        scheduled, handed = (figures.pop("usage") for figures in complete)
        meter.units_on = False
        timed = []
        for _ in range(runs):
            advance_all()
            timed.append(one_tick(meter, lambda: TickClock(provider, emulator), queue_url))
    # the metered tick is slowed by the meter's own reads: its Lambda time is the timed ticks' median
    memory_gb = functions()["PollerFunction"].memory_mb / 1024
    scheduled["lambda_gb_seconds"] = statistics.median(s["seconds"] for s, _ in timed) * memory_gb
    handed["lambda_gb_seconds"] = statistics.median(s["seconds"] for _, s in timed) * memory_gb
    handed["sqs_requests"] = handed.get("sqs_requests", 0) + ESM_REQUESTS_PER_MESSAGE
    handed["secrets_api_calls"] = SECRET_CALLS_PER_TICK * deployments
    for figures in (f for tick in timed for f in tick):
        del figures["usage"]
    result = {
        "deployments": deployments,
        "batches": deployments * per_deployment,
        "invocations": deployments,
        "scheduled": [s for s, _ in timed],
        "deployment": [s for _, s in timed],
        "complete_deployment": complete[1],
        "scheduled_usage": scheduled,
        "deployment_usage": handed,
    }
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main(Emulator(sys.argv[1], int(sys.argv[2])), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
