"""What the benchmarks share: an out-of-process AWS emulator, the dev stack and the slow provider in their
own processes, synthetic batch files and batch items, memory readings."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import boto3
import httpx
import orjson

from batchgw.devstack import DevStack, StackNames
from shared import ids
from shared.files import blob_key
from shared.records import BatchInputInfo, BatchRecord, Counts, FileRecord, ModelBounds
from shared.routing import BUILTIN_DEV, Deployment
from shared.runtime import runtime
from shared.storage.batch_store import DynamoBatchStore
from shared.storage.dynamo import Dynamo
from shared.storage.ports import FileStore

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

_BATCH_WRITE = 25  # items per BatchWriteItem, the most DynamoDB takes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Emulator:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """The CPU time the emulator's process has used so far (it is CPU-bound: its share of a wall time)."""
        return process_cpu_seconds(self.pid)


def process_cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process `pid` has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def moto_server(*, stock: bool = False) -> Iterator[Emulator]:
    """moto's server in its own process on 127.0.0.1, so its memory is not counted as ours: as `batchgw dev`
    runs it, with the DynamoDB hot paths of bench/emulator.py made linear; `stock`: moto as it ships."""
    port = free_port()
    command = ["moto.server", "-H", "127.0.0.1", "-p", str(port)] if stock else ["bench.emulator", str(port)]
    process = subprocess.Popen(
        [sys.executable, "-m", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/moto-api/", process, "the moto server", 30)
    try:
        yield Emulator(url, process.pid)
    finally:
        process.kill()
        process.wait(timeout=10)


def aws_environment(endpoint: str) -> dict[str, str]:
    """What points boto3 at the emulator at `endpoint`."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def use_stack(endpoint: str, config: str = BUILTIN_DEV) -> dict[str, str]:
    """Point this process at `endpoint` and provision a fresh stack there, as `batchgw dev` would; returns
    the functions' delivery queues (DevStack.provision)."""
    os.environ.update(aws_environment(endpoint))
    suffix = uuid.uuid4().hex[:8]
    stack = DevStack(config=config, names=StackNames(f"bench-{suffix}", f"bench-{suffix}", f"bench-{suffix}"))
    stack.configure()
    return stack.provision()


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


# what a prompt reads like (words, numbers, punctuation, line breaks), so that what reads text is timed on text
PROSE = "Summarize the 3 findings below in 120 words; cite each source (e.g. [2], p. 14).\n"


def prose(length: int) -> str:
    return (PROSE * (length // len(PROSE) + 1))[:length]


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
                    {"role": "user", "content": f"Question {i}: " + prose(pad)},
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
    line_bytes = int(total_mb * 1e6 / lines)
    pad = max(0, line_bytes - len(make(0, model, 0)))
    pad = max(0, pad - (len(make(0, model, pad)) - line_bytes))  # less what escaping the text adds
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


def wait_until_up(url: str, process: subprocess.Popen[bytes], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(url, timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.1)


class SlowProvider:
    """bench/slow_provider.py in its own process: the deployments' api_base, and its control routes (called
    with urllib: httpx logs each request, and the functions' loggers would print those)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _control(self, method: str, path: str, **params: int) -> Any:
        request = urllib.request.Request(f"{self.url}{path}?{urllib.parse.urlencode(params)}", method=method)
        with urllib.request.urlopen(request, timeout=120) as answer:
            return orjson.loads(answer.read())

    def api_base(self, space: str) -> str:
        return f"{self.url}/{space}/v1"

    def seed(self, space: str, count: int, *, total: int, steps: int) -> list[str]:
        made: list[str] = self._control("POST", f"/{space}/seed", count=count, total=total, steps=steps)
        return made

    def advance(self, space: str, every: int = 1) -> int:
        moved: int = self._control("POST", f"/{space}/advance", every=every)["moved"]
        return moved

    def calls(self) -> Counter[str]:
        return Counter(self._control("GET", "/calls"))


@contextmanager
def slow_provider(latency: float = 0.1) -> Iterator[SlowProvider]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.slow_provider", str(port), str(latency)])
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/health", process, "the slow provider", 30)
    try:
        yield SlowProvider(url)
    finally:
        process.terminate()
        process.wait(timeout=10)


class _Kept(Dynamo):
    """A table that keeps the item a store's transaction would put first, instead of writing anything."""

    def __init__(self) -> None:
        super().__init__(cast("DynamoDBClient", None), "")
        self.items: list[dict[str, Any]] = []

    def transact(self, ops: Sequence[TransactWriteItemTypeDef]) -> None:
        self.items.append(dict(ops[0]["Put"]["Item"]))


def seed_running(table: str, deployment: Deployment, provider_ids: Sequence[str], *, total: int) -> None:
    """Running batches of `total` requests on `deployment`, one per provider batch of `provider_ids` (oldest
    first): the items `admit` writes, started as the submitter leaves them, written 25 at a time."""
    file_id = put_input_file(runtime().file_store, model=deployment.name, line_count=total)
    kept = _Kept()
    store = DynamoBatchStore(kept)
    now = int(time.time())
    start = now - len(provider_ids)
    for n, provider_id in enumerate(provider_ids):
        # in_progress_at orders them as the provider lists them: the poller sorts them newest first
        record = batch_record(
            file_id,
            deployment,
            total,
            status="in_progress",
            in_progress_at=start + n,
            updated_at=now,
            provider_refs={"input_file_id": "file-seeded", "batch_id": provider_id},
        )
        store.admit(record, max_budget=None)
    items = kept.items
    client = boto3.session.Session().client("dynamodb")
    for first in range(0, len(items), _BATCH_WRITE):
        requests: Any = [{"PutRequest": {"Item": item}} for item in items[first : first + _BATCH_WRITE]]
        while requests:
            requests = client.batch_write_item(RequestItems={table: requests}).get("UnprocessedItems", {}).get(table)


@contextmanager
def dev_stack(endpoint: str, config: str = BUILTIN_DEV) -> Iterator[tuple[str, int]]:
    """`batchgw dev` in its own process against `endpoint`, as users run it (the schedule left idle); yields
    its base URL and process id."""
    port = free_port()
    env = {**os.environ, **aws_environment(endpoint), "MALLOC_ARENA_MAX": "1"}
    command = [str(Path(sys.executable).parent / "batchgw"), "dev", "--port", str(port), "--poll-interval", "3600"]
    command += ["--config", config]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_until_up(f"{base}/health", process, "batchgw dev")
    try:
        yield f"{base}/v1", process.pid
    finally:
        process.terminate()
        process.wait(timeout=15)
