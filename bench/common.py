"""What the benchmarks share: an out-of-process AWS emulator, synthetic batch files, memory readings."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from batchgw.devstack import DevStack, StackNames
from shared import ids
from shared.files import blob_key
from shared.records import BatchInputInfo, BatchRecord, Counts, FileRecord, ModelBounds
from shared.routing import BUILTIN_DEV, Deployment
from shared.storage.ports import FileStore


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's server in its own process on 127.0.0.1, so its memory is not counted as ours."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/moto-api/", timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)
    try:
        yield url
    finally:
        process.kill()
        process.wait(timeout=10)


def use_stack(endpoint: str, config: str = BUILTIN_DEV) -> DevStack:
    """Point this process at `endpoint` and provision a fresh stack there, as `batchgw dev` would."""
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    suffix = uuid.uuid4().hex[:8]
    stack = DevStack(config=config, names=StackNames(f"bench-{suffix}", f"bench-{suffix}", f"bench-{suffix}"))
    stack.configure()
    stack.provision()
    return stack


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> float:
    """Reset this process's peak resident memory to its current value (Linux); returns that value in MB."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    return _status_kb("VmHWM") / 1e3


def peak_rss_mb() -> float:
    """This process's peak resident memory since the last reset, in MB."""
    return _status_kb("VmHWM") / 1e3


def chat_request(i: int, model: str, pad: int) -> bytes:
    return orjson.dumps(
        {
            "custom_id": f"request-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "max_tokens": 256,
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": f"Question {i}: " + "x" * pad},
                ],
            },
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def chat_output(i: int, model: str, pad: int) -> bytes:
    body = {
        "id": f"chatcmpl-{i}",
        "object": "chat.completion",
        "created": 1_795_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": f"Answer {i}: " + "y" * pad},
            }
        ],
        "usage": {
            "prompt_tokens": 40 + i % 50,
            "completion_tokens": 20 + i % 30,
            "total_tokens": 60 + i % 50 + i % 30,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
    }
    return orjson.dumps(
        {
            "id": f"batch_req_{i}",
            "custom_id": f"request-{i}",
            "response": {"status_code": 200, "request_id": f"req_{i}", "body": body},
            "error": None,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def write_lines(path: Path, *, kind: str, lines: int, total_mb: float, model: str = "gpt-4o-mini") -> int:
    """Write a synthetic batch input (`kind="input"`) or provider output file of about `total_mb` MB."""
    make = chat_request if kind == "input" else chat_output
    overhead = len(make(0, model, 0))
    pad = max(0, int(total_mb * 1e6 / lines) - overhead)
    with path.open("wb") as out:
        for i in range(lines):
            out.write(make(i, model, pad))
    return path.stat().st_size


def put_input_file(files: FileStore, *, model: str, line_count: int) -> str:
    """A batch input file's record, as validation would leave it (its content is never read here)."""
    file_id = ids.new_id(ids.FILE)
    bounds = ModelBounds(lines=line_count)
    info = BatchInputInfo(line_count=line_count, endpoint="/v1/chat/completions", models={model: bounds})
    files.put(
        FileRecord(
            id=file_id,
            owner="master",
            purpose="batch",
            filename="in.jsonl",
            bytes=1,
            created_at=int(time.time()),
            s3_key=blob_key(file_id),
            batch_input=info,
        )
    )
    return file_id


def batch_record(file_id: str, deployment: Deployment, line_count: int, **fields: Any) -> BatchRecord:
    """A batch of `line_count` requests from `file_id` on `deployment`, with `fields` set."""
    now = int(time.time())
    return BatchRecord.model_validate(
        {
            "id": ids.new_id(ids.BATCH),
            "owner": "master",
            "endpoint": "/v1/chat/completions",
            "input_file_id": file_id,
            "created_at": now,
            "expires_at": now + 86400,
            "model": deployment.name,
            "deployment": deployment.key,
            "request_counts": Counts(total=line_count),
            **fields,
        }
    )
