"""Upload end to end: a batch file through /v1/uploads into `batchgw dev` with the openai SDK.

Run as `python -m bench.upload AWS_ENDPOINT FILE...`; prints one JSON result per file: wall time and
the dev stack's peak RSS growth during the upload. The dev stack runs as users run it, but against an
AWS emulator in another process (`AWS_ENDPOINT_URL`), so the memory measured is batchgw's own.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import openai
import orjson

from bench.common import dev_stack

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
