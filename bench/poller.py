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
from shared.context import get_context
from shared.polling import poll_batches

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
    ctx = get_context()
    deployment = ctx.routing.models[0]
    file_id = put_input_file(ctx.table, model=deployment.name, line_count=10)
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
        ctx.table.create_batch(record)


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
            ctx = get_context()
            timings = []
            for _ in range(runs):
                started = time.perf_counter()
                outcomes = poll_batches(ctx)
                timings.append(time.perf_counter() - started)
                assert outcomes["progressed"] == BATCHES, outcomes
    finally:
        provider.terminate()
        provider.wait(timeout=10)
    print(orjson.dumps({"batches": BATCHES, "seconds": timings, "concurrency": ctx.settings.poll_concurrency}).decode())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
