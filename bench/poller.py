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

from bench.common import free_port, use_stack
from shared import ids
from shared.context import get_context
from shared.files import blob_key
from shared.polling import poll_batches
from shared.records import BatchInputInfo, BatchRecord, Counts, FileRecord

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
    now = int(time.time())
    file_id = ids.new_id(ids.FILE)
    info = BatchInputInfo(line_count=10, endpoint="/v1/chat/completions", model=deployment.name)
    ctx.table.put_file(
        FileRecord(
            id=file_id,
            owner="master",
            purpose="batch",
            filename="in.jsonl",
            bytes=1,
            created_at=now,
            s3_key=blob_key(file_id),
            batch_input=info,
        )
    )
    for n in range(count):
        batch_id = ids.new_id(ids.BATCH)
        record = BatchRecord(
            id=batch_id,
            owner="master",
            endpoint="/v1/chat/completions",
            input_file_id=file_id,
            created_at=now,
            expires_at=now + 86400,
            model=deployment.name,
            deployment=deployment.key,
            status="in_progress",
            in_progress_at=now,
            request_counts=Counts(total=10),
            provider_refs={"batch_id": f"batch_up_{n}"},
            updated_at=now,
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
