"""One poller invocation over N running batches on one deployment whose list and retrieve answer in 100 ms.

Run as `python -m bench.poller AWS_ENDPOINT EMULATOR_PID BATCHES TICKS`; prints one JSON result. The batches sit in the
work index as `admit` and the submitter leave them; the poller's real handler runs with a scheduled event,
as the schedule invokes it. Before each tick the slow provider moves one batch in ten a step forward, so a
tick writes a tenth of the batches (a batch's counts change about every ten minutes) and leaves the rest
unwritten, as the poller writes only what changed. The fan-out threshold is raised above N, so one
invocation polls them all (bench/fanout.py measures the fan-out).

Per tick: seconds, the CPU seconds of the poller and of the emulator within them, provider calls (list pages
and retrieves), DynamoDB calls. A first tick is metered for its cost, its deadline lifted so that it polls
every batch: DynamoDB request units (bench/metering.py) and everything else it asks of AWS.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from batchgw.devstack import scheduled_event
from bench.common import Emulator, SlowProvider, seed_running, slow_provider, use_stack
from bench.metering import AwsMeter, functions
from shared.runtime import runtime

CHANGED_EVERY = 10  # the provider moves one batch in ten between two ticks
# a deployment's key is read from Secrets Manager once per five minutes by a warm poller (shared/secret_refs.py)
SECRET_CALLS_PER_TICK = 0.2
# the metered tick's deadline: the meter's own reads slow it, and its units must not depend on how far it got
METERED_TIMEOUT_S = 900
# what template.yaml gives the functions (LogLevel's default; custom metrics on), so logs weigh what they will
FUNCTION_LOGGING = {"POWERTOOLS_LOG_LEVEL": "INFO", "POWERTOOLS_METRICS_DISABLED": "false"}
STEPS = 1000  # requests per batch, one done per step: no batch ends during the benchmark


def routing(provider: SlowProvider, spaces: int) -> str:
    """A routing file with one OpenAI-compatible deployment per provider space (`slow-0`, `slow-1`, ...)."""
    lines = ["models:"]
    for n in range(spaces):
        lines.append(
            f"  - {{name: slow-{n}, provider: openai, api_base: '{provider.api_base(f'd{n}')}', api_key: x,"
            " timeout: 10, max_retries: 2}"
        )
    return "\n".join(lines) + "\n"


def seed(provider: SlowProvider, spaces: int, per_space: int, in_table: int | None = None) -> None:
    """`per_space` running batches on each deployment at its provider, and in the table (only the first
    `in_table` deployments' batches, if given)."""
    rt = runtime()
    for n in range(spaces):
        made = provider.seed(f"d{n}", per_space, total=STEPS, steps=STEPS)
        if in_table is None or n < in_table:
            seed_running(rt.settings.table_name, rt.routing.models[n], made, total=STEPS)


def scheduled_tick(meter: AwsMeter, timeout_s: int | None = None) -> dict[str, Any]:
    """One scheduled invocation of the poller, metered: it counts a Scheduler invocation too."""
    meter.add("scheduler_invocations", 1, "PollerFunction")
    outcomes: dict[str, Any] = meter.invoke("PollerFunction", scheduled_event(), timeout_s=timeout_s)
    return outcomes


class TickClock:
    """The provider calls, poller CPU and emulator CPU a tick takes."""

    def __init__(self, provider: SlowProvider, emulator: Emulator) -> None:
        self._provider, self._emulator = provider, emulator
        self._calls, self._cpu, self._emulator_cpu = provider.calls(), time.process_time(), emulator.cpu_seconds()

    def figures(self, meter: AwsMeter) -> dict[str, Any]:
        calls, dynamodb = self._provider.calls() - self._calls, meter.dynamodb_calls()
        return {
            "seconds": sum(i.ms for i in meter.invocations) / 1000,
            "cpu_seconds": time.process_time() - self._cpu,
            "emulator_cpu_seconds": self._emulator.cpu_seconds() - self._emulator_cpu,
            "invocations": len(meter.invocations),
            "list": calls["list"],
            "retrieve": calls["retrieve"],
            "dynamodb_writes": dynamodb["UpdateItem"] + dynamodb["TransactWriteItems"] + dynamodb["PutItem"],
            "dynamodb_queries": dynamodb["Query"],
            "dynamodb_gets": dynamodb["GetItem"],
        }


def main(emulator: Emulator, batches: int, ticks: int) -> None:
    os.environ.update({"BATCHGW_FANOUT_THRESHOLD": str(10 * batches), **FUNCTION_LOGGING})
    with slow_provider() as provider, tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir) / "routing.yaml"
        config.write_text(routing(provider, 1))
        use_stack(emulator.url, str(config))
        seed(provider, 1, batches)
        meter = AwsMeter(runtime().settings.table_name, units_on=False)
        meter.install()
        # metered first, while exactly one batch in ten has moved since it was seeded
        meter.units_on = True
        provider.advance("d0", CHANGED_EVERY)
        scheduled_tick(meter, METERED_TIMEOUT_S)
        usage = meter.usage()
        meter.units_on = False
        timed = []
        for _ in range(ticks):
            provider.advance("d0", CHANGED_EVERY)
            meter.reset()
            clock = TickClock(provider, emulator)
            outcomes = scheduled_tick(meter)
            timed.append(clock.figures(meter) | {"outcomes": outcomes})
    # the metered tick is slowed by the meter's own reads: its Lambda time is the timed ticks' median
    poller = functions()["PollerFunction"]
    usage["lambda_gb_seconds"] = statistics.median(t["seconds"] for t in timed) * poller.memory_mb / 1024
    usage["secrets_api_calls"] = SECRET_CALLS_PER_TICK
    print(orjson.dumps({"batches": batches, "ticks": timed, "tick_usage": usage}).decode())


if __name__ == "__main__":
    main(Emulator(sys.argv[1], int(sys.argv[2])), int(sys.argv[3]), int(sys.argv[4]))
