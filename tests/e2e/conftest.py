"""End-to-end harness: `batchgw dev` as a user runs it (a subprocess, on loopback) and the official openai SDK.

The dev stack routes some models to the in-process mock provider and others to a fake OpenAI upstream
that this test process serves over real HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.fakes.openai_upstream import API_KEY, FakeOpenAI
from tests.fakes.servers import serve_in_thread

DEV_KEY = "sk-batchgw-dev"
TERMINAL = {"completed", "failed", "expired", "cancelled"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def upstream() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI(processing_seconds=0.5)
    with serve_in_thread(fake.app) as url:
        yield fake, url


@contextmanager
def dev_stack(workdir: Path, routing: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`batchgw dev` as a user runs it, on a free port with `routing` as its routing file; yields the base URL.

    `env` adds environment variables, e.g. AWS_ENDPOINT_URL to share an AWS emulator with the test.
    """
    config = workdir / "routing.yaml"
    config.write_text(routing)
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BATCHGW_"))}
    environment |= env or {}
    log_path = workdir / "dev.log"
    command = [
        str(Path(sys.executable).parent / "batchgw"),
        "dev",
        "--port",
        str(port),
        "--config",
        str(config),
        "--poll-interval",
        "0.3",
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"batchgw dev exited: {log_path.read_text()}")
            try:
                if httpx.get(f"{base}/health", timeout=1).json() == {"status": "ok"}:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("batchgw dev did not become ready")
            time.sleep(0.1)
        try:
            yield f"{base}/v1"
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="session")
def base_url(tmp_path_factory: pytest.TempPathFactory, upstream: tuple[FakeOpenAI, str]) -> Iterator[str]:
    _, url = upstream
    routing = f"""
models:
  - {{name: gpt-4o-mini, provider: mock, delay: 1}}
  - {{name: claude-sonnet-4-5, provider: mock, delay: 1}}
  - {{name: mock-slow, provider: mock, model: gpt-4o-mini, delay: 60}}
  - {{name: upstream-gpt-4o-mini, provider: openai, model: gpt-4o-mini, api_base: "{url}/v1", api_key: {API_KEY}}}
  - {{name: fake-expire, provider: openai, api_base: "{url}/v1", api_key: {API_KEY},
      pricing: {{input_per_mtok: 1.0, output_per_mtok: 4.0}}}}
"""
    with dev_stack(tmp_path_factory.mktemp("dev"), routing) as base:
        yield base


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url, api_key=DEV_KEY) as sdk:
        yield sdk


def wait_for(check: Callable[[], bool], *, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the stack")
        time.sleep(0.2)


def wait_terminal(client: openai.OpenAI, batch_id: str, *, timeout: float = 60.0) -> openai.types.Batch:
    found: list[openai.types.Batch] = []

    def terminal() -> bool:
        found.append(client.batches.retrieve(batch_id))
        return found[-1].status in TERMINAL

    wait_for(terminal, timeout=timeout)
    return found[-1]


def write_batch(
    path: Path, n: int, model: str, *, prefix: str = "req-", text: Callable[[int], str] = lambda i: f"q{i}"
) -> Path:
    """A batch input file of `n` chat requests (custom_ids `{prefix}{i}`); returns its path."""
    with path.open("wb") as out:
        for i in range(n):
            body = {"model": model, "messages": [{"role": "user", "content": text(i)}]}
            line = {"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
            out.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
    return path
