"""Claude through the gateway as a user sees it: the official openai SDK against `batchgw dev`, routed to a
fake Anthropic Message Batches API over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.e2e.conftest import DEV_KEY, dev_stack, wait_for, wait_terminal
from tests.fakes.anthropic_upstream import API_KEY, Billed, FakeAnthropic
from tests.fakes.servers import serve_in_thread

pytestmark = pytest.mark.e2e

# Anthropic's Message Batches prices for Claude Sonnet 4.5, USD per million tokens
SONNET_45_BATCH = {"input": 1.50, "output": 7.50, "cache_read": 0.15, "cache_write_5m": 1.875}
# the expiring route's pricing override
OVERRIDE = {"input": 1.0, "output": 4.0, "cached": 0.1}


@pytest.fixture(scope="module")
def anthropic() -> Iterator[tuple[FakeAnthropic, str]]:
    fake = FakeAnthropic(processing_seconds=0.5)
    fake.model_seconds["claude-slow"] = 600.0
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory, anthropic: tuple[FakeAnthropic, str]) -> Iterator[openai.OpenAI]:
    _, url = anthropic
    routing = f"""
models:
  - {{name: claude-sonnet-4-5, provider: anthropic, api_base: "{url}", api_key: {API_KEY}, timeout: 5}}
  - {{name: claude-expiring, provider: anthropic, model: claude-expire, api_base: "{url}", api_key: {API_KEY},
      pricing: {{input_per_mtok: {OVERRIDE["input"]}, output_per_mtok: {OVERRIDE["output"]},
      cached_input_per_mtok: {OVERRIDE["cached"]}}}}}
  - {{name: claude-slow, provider: anthropic, api_base: "{url}", api_key: {API_KEY}}}
"""
    with (
        dev_stack(tmp_path_factory.mktemp("anthropic-dev"), routing) as base,
        openai.OpenAI(base_url=base, api_key=DEV_KEY) as client,
    ):
        yield client


def write_batch(path: Path, model: str, custom_ids: list[str]) -> Path:
    path.write_bytes(
        b"".join(
            orjson.dumps(
                {
                    "custom_id": custom_id,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": model, "messages": [{"role": "user", "content": f"q {custom_id}"}]},
                },
                option=orjson.OPT_APPEND_NEWLINE,
            )
            for custom_id in custom_ids
        )
    )
    return path


def create(client: openai.OpenAI, path: Path) -> openai.types.Batch:
    file = client.files.create(file=path, purpose="batch")
    return client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")


def jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in client.files.content(file_id).content.splitlines()] if file_id else []


def cost_of(batch: openai.types.Batch) -> dict[str, Any]:
    cost: dict[str, Any] = (batch.model_extra or {})["cost"]
    return cost


def test_claude_batch_completes_with_openai_lines_usage_and_anthropic_batch_price(
    sdk: openai.OpenAI, tmp_path: Path, anthropic: tuple[FakeAnthropic, str]
) -> None:
    ids = [f"done-{i}" for i in range(5)] + ["done-fail-1", "done with spaces"]
    batch = create(sdk, write_batch(tmp_path / "in.jsonl", "claude-sonnet-4-5", ids))
    assert batch.status == "validating"

    done = wait_terminal(sdk, batch.id)

    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (7, 6, 1)
    output = jsonl(sdk, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(i for i in ids if "fail" not in i)
    bodies = {line["custom_id"]: line["response"]["body"] for line in output}
    assert all(body["object"] == "chat.completion" for body in bodies.values())
    assert bodies["done-3"]["choices"][0]["message"]["content"] == "answer done-3"
    (error,) = jsonl(sdk, done.error_file_id)
    assert error["custom_id"] == "done-fail-1" and error["response"]["status_code"] == 400
    # usage and cost from what the fake billed, at Anthropic's published batch prices
    fake, _ = anthropic
    billed: Billed = fake.batch_with("done-0").billed
    prompt = billed.input_tokens + billed.cache_read_input_tokens + billed.cache_creation_input_tokens
    assert done.usage is not None and done.usage.input_tokens == prompt
    assert done.usage.input_tokens_details.cached_tokens == billed.cache_read_input_tokens
    assert done.usage.output_tokens == billed.output_tokens
    expected = (
        billed.input_tokens * SONNET_45_BATCH["input"]
        + billed.cache_read_input_tokens * SONNET_45_BATCH["cache_read"]
        + billed.cache_creation_input_tokens * SONNET_45_BATCH["cache_write_5m"]
        + billed.output_tokens * SONNET_45_BATCH["output"]
    ) / 1_000_000
    assert cost_of(done)["value"] == pytest.approx(expected, rel=1e-9) and cost_of(done)["currency"] == "usd"


def test_expired_claude_batch_keeps_and_prices_its_partial_results(
    sdk: openai.OpenAI, tmp_path: Path, anthropic: tuple[FakeAnthropic, str]
) -> None:
    batch = create(sdk, write_batch(tmp_path / "in.jsonl", "claude-expiring", [f"exp-{i}" for i in range(4)]))
    done = wait_terminal(sdk, batch.id)
    assert done.status == "expired" and done.expired_at is not None and done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 2)
    assert sorted(line["custom_id"] for line in jsonl(sdk, done.output_file_id)) == ["exp-0", "exp-1"]
    assert {line["error"]["code"] for line in jsonl(sdk, done.error_file_id)} == {"batch_expired"}
    fake, _ = anthropic
    billed = fake.batch_with("exp-0").billed
    # the override has no cache-write rate: written tokens are prompt tokens at its input rate
    expected = (
        (billed.input_tokens + billed.cache_creation_input_tokens) * OVERRIDE["input"]
        + billed.cache_read_input_tokens * OVERRIDE["cached"]
        + billed.output_tokens * OVERRIDE["output"]
    ) / 1_000_000
    assert expected > 0 and cost_of(done)["value"] == pytest.approx(expected, rel=1e-9)


def test_cancelled_claude_batch_moves_through_cancelling_to_cancelled(
    sdk: openai.OpenAI, tmp_path: Path, anthropic: tuple[FakeAnthropic, str]
) -> None:
    batch = create(sdk, write_batch(tmp_path / "in.jsonl", "claude-slow", [f"slow-{i}" for i in range(4)]))
    wait_for(lambda: sdk.batches.retrieve(batch.id).status == "in_progress")

    assert sdk.batches.cancel(batch.id).status == "cancelling"
    done = wait_terminal(sdk, batch.id)

    assert done.status == "cancelled" and done.cancelled_at is not None and done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 2)
    assert len(jsonl(sdk, done.output_file_id)) == 2
    assert {line["error"]["code"] for line in jsonl(sdk, done.error_file_id)} == {"batch_cancelled"}
    fake, _ = anthropic
    assert fake.batch_with("slow-0").cancel_initiated_at is not None
    with pytest.raises(openai.BadRequestError):
        sdk.batches.cancel(batch.id)
