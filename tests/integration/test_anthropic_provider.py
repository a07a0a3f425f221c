"""The anthropic adapter against a fake Message Batches API over loopback, through the real handlers.

Expected costs come from what the fake billed and Anthropic's published batch prices, not from our pricing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest

from shared.providers.anthropic import AnthropicProvider
from shared.providers.base import ResultLine, SubmitRequest
from shared.routing import Deployment
from tests.fakes.anthropic_upstream import API_KEY, Billed, FakeAnthropic, usage_for
from tests.fakes.journal import MemoryJournal, custom_ids, submit_request
from tests.integration.conftest import (
    Stack,
    batch,
    batch_lines,
    end_under_faults,
    finish,
    lines,
    record,
    start,
    started,
)

MODEL = "claude-via-anthropic"
EXPIRING = "claude-expiring"
MTOK = Decimal(1_000_000)
# Anthropic's Message Batches prices for Claude Sonnet 4.5, USD per million tokens (half the standard ones)
SONNET_45_BATCH_INPUT = Decimal("1.50")
SONNET_45_BATCH_OUTPUT = Decimal("7.50")
SONNET_45_BATCH_CACHE_READ = Decimal("0.15")
SONNET_45_BATCH_CACHE_WRITE_5M = Decimal("1.875")
# the expiring deployment's pricing override in the routing file
OVERRIDE_INPUT, OVERRIDE_OUTPUT, OVERRIDE_CACHED = Decimal("1.0"), Decimal("4.0"), Decimal("0.1")


@pytest.fixture
def extra_routes(anthropic: tuple[FakeAnthropic, str]) -> str:
    _, url = anthropic
    return f"""
  - {{name: {MODEL}, provider: anthropic, model: claude-sonnet-4-5, api_base: "{url}", api_key: {API_KEY},
      timeout: 1, max_retries: 4}}
  - {{name: {EXPIRING}, provider: anthropic, model: claude-expire, api_base: "{url}", api_key: {API_KEY},
      timeout: 1, pricing: {{input_per_mtok: {OVERRIDE_INPUT}, output_per_mtok: {OVERRIDE_OUTPUT},
      cached_input_per_mtok: {OVERRIDE_CACHED}}}}}
"""


def chat_line(custom_id: str, model: str = MODEL, **body: Any) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": f"question {custom_id}"}], **body}
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def provider_batch_id(stack: Stack, batch_id: str) -> str:
    record = stack.rt.batch_store.get(batch_id)
    assert record is not None
    return record.provider_refs["batch_id"]


def prompt_tokens(billed: Billed) -> int:
    return billed.input_tokens + billed.cache_read_input_tokens + billed.cache_creation_input_tokens


def sonnet_batch_cost(billed: Billed) -> Decimal:
    return (
        billed.input_tokens * SONNET_45_BATCH_INPUT
        + billed.cache_read_input_tokens * SONNET_45_BATCH_CACHE_READ
        + billed.cache_creation_input_tokens * SONNET_45_BATCH_CACHE_WRITE_5M
        + billed.output_tokens * SONNET_45_BATCH_OUTPUT
    ) / MTOK


def test_anthropic_batch_completes_with_openai_lines_usage_and_batch_price(
    stack: Stack, anthropic: tuple[FakeAnthropic, str]
) -> None:
    # Given 4 good requests, 2 the provider fails and one whose custom_id Anthropic would refuse
    fake, _ = anthropic
    odd_id = "order #7 / réponse"
    content = batch_lines(4, model=MODEL) + batch_lines(2, model=MODEL, prefix="fail") + chat_line(odd_id)
    batch_id = started(stack, content)

    finish(stack, batch_id)

    # Then it completes with OpenAI output lines for the right custom_ids, and the failures in the error file
    done = batch(stack, batch_id)
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 7, "completed": 5, "failed": 2}
    output, errors = lines(stack, done["output_file_id"]), lines(stack, done["error_file_id"])
    assert sorted(line["custom_id"] for line in output) == sorted([odd_id, "req-0", "req-1", "req-2", "req-3"])
    for line in output:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"].startswith("msg_")
        body = line["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == "claude-sonnet-4-5"
        assert body["choices"][0]["message"]["content"].startswith("answer ")
        assert body["choices"][0]["finish_reason"] == "stop"
    by_id = {line["custom_id"]: line for line in output}
    assert by_id["req-2"]["response"]["body"]["choices"][0]["message"]["content"] == "answer req-2"
    assert sorted(line["custom_id"] for line in errors) == ["fail-0", "fail-1"]
    for line in errors:
        # the provider's answer as it gave it, as OpenAI's error lines carry it, and the contract's error object
        assert line["response"]["status_code"] == 400
        assert line["response"]["body"]["error"]["type"] == "invalid_request_error"
        assert line["error"]["code"] == "invalid_request"
        assert line["error"]["message"].endswith(line["response"]["body"]["error"]["message"])

    # and its usage is what Anthropic billed, priced at Anthropic's batch rates, cache reads and writes included
    billed = fake.batches[provider_batch_id(stack, batch_id)].billed
    assert billed.succeeded == 5 and billed.cache_read_input_tokens and billed.cache_creation_input_tokens
    assert done["usage"]["input_tokens"] == prompt_tokens(billed)
    assert done["usage"]["input_tokens_details"]["cached_tokens"] == billed.cache_read_input_tokens
    assert done["usage"]["output_tokens"] == billed.output_tokens
    assert done["usage"]["total_tokens"] == prompt_tokens(billed) + billed.output_tokens
    expected = sonnet_batch_cost(billed)
    assert done["cost"]["value"] == pytest.approx(float(expected), rel=1e-9) and done["cost"]["currency"] == "usd"
    (row,) = stack.rt.key_store.spend("master")
    assert float(row.cost) == pytest.approx(float(expected), rel=1e-9) and row.batches == 1


def test_chat_features_reach_anthropic_as_valid_params_and_come_back_in_openai_shape(
    stack: Stack, anthropic: tuple[FakeAnthropic, str]
) -> None:
    # Given requests using system prompts, images, tools, tool results, stop, user and both JSON modes
    fake, _ = anthropic
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    verdict = {"name": "verdict", "schema": {"type": "object", "properties": {"custom_id": {"type": "string"}}}}
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    image = [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
    ]
    content = b"".join(
        [
            chat_line("plain", max_completion_tokens=2, temperature=0.1, stop=["END"], user="u-1", seed=3, n=1),
            chat_line("image", messages=[{"role": "user", "content": image}]),
            chat_line("tools", messages=history, tools=[weather], tool_choice="required"),
            chat_line("schema", response_format={"type": "json_schema", "json_schema": verdict}),
            chat_line("object", response_format={"type": "json_object"}, max_tokens=100),
        ]
    )
    batch_id = started(stack, content)

    finish(stack, batch_id)

    done = batch(stack, batch_id)
    assert done["status"] == "completed", done
    sent = {r["custom_id"]: r["params"] for r in fake.batches[provider_batch_id(stack, batch_id)].requests}
    assert sent["plain"]["max_tokens"] == 2 and sent["plain"]["metadata"] == {"user_id": "u-1"}
    assert sent["tools"]["system"] == "Be brief." and sent["tools"]["tool_choice"] == {"type": "any"}
    assert "JSON object" in sent["object"]["system"]
    messages = {
        line["custom_id"]: line["response"]["body"]["choices"][0] for line in lines(stack, done["output_file_id"])
    }
    assert messages["plain"]["finish_reason"] == "length"
    (call,) = messages["tools"]["message"]["tool_calls"]
    assert messages["tools"]["finish_reason"] == "tool_calls" and call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"custom_id": "tools"}
    assert orjson.loads(messages["schema"]["message"]["content"]) == {"custom_id": "schema"}
    assert messages["schema"]["finish_reason"] == "stop" and "tool_calls" not in messages["schema"]["message"]


def test_request_anthropic_cannot_take_fails_alone_and_the_rest_runs(
    stack: Stack, anthropic: tuple[FakeAnthropic, str]
) -> None:
    fake, _ = anthropic
    audio = [{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]
    batch_id = started(
        stack,
        chat_line("ok")
        + chat_line("speech-1", messages=[{"role": "user", "content": audio}])
        # one answer, billed, where three were asked for would be a silent change: refused instead
        + chat_line("three-choices", n=3)
        + chat_line("with-logprobs", logprobs=True, top_logprobs=2),
    )
    finish(stack, batch_id)
    done = batch(stack, batch_id)
    assert done["status"] == "completed" and done["errors"] is None
    assert done["request_counts"] == {"total": 4, "completed": 1, "failed": 3}
    assert [line["custom_id"] for line in lines(stack, done["output_file_id"])] == ["ok"]
    refused = {line["custom_id"]: line["error"] for line in lines(stack, done["error_file_id"])}
    assert {error["code"] for error in refused.values()} == {"invalid_request"}
    assert "input_audio" in refused["speech-1"]["message"]
    assert "n=3: Anthropic's Messages API answers one choice per request" in refused["three-choices"]["message"]
    assert "log probabilities" in refused["with-logprobs"]["message"]
    # only the request Anthropic can take was sent
    (sent,) = fake.batches.values()
    assert [r["custom_id"] for r in sent.requests] == ["ok"]


def test_expired_batch_keeps_and_prices_its_partial_results(stack: Stack, anthropic: tuple[FakeAnthropic, str]) -> None:
    fake, _ = anthropic
    batch_id = started(stack, batch_lines(4, model=EXPIRING))
    finish(stack, batch_id)
    expired = batch(stack, batch_id)
    assert expired["status"] == "expired" and expired["expired_at"] is not None
    assert expired["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    output, errors = lines(stack, expired["output_file_id"]), lines(stack, expired["error_file_id"])
    assert sorted(line["custom_id"] for line in output) == ["req-0", "req-1"]
    assert sorted(line["custom_id"] for line in errors) == ["req-2", "req-3"]
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}
    assert all(line["response"] is None for line in errors)
    # the override has no cache-write rate: written tokens are prompt tokens at its input rate
    billed = fake.batches[provider_batch_id(stack, batch_id)].billed
    assert expired["usage"]["input_tokens"] == prompt_tokens(billed) > 0
    expected = (
        (billed.input_tokens + billed.cache_creation_input_tokens) * OVERRIDE_INPUT
        + billed.cache_read_input_tokens * OVERRIDE_CACHED
        + billed.output_tokens * OVERRIDE_OUTPUT
    ) / MTOK
    assert expired["cost"]["value"] == pytest.approx(float(expected), rel=1e-9)


def test_cancel_goes_through_cancelling_to_cancelled_with_partial_results(
    stack: Stack, anthropic: tuple[FakeAnthropic, str]
) -> None:
    fake, _ = anthropic
    fake.processing_seconds = 60
    batch_id = started(stack, batch_lines(4, model=MODEL))
    stack.deliver("SubmitterFunction")
    assert batch(stack, batch_id)["status"] == "in_progress"
    assert stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth()).json()["status"] == "cancelling"
    stack.poll()  # sends the cancel; Anthropic is still canceling
    assert batch(stack, batch_id)["status"] == "cancelling"

    finish(stack, batch_id)

    cancelled = batch(stack, batch_id)
    assert cancelled["status"] == "cancelled" and cancelled["cancelled_at"] is not None
    assert cancelled["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    assert len(lines(stack, cancelled["output_file_id"])) == 2
    assert {line["error"]["code"] for line in lines(stack, cancelled["error_file_id"])} == {"batch_cancelled"}
    provider_batch = provider_batch_id(stack, batch_id)
    assert fake.calls[f"POST /v1/messages/batches/{provider_batch}/cancel"] == 1
    assert cancelled["cost"]["value"] == pytest.approx(float(sonnet_batch_cost(fake.batches[provider_batch].billed)))


def test_lost_create_answer_is_found_again_among_same_size_batches_and_no_second_batch_is_made(
    stack: Stack, anthropic: tuple[FakeAnthropic, str]
) -> None:
    # Given another batch of the same size, just made on the same deployment
    fake, _ = anthropic
    earlier = started(stack, batch_lines(3, model=MODEL, prefix="a"))
    stack.deliver("SubmitterFunction")

    # When the next create's answer is lost (it comes after the route's 1 s timeout)
    fake.slow_create_seconds = 2.0
    batch_id = started(stack, batch_lines(3, model=MODEL, prefix="b"))
    finish(stack, earlier, batch_id)

    # Then the retry takes the batch that create made, not the other one, and makes no third
    assert fake.calls["POST /v1/messages/batches"] == 2 and len(fake.batches) == 2
    assert provider_batch_id(stack, batch_id) != provider_batch_id(stack, earlier)
    for prefix, done in (("a", batch(stack, earlier)), ("b", batch(stack, batch_id))):
        assert done["status"] == "completed"
        output = lines(stack, done["output_file_id"])
        assert sorted(line["custom_id"] for line in output) == [f"{prefix}-{i}" for i in range(3)]


def test_embeddings_batch_routed_to_anthropic_is_refused_at_creation(
    stack: Stack, anthropic: tuple[FakeAnthropic, str]
) -> None:
    fake, _ = anthropic
    line = {"custom_id": "e1", "method": "POST", "url": "/v1/embeddings", "body": {"model": MODEL, "input": "hi"}}
    response = start(stack, orjson.dumps(line), endpoint="/v1/embeddings")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_endpoint" and error["param"] == "endpoint"
    assert "provider anthropic" in error["message"] and "/v1/embeddings" in error["message"]
    assert stack.api.get("/v1/batches", headers=stack.auth()).json()["data"] == []
    assert not fake.calls


def test_provider_faults_still_end_every_batch_right_and_bill_once(
    stack: Stack, anthropic: tuple[FakeAnthropic, str]
) -> None:
    # a third of calls answer 500, 529 overloaded, 429 with retry-after, or hang past the 1 s timeout
    fake, _ = anthropic
    fake.faults.error_rate = 0.1
    fake.faults.overloaded_rate = 0.08
    fake.faults.rate_limit_rate = 0.08
    fake.faults.hang_rate = 0.08
    fake.faults.hang_seconds = 1.5
    # 8 batches: their statuses come from list pages, so fewer calls meet a fault than one retrieve each would
    batch_ids, row = end_under_faults(stack, fake.calls, MODEL, batches=8, kinds=("500", "529", "429", "hang"))
    assert len(fake.batches) == 8
    expected = sum(sonnet_batch_cost(fake.batches[provider_batch_id(stack, b)].billed) for b in batch_ids)
    assert float(row.cost) == pytest.approx(float(expected), rel=1e-9)


# --- finding a lost create again, on the adapter itself ---------------------------------------------


def request_of(n: int, prefix: str = "req") -> SubmitRequest:
    return submit_request(f"batch_{prefix}", "claude-sonnet-4-5", batch_lines(n, model=MODEL, prefix=prefix))


def made_elsewhere(fake: FakeAnthropic, n: int) -> str:
    """A batch of `n` requests that reached Anthropic without its id reaching us."""
    requests = [
        {
            "custom_id": f"x-{i}",
            "params": {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "q"}]},
        }
        for i in range(n)
    ]
    return fake.create(requests).id


@pytest.fixture
def adapter(anthropic: tuple[FakeAnthropic, str]) -> Iterator[AnthropicProvider]:
    _, url = anthropic
    deployment = Deployment(
        name=MODEL, provider="anthropic", model="claude-sonnet-4-5", api_base=url, timeout=1, max_retries=1
    )
    provider = AnthropicProvider(deployment, API_KEY)
    yield provider
    provider.close()


def test_resumed_submission_adopts_the_batch_its_lost_create_made(
    adapter: AnthropicProvider, anthropic: tuple[FakeAnthropic, str]
) -> None:
    # Given a submission that crashed after its create reached Anthropic
    fake, _ = anthropic
    journal = MemoryJournal(create_started=str(int(time.time())))
    lost = made_elsewhere(fake, 3)
    made_elsewhere(fake, 4)  # same time, another size: not ours

    adapter.submit(request_of(3), journal)

    assert journal.refs["batch_id"] == lost and fake.calls["POST /v1/messages/batches"] == 0


def test_resumed_submission_does_not_take_a_batch_older_than_its_create(
    adapter: AnthropicProvider, anthropic: tuple[FakeAnthropic, str]
) -> None:
    fake, _ = anthropic
    made_elsewhere(fake, 3)
    journal = MemoryJournal(create_started=str(int(time.time()) + 120))  # started well after that batch was made
    adapter.submit(request_of(3), journal)
    assert fake.calls["POST /v1/messages/batches"] == 1 and len(fake.batches) == 2
    assert journal.refs["batch_id"] == max(fake.batches)


def test_resumed_submission_creates_anew_rather_than_guess_between_two_candidates(
    adapter: AnthropicProvider, anthropic: tuple[FakeAnthropic, str], caplog: pytest.LogCaptureFixture
) -> None:
    fake, _ = anthropic
    first, second = made_elsewhere(fake, 3), made_elsewhere(fake, 3)
    journal = MemoryJournal(create_started=str(int(time.time())))
    with caplog.at_level(logging.WARNING):
        adapter.submit(request_of(3), journal)
    assert journal.refs["batch_id"] not in (first, second) and len(fake.batches) == 3
    assert "several provider batches" in caplog.text


def test_a_batch_the_gateway_recorded_for_another_batch_is_never_adopted(
    adapter: AnthropicProvider, anthropic: tuple[FakeAnthropic, str]
) -> None:
    # the claims are the table's: shared by every process, so another Lambda's batch is never taken
    fake, _ = anthropic
    claims: dict[str, str] = {}
    other = MemoryJournal("batch_other", claims)
    adapter.submit(request_of(3, prefix="other"), other)
    journal = MemoryJournal("batch_mine", claims, create_started=str(int(time.time())))
    adapter.submit(request_of(3), journal)
    assert journal.refs["batch_id"] != other.refs["batch_id"] and len(fake.batches) == 2


def test_results_map_hashed_custom_ids_back_and_carry_the_billed_usage(
    adapter: AnthropicProvider, anthropic: tuple[FakeAnthropic, str]
) -> None:
    fake, _ = anthropic
    ids = ["plain-id", "with space", "x" * 300]
    content = b"".join(chat_line(custom_id) for custom_id in ids)
    request = submit_request("batch_x", "claude-sonnet-4-5", content)
    journal = MemoryJournal()
    adapter.submit(request, journal)
    while not adapter.refresh(journal.refs).terminal:
        time.sleep(0.05)
    results = {
        line.custom_id: line
        for line in adapter.results(journal.refs, custom_ids(content))
        if isinstance(line, ResultLine)
    }
    assert sorted(results) == sorted(ids)
    assert all(line.succeeded for line in results.values())
    sent = fake.batches[journal.refs["batch_id"]].custom_ids
    assert sent[0] == "plain-id" and all(len(s) <= 64 for s in sent)
    billed = [usage_for(i) for i in range(3)]
    usages = [line.usage for line in results.values() if line.usage is not None]
    assert sum(u.output_tokens for u in usages) == sum(b["output_tokens"] for b in billed)
    assert sum(u.cached_tokens for u in usages) == sum(b["cache_read_input_tokens"] for b in billed)
    assert sum(u.cache_write_tokens for u in usages) == sum(b["cache_creation_input_tokens"] for b in billed)
    assert sum(u.input_tokens for u in usages) == sum(
        b["input_tokens"] + b["cache_read_input_tokens"] + b["cache_creation_input_tokens"] for b in billed
    )


def test_running_batches_are_polled_from_list_pages_without_retrieving_each(
    stack: Stack, anthropic: tuple[FakeAnthropic, str]
) -> None:
    # Given 30 message batches running at Anthropic, and 5 made outside the gateway among them
    fake, _ = anthropic
    fake.processing_seconds = 60.0
    batch_ids = []
    for i in range(30):
        batch_ids.append(started(stack, batch_lines(1, model=MODEL, prefix=f"b{i}")))
        stack.deliver("SubmitterFunction")
        if i % 6 == 0:
            fake.create([{"custom_id": f"other{i}", "params": {"model": "claude-sonnet-4-5", "max_tokens": 1}}])
    assert all(record(stack, b).status == "in_progress" for b in batch_ids)
    before = fake.calls.copy()

    # When the poller ticks
    stack.poll()

    # Then one list page (up to 1,000 a page) read them all and none was retrieved on its own
    calls = fake.calls - before
    assert calls["GET /v1/messages/batches"] == 1, calls
    assert not [c for c in calls if c.startswith("GET /v1/messages/batches/")], calls
    fake.processing_seconds = 0.0
    stack.run_until(lambda: all(record(stack, b).status == "completed" for b in batch_ids))
