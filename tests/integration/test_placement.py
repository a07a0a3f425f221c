"""Deployment placement: several entries with one name are deployments of one model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.faults import Faults
from tests.fakes.openai_upstream import API_KEY, FakeOpenAI
from tests.fakes.servers import serve_in_thread
from tests.integration.conftest import Stack, batch_lines, record


@pytest.fixture
def broken() -> Iterator[tuple[FakeOpenAI, str]]:
    """An OpenAI-compatible deployment that answers every call with a 500."""
    fake = FakeOpenAI(faults=Faults(error_rate=1.0))
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def extra_routes(broken: tuple[FakeOpenAI, str], upstream: tuple[FakeOpenAI, str]) -> str:
    (_, broken_url), (_, good_url) = broken, upstream
    return f"""
  - {{name: gpt-4o-mini-placed, id: east, provider: openai, model: gpt-4o-mini, api_base: "{broken_url}/v1",
      api_key: {API_KEY}, timeout: 1, max_retries: 0, weight: 1000}}
  - {{name: gpt-4o-mini-placed, id: west, provider: openai, model: gpt-4o-mini, api_base: "{good_url}/v1",
      api_key: {API_KEY}, timeout: 1, max_retries: 0, weight: 1}}
"""


def create(stack: Stack) -> str:
    file_id = stack.api.post(
        "/v1/files",
        headers=stack.auth(),
        data={"purpose": "batch"},
        files={"file": ("in.jsonl", batch_lines(3, model="gpt-4o-mini-placed"))},
    ).json()["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch_id: str = stack.api.post("/v1/batches", headers=stack.auth(), json=body).json()["id"]
    return batch_id


def test_failing_deployment_at_submit_moves_the_batch_to_the_next_one_and_it_stays_there(
    stack: Stack, broken: tuple[FakeOpenAI, str], upstream: tuple[FakeOpenAI, str]
) -> None:
    (bad, _), (good, _) = broken, upstream
    batch_id = create(stack)
    assert record(stack, batch_id).deployment == "east"  # weight 1000 to 1
    stack.deliver("SubmitterFunction")
    placed = record(stack, batch_id)
    assert placed.deployment == "west" and placed.tried_deployments == ("east",)
    assert placed.status == "in_progress" and bad.batches == {} and len(good.batches) == 1

    # retrieve and cancel go to the deployment the batch runs on, never back to the failed one
    calls_before = sum(bad.calls.values())
    good.processing_seconds = 60
    try:
        assert stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth()).status_code == 200
        stack.run_until(lambda: record(stack, batch_id).status == "cancelled")
    finally:
        good.processing_seconds = 0.3
    (provider_batch,) = good.batches
    assert good.calls[f"POST /v1/batches/{provider_batch}/cancel"] == 1
    assert good.calls[f"GET /v1/batches/{provider_batch}"] >= 1
    assert sum(bad.calls.values()) == calls_before


def test_placement_avoids_a_deployment_that_failed_lately(stack: Stack) -> None:
    first = create(stack)
    stack.deliver("SubmitterFunction")
    assert record(stack, first).deployment == "west"
    # the next batches go straight to the healthy deployment despite its low weight
    later = [create(stack) for _ in range(3)]
    assert {record(stack, b).deployment for b in later} == {"west"}
    assert all(record(stack, b).tried_deployments == () for b in later)


def test_all_deployments_failing_fails_the_batch_with_the_providers_message(
    stack: Stack, upstream: tuple[FakeOpenAI, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.runtime import reset_runtime

    monkeypatch.setenv("BATCHGW_MAX_REDRIVES", "2")
    reset_runtime()
    good, _ = upstream
    good.faults.error_rate = 1.0
    try:
        batch_id = create(stack)
        stack.run_until(lambda: record(stack, batch_id).status == "failed", rounds=150)
    finally:
        good.faults.error_rate = 0.0
    failed = stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth()).json()
    assert failed["status"] == "failed" and "HTTP 500" in failed["errors"]["data"][0]["message"]
