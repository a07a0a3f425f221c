"""Sync deployments through the real handlers and SQS (moto): batchgw runs the batch itself against a fake
OpenAI-compatible endpoint with no batch API, chunk by chunk through the FIFO sync queue and its worker.

The sync queue's messages are delivered by more worker threads than the deployment's max_concurrency, as
Lambda's event source would scale, so only the queue's message groups keep the endpoint within its cap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest

from batchgw.devstack import DevQueue, sqs_event
from tests.fakes.servers import serve_in_thread
from tests.fakes.sync_upstream import API_KEY, COMPLETION_TOKENS, FakeSyncEndpoint
from tests.integration.conftest import TERMINAL, Stack, batch, batch_lines, lines, started

MODEL = "sync-llama"
MAX_CONCURRENCY = 4
INPUT_PER_MTOK, OUTPUT_PER_MTOK = 0.2, 0.6


@pytest.fixture
def endpoint() -> Iterator[tuple[FakeSyncEndpoint, str]]:
    fake = FakeSyncEndpoint()
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def extra_routes(endpoint: tuple[FakeSyncEndpoint, str]) -> str:
    _, url = endpoint
    return f"""
  - name: {MODEL}
    provider: openai
    mode: sync
    model: llama-3.1-8b-instruct
    api_base: {url}/v1
    api_key: {API_KEY}
    max_concurrency: {MAX_CONCURRENCY}
    timeout: 3
    max_retries: 3
    pricing: {{input_per_mtok: {INPUT_PER_MTOK}, output_per_mtok: {OUTPUT_PER_MTOK}}}
"""


@contextmanager
def sync_workers(stack: Stack, count: int) -> Iterator[None]:
    """`count` threads delivering the sync queue's messages to the worker's handler, one message each, as the
    event source mapping does (and as the dev stack does, through DevQueue); a failed invocation is recorded
    in `stack.failures` and its message left."""
    url = stack.queues["SyncWorkerFunction:SQS"]
    stop = threading.Event()

    def deliver() -> None:
        queue = DevQueue(boto3.client("sqs"), url)
        while not stop.is_set():
            messages = queue.receive(1)
            if not messages:
                time.sleep(0.2)
                continue
            try:
                stack.invoke("SyncWorkerFunction", sqs_event(messages[0], url))
            except Exception as exc:
                stack.failures.append(exc)
                continue
            queue.delete(messages[0])

    threads = [threading.Thread(target=deliver, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def run_to_end(stack: Stack, batch_id: str, *, rounds: int = 200) -> list[int]:
    """Run submission, polling and completion until the batch ends; the `completed` counts seen on the way."""
    seen: list[int] = []

    def ended() -> bool:
        current = batch(stack, batch_id)
        if current["status"] == "in_progress":
            seen.append(current["request_counts"]["completed"])
        return current["status"] in TERMINAL

    stack.run_until(ended, rounds=rounds, pause=0.5)
    return seen


def custom_ids_of(stack: Stack, done: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return lines(stack, done["output_file_id"]), lines(stack, done["error_file_id"])


def test_thousand_requests_run_once_each_within_the_cap_despite_429s_and_hangs(
    stack: Stack, endpoint: tuple[FakeSyncEndpoint, str]
) -> None:
    fake, _ = endpoint
    fake.rate_limit_share, fake.hang_share, fake.refuse_share = 0.03, 0.004, 0.01
    batch_id = started(stack, batch_lines(1000, model=MODEL))

    with sync_workers(stack, 2 * MAX_CONCURRENCY):
        progress = run_to_end(stack, batch_id)

    done = batch(stack, batch_id)
    assert done["status"] == "completed" and not stack.failures
    output, errors = custom_ids_of(stack, done)
    assert sorted(line["custom_id"] for line in output + errors) == sorted(f"req-{i}" for i in range(1000))
    refused = len(fake.refused)
    assert refused > 0 and len(fake.rate_limited) > 20 and len(fake.hung) > 0
    assert done["request_counts"] == {"total": 1000, "completed": 1000 - refused, "failed": refused}
    assert {line["response"]["status_code"] for line in errors} == {400}
    assert all(line["response"]["status_code"] == 200 for line in output)
    # the cap held across every worker and batch chunk, and the workers used it
    assert 2 <= fake.peak <= MAX_CONCURRENCY
    # each request answered once; each 429 waited out its Retry-After; the endpoint saw the deployment's model
    assert set(fake.answered.values()) == {1} and len(fake.answered) == 1000 - refused
    assert min(fake.retry_gaps) >= fake.retry_after * 0.95
    assert fake.models == {"llama-3.1-8b-instruct"}
    # progress moved as chunks finished
    assert len(set(progress)) >= 3 and progress == sorted(progress)
    assert done["usage"]["input_tokens"] == fake.prompt_tokens
    assert done["usage"]["output_tokens"] == fake.completion_tokens == COMPLETION_TOKENS * (1000 - refused)
    expected = (fake.prompt_tokens * INPUT_PER_MTOK + fake.completion_tokens * OUTPUT_PER_MTOK) / 1_000_000
    assert done["cost"]["value"] == pytest.approx(expected, rel=1e-9)


def test_cancel_stops_dispatching_and_keeps_what_finished(stack: Stack, endpoint: tuple[FakeSyncEndpoint, str]) -> None:
    fake, _ = endpoint
    fake.delay = 0.05
    batch_id = started(stack, batch_lines(400, model=MODEL))

    with sync_workers(stack, 2 * MAX_CONCURRENCY):
        stack.run_until(lambda: sum(fake.answered.values()) >= 40, rounds=200, complete=False)
        assert stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth()).json()["status"] == "cancelling"
        run_to_end(stack, batch_id)
        calls_at_end = fake.calls.total()
        time.sleep(0.5)  # the workers go on taking the batch's queued chunks
        assert fake.calls.total() == calls_at_end

    done = batch(stack, batch_id)
    assert done["status"] == "cancelled" and not stack.failures
    output, errors = custom_ids_of(stack, done)
    answered = sum(fake.answered.values())
    assert 40 <= answered < 400
    assert sorted(line["custom_id"] for line in output + errors) == sorted(f"req-{i}" for i in range(400))
    assert len(output) == answered and {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    assert done["request_counts"] == {"total": 400, "completed": answered, "failed": 400 - answered}
    assert done["usage"]["output_tokens"] == COMPLETION_TOKENS * answered


def test_expired_batch_stops_and_prices_what_finished(stack: Stack, endpoint: tuple[FakeSyncEndpoint, str]) -> None:
    fake, _ = endpoint
    fake.delay = 0.05
    batch_id = started(stack, batch_lines(400, model=MODEL))

    with sync_workers(stack, 2 * MAX_CONCURRENCY):
        stack.run_until(lambda: sum(fake.answered.values()) >= 40, rounds=200, complete=False)
        boto3.client("dynamodb").update_item(
            TableName=stack.rt.settings.table_name,
            Key={"pk": {"S": f"BATCH#{batch_id}"}, "sk": {"S": "BATCH"}},
            UpdateExpression="SET expires_at = :past",
            ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 3600)}},
        )
        run_to_end(stack, batch_id)

    done = batch(stack, batch_id)
    assert done["status"] == "expired" and not stack.failures
    output, errors = custom_ids_of(stack, done)
    answered = sum(fake.answered.values())
    assert 40 <= answered < 400 and len(output) == answered
    assert sorted(line["custom_id"] for line in output + errors) == sorted(f"req-{i}" for i in range(400))
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}
    expected = (fake.prompt_tokens * INPUT_PER_MTOK + fake.completion_tokens * OUTPUT_PER_MTOK) / 1_000_000
    assert done["cost"]["value"] == pytest.approx(expected, rel=1e-9) and expected > 0
