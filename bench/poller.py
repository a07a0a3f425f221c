"""Poller fan-out: one poll of 1,000 active batches against a provider that answers in 100 ms.

Run as `python -m bench.poller AWS_ENDPOINT RUNS`; prints the wall time of each poll as JSON.
Sequential polling would take 100 s; the poller refreshes `poll_concurrency` batches at a time.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from bench.common import batch_record, free_port, put_input_file, use_stack
from functions.poller.app import compose
from shared.deadline import Deadline
from shared.runtime import runtime

BATCHES = 1000


def start_provider() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.slow_provider", str(port)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/v1/batches/warmup", timeout=2)
            return process, url
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.1)


def seed(count: int) -> None:
    rt = runtime()
    deployment = rt.routing.models[0]
    file_id = put_input_file(rt.file_store, model=deployment.name, line_count=10)
    for n in range(count):
        now = int(time.time())
        record = batch_record(
            file_id,
            deployment,
            10,
            status="in_progress",
            in_progress_at=now,
            updated_at=now,
            provider_refs={"batch_id": f"batch_up_{n}"},
        )
        rt.batch_store.admit(record, max_budget=None)


def main(endpoint: str, runs: int) -> None:
    provider, url = start_provider()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            config = Path(workdir) / "routing.yaml"
            config.write_text(
                f"models:\n  - {{name: slow, provider: openai, api_base: '{url}/v1', api_key: x, timeout: 10}}\n"
            )
            use_stack(endpoint, str(config))
            seed(BATCHES)
            poller = compose()
            timings = []
            for _ in range(runs):
                started = time.perf_counter()
                outcomes = poller.tick(Deadline.after(600))
                timings.append(time.perf_counter() - started)
                assert outcomes["progressed"] == BATCHES, outcomes
    finally:
        provider.terminate()
        provider.wait(timeout=10)
    print(
        orjson.dumps(
            {"batches": BATCHES, "seconds": timings, "concurrency": runtime().settings.poll_concurrency}
        ).decode()
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
