"""The Anthropic translation, and the fake Anthropic, against the types of Anthropic's own SDK and OpenAI's.

The `anthropic` package is pinned below 1.0 because its types then describe the API version batchgw sends
(`anthropic-version: 2023-06-01`), `temperature` and `top_p` included: from 1.0 on the SDK drops those from
its request types, and from 2.0 on it sends an API version that refuses them.

The strict checks themselves (`sdk_problems`, ...) are in tests/sdk_types.py.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from anthropic.types import MessageCreateParams
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from anthropic.types.messages import MessageBatchIndividualResponse
from anthropic.types.messages.batch_create_params import Request
from fastapi.testclient import TestClient
from pydantic import TypeAdapter, ValidationError

from shared.providers.anthropic_format import anthropic_custom_id, to_params
from shared.providers.anthropic_results import result_line
from tests.fakes.anthropic_upstream import ANTHROPIC_VERSION, API_KEY, EXPIRING_MODEL, FakeAnthropic
from tests.sdk_types import extra_fields, openai_completion_problems, sdk_problems
from tests.unit.test_anthropic_format import MESSAGE

MODEL = "claude-sonnet-4-5-20250929"
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # what Anthropic takes, checked at create
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
VERDICT = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": False,
        },
    },
}
TOOL_TURNS: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "25C"}]},
    {"role": "user", "content": "Which is warmer?"},
]


def chat(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "claude-via-anthropic", "messages": list(messages), **fields}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


# OpenAI chat bodies covering what the translation handles, by name (the name is the custom_id sent)
BODIES: dict[str, dict[str, Any]] = {
    "plain": chat(user("Hello")),
    "system-and-developer": chat(
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        user("Hello"),
    ),
    "multi-turn-merged": chat(
        user("one"),
        user([{"type": "text", "text": "two"}]),
        {"role": "assistant", "content": "three"},
        {"role": "assistant", "content": [{"type": "text", "text": "four"}]},
        user("five"),
    ),
    "images": chat(
        user(
            [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ]
        )
    ),
    "pdf": chat(
        user(
            [
                {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
                {"type": "text", "text": "Summarise it."},
            ]
        )
    ),
    "tool-calls-and-results": chat(*TOOL_TURNS, tools=[WEATHER_TOOL]),
    "tool-choice-auto": chat(user("Weather?"), tools=[WEATHER_TOOL], tool_choice="auto"),
    "tool-choice-none": chat(user("Weather?"), tools=[WEATHER_TOOL], tool_choice="none"),
    "tool-choice-required": chat(user("Weather?"), tools=[WEATHER_TOOL], tool_choice="required"),
    "tool-choice-named": chat(
        user("Weather?"), tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    ),
    "parallel-tool-calls-false": chat(user("Weather?"), tools=[WEATHER_TOOL], parallel_tool_calls=False),
    "json-object": chat(
        {"role": "system", "content": "Be brief."}, user("A JSON verdict?"), response_format={"type": "json_object"}
    ),
    "json-schema": chat(user("Is water wet?"), response_format=VERDICT),
    "json-schema-with-tools": chat(user("Is it warm?"), tools=[WEATHER_TOOL], response_format=VERDICT),
    "stops-with-whitespace": chat(user("Count"), stop=["\n\n", " ", "", "END", "\nHuman:"]),
    "temperature-1-7-with-top-p": chat(user("Be creative"), temperature=1.7, top_p=0.9),
    "max-tokens": chat(user("Short"), max_tokens=5),
    "max-completion-tokens": chat(user("Short"), max_tokens=300, max_completion_tokens=7),
    "user": chat(user("Hi"), user="user-1234", seed=1, n=1, presence_penalty=0.5, logprobs=False),
    "odd custom id / réponse": chat(user("Hi")),
}

PARAMS = TypeAdapter(MessageCreateParamsNonStreaming)
REQUEST = TypeAdapter(Request)


def test_sdk_checks_refuse_unknown_keys_at_any_depth_and_wrong_types() -> None:
    params = to_params(BODIES["tool-calls-and-results"], MODEL)
    assert sdk_problems(params, PARAMS, MessageCreateParamsNonStreaming) == []
    assert sdk_problems({**params, "presence_penalty": 0.5}, PARAMS, MessageCreateParamsNonStreaming) == [
        "presence_penalty"
    ]
    tool_use = params["messages"][1]["content"][1]
    tool_use["arguments"] = "{}"
    assert sdk_problems(params, PARAMS, MessageCreateParamsNonStreaming) == ["messages.1.content.1.arguments"]
    del tool_use["arguments"]
    params["tools"][0]["parameters"] = params["tools"][0].pop("input_schema")
    (problem,) = sdk_problems(params, PARAMS, MessageCreateParamsNonStreaming)
    assert "input_schema" in problem and "Field required" in problem
    wrong_type = {**to_params(BODIES["plain"], MODEL), "max_tokens": "5"}
    assert "max_tokens" in sdk_problems(wrong_type, PARAMS, MessageCreateParamsNonStreaming)[0]
    # the stream=True variant is not the non-streaming type batches take
    assert sdk_problems({**params, "stream": True}, PARAMS, MessageCreateParams)


# --- requests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BODIES)
def test_translated_request_is_the_sdks_non_streaming_params_and_batch_request(name: str) -> None:
    params = to_params(BODIES[name], MODEL)
    assert sdk_problems(params, PARAMS, MessageCreateParamsNonStreaming) == []
    request: dict[str, Any] = {"custom_id": anthropic_custom_id(name), "params": params}
    assert sdk_problems(request, REQUEST, Request) == []
    assert CUSTOM_ID.fullmatch(request["custom_id"])


def test_translated_sampling_and_stops_are_what_anthropic_takes() -> None:
    sampled = to_params(BODIES["temperature-1-7-with-top-p"], MODEL)
    assert sampled["temperature"] == 1.0 and "top_p" not in sampled
    assert to_params(BODIES["stops-with-whitespace"], MODEL)["stop_sequences"] == ["END", "\nHuman:"]


# --- the fake, run in process --------------------------------------------------------------------------


def run(fake: FakeAnthropic, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Create a batch of `requests` through the fake's HTTP API, let it end, and return its result lines."""
    with TestClient(fake.app) as client:
        client.headers.update({"x-api-key": API_KEY, "anthropic-version": ANTHROPIC_VERSION})
        created = client.post("/v1/messages/batches", json={"requests": requests})
        assert created.status_code == 200, created.text
        batch = fake.batches[created.json()["id"]]
        ended = client.get(f"/v1/messages/batches/{batch.id}").json()
        assert ended["processing_status"] == "ended"
        results = client.get(ended["results_url"])
    return [orjson.loads(line) for line in results.content.splitlines()]


def sdk_line_problems(line: dict[str, Any]) -> list[str]:
    """What the SDK's MessageBatchIndividualResponse refuses, or does not declare, in a result line."""
    try:
        parsed = MessageBatchIndividualResponse.model_validate(line)
    except ValidationError as exc:
        return [str(exc)]
    return extra_fields(parsed)


def test_fake_runs_every_translated_request_and_its_results_read_as_sdk_and_openai_types() -> None:
    # Given every translated body in one batch
    requests = [{"custom_id": anthropic_custom_id(name), "params": to_params(b, MODEL)} for name, b in BODIES.items()]

    # When the fake processes it, checking each request's params as Anthropic does
    lines = run(FakeAnthropic(processing_seconds=0), requests)

    # Then every request succeeded, its line is the SDK's result type, and ours is OpenAI's chat completion
    assert {line["result"]["type"] for line in lines} == {"succeeded"}, lines
    assert [problem for line in lines for problem in sdk_line_problems(line)] == []
    for line in lines:
        output = result_line(line, line["custom_id"], created=1_700_000_000)
        assert output.succeeded and output.response is not None
        assert openai_completion_problems({"response": output.response}) == []


def test_params_anthropic_refuses_are_accepted_at_create_and_errored_at_batch_end() -> None:
    # Given raw params with each trap, next to one good request
    good = to_params(BODIES["plain"], MODEL)
    traps = {
        "hot": ({**good, "temperature": 1.5}, "temperature: range: 0..1"),
        "cold": ({**good, "temperature": -0.1}, "temperature: range: 0..1"),
        "both": ({**good, "temperature": 0.5, "top_p": 0.9}, "`temperature` and `top_p` cannot both be specified"),
        "blank-stop": ({**good, "stop_sequences": ["END", "\n"]}, "each stop sequence must contain non-whitespace"),
        "no-max": ({k: v for k, v in good.items() if k != "max_tokens"}, "max_tokens: Field required"),
        "openai-param": ({**good, "frequency_penalty": 0.5}, "frequency_penalty: Extra inputs are not permitted"),
    }
    requests = [{"custom_id": "good", "params": good}] + [{"custom_id": k, "params": p} for k, (p, _) in traps.items()]

    # When the batch is created (a 200: create checks only the envelope) and ends
    lines = {line["custom_id"]: line for line in run(FakeAnthropic(processing_seconds=0), requests)}

    # Then each trap comes back errored in Anthropic's shape and words, and the good request succeeded
    assert lines["good"]["result"]["type"] == "succeeded"
    assert [problem for line in lines.values() for problem in sdk_line_problems(line)] == []
    for custom_id, (_, message) in traps.items():
        error = lines[custom_id]["result"]["error"]
        assert lines[custom_id]["result"]["type"] == "errored" and error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error" and message in error["error"]["message"]
        # and becomes an OpenAI error line carrying Anthropic's type and message under a 400
        output = result_line(lines[custom_id], custom_id, created=0)
        assert output.response is not None and output.response["status_code"] == 400 and not output.succeeded
        assert output.response["body"]["error"]["type"] == "invalid_request_error"
        assert message in output.response["body"]["error"]["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"requests": []}, "between 1 and 100000 requests"),
        ({"requests": [{"custom_id": "a b", "params": {}}]}, "String should match pattern"),
        ({"requests": [{"custom_id": "x" * 65, "params": {}}]}, "String should match pattern"),
        ({"requests": [{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}]}, "is not unique"),
        ({"requests": [{"custom_id": "a"}]}, "custom_id and params only"),
    ],
)
def test_fake_create_refuses_a_bad_envelope_with_a_400(body: dict[str, Any], message: str) -> None:
    fake = FakeAnthropic()
    with TestClient(fake.app) as client:
        answer = client.post(
            "/v1/messages/batches", json=body, headers={"x-api-key": API_KEY, "anthropic-version": ANTHROPIC_VERSION}
        )
    assert answer.status_code == 400 and message in answer.json()["error"]["message"]
    assert answer.json()["error"]["type"] == "invalid_request_error" and not fake.batches


def test_fakes_expired_and_canceled_lines_are_sdk_result_lines() -> None:
    params = {"model": EXPIRING_MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "q"}]}
    fake = FakeAnthropic(processing_seconds=0)
    expired = run(fake, [{"custom_id": f"e-{i}", "params": params} for i in range(2)])
    fake.processing_seconds = 60
    batch = fake.create([{"custom_id": f"c-{i}", "params": {**params, "model": MODEL}} for i in range(2)])
    with TestClient(fake.app) as client:
        client.headers.update({"x-api-key": API_KEY, "anthropic-version": ANTHROPIC_VERSION})
        assert client.post(f"/v1/messages/batches/{batch.id}/cancel").json()["processing_status"] == "canceling"
        polled = [client.get(f"/v1/messages/batches/{batch.id}").json()["processing_status"] for _ in range(2)]
    assert polled == ["canceling", "ended"]
    lines = expired + batch.results
    assert sorted(line["result"]["type"] for line in lines) == ["canceled", "expired", "succeeded", "succeeded"]
    assert [problem for line in lines for problem in sdk_line_problems(line)] == []


# --- the result lines the format tests use -------------------------------------------------------------


def test_result_lines_the_format_tests_use_are_sdk_result_lines_and_become_openai_types() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, "request_id": None}
    tool_message = {
        **MESSAGE,
        "content": [{"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}],
        "stop_reason": "tool_use",
    }
    lines: list[dict[str, Any]] = [
        {"custom_id": "a", "result": {"type": "succeeded", "message": MESSAGE}},
        {"custom_id": "b", "result": {"type": "succeeded", "message": tool_message}},
        {"custom_id": "c", "result": {"type": "errored", "error": error}},
        {"custom_id": "d", "result": {"type": "canceled"}},
        {"custom_id": "e", "result": {"type": "expired"}},
    ]
    assert [problem for line in lines for problem in sdk_line_problems(line)] == []
    for line in lines[:2]:
        output = result_line(line, line["custom_id"], created=0)
        assert output.response is not None and openai_completion_problems({"response": output.response}) == []
