"""Upload end to end: a batch file through /v1/uploads into `batchgw dev` with the openai SDK.

Run as `python -m bench.upload AWS_ENDPOINT FILE...`; prints one JSON result per file: wall time and
the dev stack's peak RSS growth during the upload. The dev stack runs as users run it, but against an
AWS emulator in another process (`AWS_ENDPOINT_URL`), so the memory measured is batchgw's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import orjson

from bench.common import free_port

PART_BYTES = 4_000_000


def _hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def _reset_hwm(pid: int) -> int:
    with open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")
    return _hwm_kb(pid)


@contextmanager
def dev_stack(endpoint: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MALLOC_ARENA_MAX": "1",
    }
    command = [str(Path(sys.executable).parent / "batchgw"), "dev", "--port", str(port), "--poll-interval", "60"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/health", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("batchgw dev did not start") from None
            time.sleep(0.1)
    try:
        yield f"{base}/v1", process.pid
    finally:
        process.terminate()
        process.wait(timeout=15)


def main(endpoint: str, paths: list[Path]) -> None:
    with dev_stack(endpoint) as (base_url, pid), openai.OpenAI(base_url=base_url, api_key="sk-batchgw-dev") as client:
        for path in paths:
            baseline = _reset_hwm(pid)
            started = time.perf_counter()
            upload = client.uploads.upload_file_chunked(
                file=path, mime_type="application/jsonl", purpose="batch", part_size=PART_BYTES
            )
            seconds = time.perf_counter() - started
            assert upload.status == "completed", upload
            size = path.stat().st_size
            print(
                orjson.dumps(
                    {
                        "bytes": size,
                        "seconds": seconds,
                        "mb_per_s": size / 1e6 / seconds,
                        "server_rss_growth_mb": (_hwm_kb(pid) - baseline) / 1e3,
                    }
                ).decode(),
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1], [Path(p) for p in sys.argv[2:]])
