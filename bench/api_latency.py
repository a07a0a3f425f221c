"""API latency through the local stack: `GET /v1/batches/{id}` over HTTP to `batchgw dev`, and its memory.

Run as `python -m bench.api_latency AWS_ENDPOINT EMULATOR_PID CALLS`; prints one JSON result. `batchgw dev` runs in its
own process as users run it (against the emulator in a third), so each call takes the local stack's whole
HTTP path: loopback HTTP, uvicorn, the router that stands in for API Gateway, the batches function's
FastAPI app, a virtual key checked against the table and the batch read with it (one request), the JSON answer. (What
it leaves out, Lambda's Mangum adapter and Powertools wrappers, costs about a millisecond; what it adds,
HTTP and uvicorn, about as much.) CALLS calls each for a completed batch and for one not yet completed,
with the dev stack's resident memory before and after each series, and the CPU time the emulator spent
answering them (its DynamoDB read of two items a call: time that DynamoDB, not batchgw, takes in AWS). Before the
calls, once the stack has submitted the running batch, the share of a core the idle dev stack and the
emulator use over IDLE_SECONDS.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from batchgw.devstack import DevStack
from bench.common import Emulator, aws_environment, dev_stack, process_cpu_seconds, write_lines
from bench.completion import prepare
from shared.auth import MASTER, Principal
from shared.batches import Batches
from shared.files import Files
from shared.keys import Keys
from shared.routing import BUILTIN_DEV
from shared.runtime import runtime
from shared.wire import CreateBatchRequest

WARMUP = 50
IDLE_SECONDS = 10
SETTLE_SECONDS = 60


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1e3
    raise RuntimeError("no VmRSS")


def batches(endpoint: str, workdir: Path) -> tuple[str, dict[str, str]]:
    """A virtual key, and a completed batch and a running one of it, in the dev stack's table."""
    os.environ.update(aws_environment(endpoint))
    DevStack(config=BUILTIN_DEV).configure()  # this process on the dev stack's resources
    rt = runtime()
    key = Keys(rt.key_store).create(MASTER, name="bench", models=None, max_budget=None)
    caller = Principal(owner=key.record.id)
    files = Files(rt.file_store, rt.blobs)
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini"}}\n'
    file = files.store(caller.owner, purpose="batch", filename="a.jsonl", chunks=[line], expires_after=None)
    request = CreateBatchRequest(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    running = Batches(rt.batch_store, rt.key_store, rt.claim_store, files, rt.bus, rt.routing).create(caller, request)
    output = workdir / "out.jsonl"
    write_lines(output, kind="output", lines=100, total_mb=0.1)
    completion, completed = prepare(output, owner=caller.owner)
    assert completion.complete(completed) is not None
    return key.secret, {"completed": completed, "running": running.id}


def series(client: httpx.Client, batch_id: str, calls: int, pid: int, emulator: Emulator) -> dict[str, Any]:
    for _ in range(WARMUP):
        client.get(f"/batches/{batch_id}").raise_for_status()
    before, emulator_cpu, own_cpu = rss_mb(pid), emulator.cpu_seconds(), process_cpu_seconds(pid)
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        response = client.get(f"/batches/{batch_id}")
        timings.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    status = response.json()["status"]
    timings.sort()
    return {
        "status": status,
        "p50_ms": statistics.median(timings),
        "p99_ms": timings[int(len(timings) * 0.99) - 1],
        "emulator_ms": (emulator.cpu_seconds() - emulator_cpu) * 1000 / calls,
        "batchgw_ms": (process_cpu_seconds(pid) - own_cpu) * 1000 / calls,
        "rss_before_mb": before,
        "rss_after_mb": rss_mb(pid),
    }


def idle(pid: int, emulator: Emulator) -> dict[str, float]:
    """The share of a core the dev stack and the emulator use while nobody calls (its delivery workers waiting
    for events; the schedule is off)."""
    own, aws = process_cpu_seconds(pid), emulator.cpu_seconds()
    time.sleep(IDLE_SECONDS)
    return {
        "batchgw_pct": (process_cpu_seconds(pid) - own) * 100 / IDLE_SECONDS,
        "emulator_pct": (emulator.cpu_seconds() - aws) * 100 / IDLE_SECONDS,
    }


def submitted(client: httpx.Client, batch_id: str) -> None:
    """Wait until the stack has submitted `batch_id` (its last event handled), so that idling is idle."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while client.get(f"/batches/{batch_id}").raise_for_status().json()["status"] == "validating":
        if time.monotonic() > deadline:
            raise RuntimeError(f"batch {batch_id} not submitted within {SETTLE_SECONDS} s")
        time.sleep(0.2)


def main(emulator: Emulator, calls: int) -> None:
    with tempfile.TemporaryDirectory() as workdir, dev_stack(emulator.url) as (base_url, pid):
        secret, ids = batches(emulator.url, Path(workdir))
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {secret}"}) as client:
            submitted(client, ids["running"])
            idling = idle(pid, emulator)
            result = {name: series(client, batch_id, calls, pid, emulator) for name, batch_id in ids.items()}
    print(orjson.dumps({"calls": calls, "idle": idling, **result}).decode())


if __name__ == "__main__":
    main(Emulator(sys.argv[1], int(sys.argv[2])), int(sys.argv[3]))
