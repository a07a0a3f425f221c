"""The poller under its Lambda's deadline: a hanging provider never stops the others, and no tick outlives it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from starlette.types import Receive, Scope, Send

from batchgw.devstack import LambdaContext, import_handler, scheduled_event
from shared.records import BatchRecord, Counts
from tests.fakes.servers import serve_in_thread
from tests.integration.conftest import TERMINAL, Stack, batch, batch_lines, started

TIMEOUT_SECONDS = 8.0


async def hang(scope: Scope, receive: Receive, send: Send) -> None:
    """A provider that takes every request and never answers."""
    await asyncio.sleep(3600)


@pytest.fixture
def hanging() -> Iterator[str]:
    with serve_in_thread(hang) as url:
        yield url


@pytest.fixture
def extra_routes(hanging: str) -> str:
    # the defaults that used to outlive the poller: 60 s per call, 3 retries
    return f"""
  - name: hanging
    provider: openai
    api_base: {hanging}/v1
    api_key: x
"""


def seed_hanging(stack: Stack, count: int) -> list[str]:
    """`count` batches already running on the hanging deployment."""
    (deployment,) = stack.rt.routing.deployments_for("hanging")
    file_id = stack.api.post(
        "/v1/files",
        headers=stack.auth(),
        data={"purpose": "batch"},
        files={"file": ("h.jsonl", batch_lines(1, "hanging"))},
    ).json()["id"]
    ids = []
    for n in range(count):
        now = int(time.time())
        record = BatchRecord(
            id=f"batch_{n:028x}",
            owner="master",
            endpoint="/v1/chat/completions",
            input_file_id=file_id,
            created_at=now,
            expires_at=now + 86400,
            model="hanging",
            deployment=deployment.key,
            request_counts=Counts(total=1),
            status="in_progress",
            provider_refs={"batch_id": f"batch_up_{n}"},
            rejected=0,
            updated_at=now,
        )
        stack.rt.batch_store.admit(record, max_budget=None)
        ids.append(record.id)
    return ids


def test_a_hanging_provider_stops_no_healthy_batch_and_no_tick_outlives_its_deadline(stack: Stack) -> None:
    # Given 100 active batches: 50 on a provider that hangs, 50 on one that answers
    seed_hanging(stack, 50)
    healthy = [started(stack, batch_lines(1, prefix=f"h{n}")) for n in range(50)]
    stack.deliver("SubmitterFunction")
    poller = import_handler("functions.poller.app.handler")

    # When the poller ticks under an 8-second Lambda timeout until the healthy ones are done (a few ticks
    # on an idle machine; the bound leaves room for a loaded one)
    ticks: list[float] = []
    for _ in range(20):
        began = time.monotonic()
        poller(scheduled_event(), LambdaContext("PollerFunction", timeout_seconds=TIMEOUT_SECONDS))
        ticks.append(time.monotonic() - began)
        stack.deliver("CompletionFunction")
        if all(batch(stack, b)["status"] in TERMINAL for b in healthy):
            break
        time.sleep(0.5)

    # Then every healthy batch ended, and every tick returned before its deadline
    assert all(batch(stack, b)["status"] == "completed" for b in healthy)
    assert max(ticks) < TIMEOUT_SECONDS, ticks
