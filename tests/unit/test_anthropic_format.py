"""Chat completions <-> Anthropic Messages: requests, results, usage, statuses and custom ids."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from shared.providers.anthropic_format import (
    DEFAULT_MAX_TOKENS,
    JSON_OBJECT_INSTRUCTION,
    SCHEMA_TOOL_PREFIX,
    anthropic_custom_id,
    hashed_custom_ids,
    is_hashed_custom_id,
    to_params,
)
from shared.providers.anthropic_results import (
    batch_status,
    error_response,
    result_line,
    to_chat_completion,
    unix_seconds,
)
from shared.providers.base import LineUsage, TranslationError
from shared.records import Counts

MODEL = "claude-sonnet-4-5-20250929"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ANTHROPIC_WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}


def chat(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "claude-via-anthropic", "messages": list(messages), **fields}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


# --- requests ---------------------------------------------------------------------------------------


def test_plain_request_gets_the_deployment_model_and_the_default_max_tokens() -> None:
    params = to_params(chat(user("Hello")), MODEL)
    assert params == {"model": MODEL, "max_tokens": DEFAULT_MAX_TOKENS, "messages": [user("Hello")]}
    assert DEFAULT_MAX_TOKENS == 4096


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_tokens": 300}, 300),
        ({"max_completion_tokens": 200}, 200),
        ({"max_tokens": 300, "max_completion_tokens": 200}, 200),
        ({"max_tokens": None}, 4096),
    ],
)
def test_max_tokens_comes_from_either_openai_field(fields: dict[str, Any], expected: int) -> None:
    assert to_params(chat(user("Hi"), **fields), MODEL)["max_tokens"] == expected


def test_system_and_developer_messages_become_the_top_level_system() -> None:
    params = to_params(
        chat(
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            user("Hello"),
        ),
        MODEL,
    )
    assert params["system"] == "You are terse.\n\nAnswer in French."
    assert params["messages"] == [user("Hello")]


def test_sampling_fields_map_and_unsupported_fields_are_dropped() -> None:
    params = to_params(
        chat(
            user("Hi"),
            temperature=0.2,
            stop="END",
            n=1,
            seed=42,
            presence_penalty=0.5,
            frequency_penalty=0.1,
            logprobs=False,
            stream=False,
            metadata={"a": "b"},
            reasoning_effort="low",
            service_tier="auto",
        ),
        MODEL,
    )
    assert params == {
        "model": MODEL,
        "max_tokens": 4096,
        "messages": [user("Hi")],
        "temperature": 0.2,
        "stop_sequences": ["END"],
    }


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"n": 2}, "n=2"),
        ({"n": 0}, "n=0"),
        ({"n": True}, "n=True"),
        ({"logprobs": True, "top_logprobs": 3}, "logprobs"),
    ],
)
def test_several_choices_or_logprobs_are_refused_not_answered_with_one_choice(
    fields: dict[str, Any], named: str
) -> None:
    # Messages answers one choice and no log probabilities: sending the request anyway would bill an answer
    # that is not what was asked
    with pytest.raises(TranslationError, match=named):
        to_params(chat(user("Hi"), **fields), MODEL)


@pytest.mark.parametrize(("temperature", "sent"), [(1.7, 1.0), (2, 1.0), (1, 1.0), (0.3, 0.3), (0, 0.0), (-0.5, 0.0)])
def test_temperature_is_clamped_to_anthropics_zero_to_one_range(temperature: float, sent: float) -> None:
    assert to_params(chat(user("Hi"), temperature=temperature), MODEL)["temperature"] == sent


def test_temperature_with_top_p_sends_only_temperature() -> None:
    params = to_params(chat(user("Hi"), temperature=0.7, top_p=0.9), MODEL)
    assert params["temperature"] == 0.7 and "top_p" not in params
    assert to_params(chat(user("Hi"), top_p=0.9), MODEL)["top_p"] == 0.9
    assert "top_p" not in to_params(chat(user("Hi"), temperature=None, top_p=None), MODEL)


@pytest.mark.parametrize("temperature", ["0.5", True, [0.5]])
def test_temperature_that_is_not_a_number_is_refused(temperature: Any) -> None:
    with pytest.raises(TranslationError, match="temperature must be a number"):
        to_params(chat(user("Hi"), temperature=temperature), MODEL)


def test_stop_list_becomes_stop_sequences() -> None:
    assert to_params(chat(user("Hi"), stop=["\nHuman:", "END"]), MODEL)["stop_sequences"] == ["\nHuman:", "END"]
    assert "stop_sequences" not in to_params(chat(user("Hi"), stop=None), MODEL)


def test_stop_sequences_of_only_whitespace_are_dropped_and_the_rest_kept() -> None:
    params = to_params(chat(user("Hi"), stop=["\n\n", " ", "\t\r\n", "", "END", " Observation:"]), MODEL)
    assert params["stop_sequences"] == ["END", " Observation:"]
    assert "stop_sequences" not in to_params(chat(user("Hi"), stop="\n"), MODEL)


def test_user_becomes_metadata_user_id() -> None:
    assert to_params(chat(user("Hi"), user="user-1234"), MODEL)["metadata"] == {"user_id": "user-1234"}


def test_multimodal_parts_become_text_and_image_blocks() -> None:
    message = user(
        [
            {"type": "text", "text": "What is in these images?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ]
    )
    assert to_params(chat(message), MODEL)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these images?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


def test_pdf_file_part_becomes_a_document_block() -> None:
    part = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}
    (message,) = to_params(chat(user([part])), MODEL)["messages"]
    assert message["content"] == [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}},
        {"type": "file", "file": {"file_id": "file-abc"}},
    ],
)
def test_content_anthropic_cannot_take_is_refused_not_dropped(part: dict[str, Any]) -> None:
    with pytest.raises(TranslationError):
        to_params(chat(user([part])), MODEL)


def test_tool_calls_and_results_become_tool_use_and_one_merged_tool_result_turn() -> None:
    messages = [
        user("Weather in Paris and Rome?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, cloudy"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "25C, sunny"}]},
        user("Which is warmer?"),
    ]
    params = to_params(chat(*messages, tools=[WEATHER_TOOL]), MODEL)
    assert params["messages"] == [
        user("Weather in Paris and Rome?"),
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C, cloudy"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "25C, sunny"}]},
                {"type": "text", "text": "Which is warmer?"},
            ],
        },
    ]
    assert params["tools"] == [ANTHROPIC_WEATHER_TOOL]
    assert "tool_choice" not in params


def test_assistant_text_before_tool_calls_is_kept() -> None:
    assistant = {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
    }
    (_, turn) = to_params(chat(user("Weather?"), assistant), MODEL)["messages"]
    assert turn["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {}},
    ]


def test_tool_call_arguments_that_are_not_json_are_refused() -> None:
    assistant = {
        "role": "assistant",
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{city: Paris"}}],
    }
    with pytest.raises(TranslationError, match="not JSON"):
        to_params(chat(user("x"), assistant), MODEL)


def test_consecutive_turns_of_one_role_are_merged() -> None:
    params = to_params(chat(user("one"), user([{"type": "text", "text": "two"}])), MODEL)
    assert params["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ],
)
def test_each_tool_choice_maps(choice: Any, expected: dict[str, Any]) -> None:
    assert to_params(chat(user("x"), tools=[WEATHER_TOOL], tool_choice=choice), MODEL)["tool_choice"] == expected


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    params = to_params(chat(user("x"), tools=[WEATHER_TOOL], tool_choice="auto", parallel_tool_calls=False), MODEL)
    assert params["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    unset = to_params(chat(user("x"), tools=[WEATHER_TOOL], parallel_tool_calls=False), MODEL)
    assert unset["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_json_object_appends_an_instruction_to_system() -> None:
    with_system = to_params(
        chat({"role": "system", "content": "Be brief."}, user("x"), response_format={"type": "json_object"}), MODEL
    )
    assert with_system["system"] == f"Be brief.\n\n{JSON_OBJECT_INSTRUCTION}"
    alone = to_params(chat(user("x"), response_format={"type": "json_object"}), MODEL)
    assert alone["system"] == JSON_OBJECT_INSTRUCTION and "response_format" not in alone
    assert "single" in JSON_OBJECT_INSTRUCTION and "JSON object" in JSON_OBJECT_INSTRUCTION


def test_json_schema_becomes_a_forced_tool_with_the_schema_as_input_schema() -> None:
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "verdict", "schema": ANSWER_SCHEMA, "strict": True},
    }
    params = to_params(chat(user("Is water wet?"), response_format=response_format), MODEL)
    (tool,) = params["tools"]
    assert tool["name"] == f"{SCHEMA_TOOL_PREFIX}verdict" and tool["input_schema"] == ANSWER_SCHEMA
    assert params["tool_choice"] == {"type": "tool", "name": tool["name"]}


def test_json_schema_with_the_requests_own_tools_lets_the_model_call_either() -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": ANSWER_SCHEMA}}
    params = to_params(chat(user("x"), tools=[WEATHER_TOOL], response_format=response_format), MODEL)
    assert [t["name"] for t in params["tools"]] == ["get_weather", f"{SCHEMA_TOOL_PREFIX}verdict"]
    assert params["tool_choice"] == {"type": "any"}


def test_request_without_user_or_assistant_messages_is_refused() -> None:
    with pytest.raises(TranslationError, match="at least one"):
        to_params(chat({"role": "system", "content": "alone"}), MODEL)


# --- results ----------------------------------------------------------------------------------------

# a recorded Message, as the Messages API and the batch results carry it
MESSAGE: dict[str, Any] = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hello! "}, {"type": "text", "text": "How can I help?"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "cache_creation_input_tokens": 1500,
        "cache_read_input_tokens": 3000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 9,
        "service_tier": "batch",
    },
}


def test_message_becomes_a_chat_completion_with_usage_counting_cache_reads_and_writes() -> None:
    body, usage = to_chat_completion(MESSAGE, "req-1", created=1_700_000_000)
    assert body == {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "claude-sonnet-4-5-20250929",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello! How can I help?",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 4512,
            "completion_tokens": 9,
            "total_tokens": 4521,
            "prompt_tokens_details": {"cached_tokens": 3000},
        },
    }
    assert usage == LineUsage(input_tokens=4512, cached_tokens=3000, cache_write_tokens=1500, output_tokens=9)


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop_reason: str, finish_reason: str) -> None:
    body, _ = to_chat_completion({**MESSAGE, "stop_reason": stop_reason}, "req-1", created=0)
    assert body["choices"][0]["finish_reason"] == finish_reason


def test_tool_use_becomes_tool_calls_with_json_arguments() -> None:
    message = {
        **MESSAGE,
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "stop_reason": "tool_use",
    }
    body, _ = to_chat_completion(message, "req-1", created=0)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [
        {"id": "toolu_01A", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    ]


def test_forced_schema_tool_answer_becomes_json_content() -> None:
    message = {
        **MESSAGE,
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_01B",
                "name": f"{SCHEMA_TOOL_PREFIX}verdict",
                "input": {"answer": "yes", "confidence": 0.9},
            }
        ],
        "stop_reason": "tool_use",
    }
    body, _ = to_chat_completion(message, "req-1", created=0)
    choice = body["choices"][0]
    assert orjson.loads(choice["message"]["content"]) == {"answer": "yes", "confidence": 0.9}
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]


@pytest.mark.parametrize("name", ["get_weather", f"{SCHEMA_TOOL_PREFIX}verdict"])
def test_a_tool_call_cut_off_by_max_tokens_finishes_with_length(name: str) -> None:
    # Given an answer whose tool call (the request's own tool, or the forced json_schema tool) hit max_tokens
    block = {"type": "tool_use", "id": "toolu_01C", "name": name, "input": {}}
    message = {**MESSAGE, "content": [block], "stop_reason": "max_tokens"}

    body, _ = to_chat_completion(message, "req-1", created=0)

    # Then it says the output was cut off, as OpenAI does when the request's token limit was reached
    assert body["choices"][0]["finish_reason"] == "length"


def test_succeeded_result_line_is_a_200_output_line_with_usage() -> None:
    line = result_line({"custom_id": "req-1", "result": {"type": "succeeded", "message": MESSAGE}}, "req 1", created=5)
    assert line.succeeded and line.custom_id == "req 1"
    assert line.response is not None and line.response["status_code"] == 200
    assert line.response["request_id"] == MESSAGE["id"] and line.response["body"]["object"] == "chat.completion"
    assert line.usage == LineUsage(input_tokens=4512, cached_tokens=3000, cache_write_tokens=1500, output_tokens=9)


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("invalid_request_error", 400),
        ("authentication_error", 401),
        ("billing_error", 402),
        ("permission_error", 403),
        ("not_found_error", 404),
        ("rate_limit_error", 429),
        ("api_error", 500),
        ("timeout_error", 504),
        ("overloaded_error", 529),
    ],
)
def test_errored_result_becomes_an_openai_error_response(kind: str, status: int) -> None:
    error = {"type": "error", "error": {"type": kind, "message": "something broke"}, "request_id": "req_011CS"}
    line = result_line({"custom_id": "r", "result": {"type": "errored", "error": error}}, "r", created=0)
    assert not line.succeeded and line.error is None and line.usage is None
    assert line.response == {
        "status_code": status,
        "request_id": "req_011CS",
        "body": {"error": {"message": "something broke", "type": kind, "param": None, "code": None}},
    }


def test_errored_result_as_batches_send_it_keeps_anthropics_message_and_type() -> None:
    # Given the nested ErrorResponse of a batch result, with request_id null and a `details` object
    detail = {"details": {"error_visibility": "user_facing"}, "type": "invalid_request_error"}
    error = {"type": "error", "error": {**detail, "message": "temperature: range: 0..1"}, "request_id": None}

    line = result_line({"custom_id": "r", "result": {"type": "errored", "error": error}}, "r", created=0)

    assert line.response is not None and line.response["status_code"] == 400
    assert line.response["body"]["error"]["message"] == "temperature: range: 0..1"
    assert line.response["body"]["error"]["type"] == "invalid_request_error"
    assert line.response["request_id"].startswith("req_")


def test_errored_result_without_request_id_gets_a_stable_one() -> None:
    error = {"type": "error", "error": {"type": "weird_error", "message": "?"}, "request_id": None}
    first, second = error_response(error, "r"), error_response(error, "r")
    assert first["status_code"] == 500 and first["request_id"] == second["request_id"]
    assert first["request_id"].startswith("req_")


GOOD_USAGE = {"input_tokens": 3, "output_tokens": 2}


@pytest.mark.parametrize(
    ("result", "named"),
    [
        ("succeeded", "its result is 'succeeded', not an object"),
        (None, "its result is None, not an object"),
        ({"type": "succeeded", "message": "Hello"}, "its message is 'Hello', not an object"),
        ({"type": "succeeded"}, "its message is None, not an object"),
        ({"type": "succeeded", "message": {**MESSAGE, "content": None}}, "content is None, not a list"),
        ({"type": "succeeded", "message": {k: v for k, v in MESSAGE.items() if k != "content"}}, "content is None"),
        ({"type": "succeeded", "message": {**MESSAGE, "content": "Hello"}}, "content is 'Hello', not a list"),
        ({"type": "succeeded", "message": {**MESSAGE, "content": ["Hello"]}}, "content block 0 is 'Hello'"),
        (
            {"type": "succeeded", "message": {**MESSAGE, "content": [{"type": "text"}]}},
            "block 0, text, has no valid text",
        ),
        (
            {"type": "succeeded", "message": {**MESSAGE, "content": [{"type": "tool_use", "id": "t", "name": "f"}]}},
            "block 0, tool_use, has no valid input",
        ),
        ({"type": "succeeded", "message": {**MESSAGE, "model": None}}, "model is None, not a string"),
        ({"type": "succeeded", "message": {**MESSAGE, "usage": "12 tokens"}}, "usage is '12 tokens', not an object"),
        ({"type": "succeeded", "message": {**MESSAGE, "usage": None}}, "usage is None, not an object"),
        (
            {"type": "succeeded", "message": {**MESSAGE, "usage": {**GOOD_USAGE, "output_tokens": -3}}},
            "usage.output_tokens is -3, not a count of tokens",
        ),
        (
            {"type": "succeeded", "message": {**MESSAGE, "usage": {**GOOD_USAGE, "input_tokens": "12"}}},
            "usage.input_tokens is '12', not a count of tokens",
        ),
        (
            {"type": "succeeded", "message": {**MESSAGE, "usage": {**GOOD_USAGE, "input_tokens": True}}},
            "usage.input_tokens is True",
        ),
        (
            {"type": "succeeded", "message": {**MESSAGE, "usage": {**GOOD_USAGE, "cache_read_input_tokens": 1.5}}},
            "usage.cache_read_input_tokens is 1.5",
        ),
        ({"type": "succeeded", "message": {**MESSAGE, "usage": {"input_tokens": 3}}}, "usage.output_tokens is None"),
        ({"type": "errored", "error": "overloaded"}, "its error is 'overloaded', not an ErrorResponse"),
        (
            {"type": "errored", "error": {"type": "invalid_request_error", "message": "flat, not nested"}},
            "not an ErrorResponse with a type and a message",
        ),
        ({"type": "paused"}, "its result type 'paused' is unknown"),
    ],
)
def test_malformed_result_line_becomes_a_provider_error_line_saying_what_is_wrong(result: Any, named: str) -> None:
    line = result_line({"custom_id": "r-1", "result": result}, "r 1", created=0)
    assert line.custom_id == "r 1" and line.response is None and line.usage is None and not line.succeeded
    assert line.error is not None and line.error["code"] == "provider_error"
    assert line.error["message"].startswith("Anthropic returned a result for this request that cannot be read: ")
    assert named in line.error["message"]


def test_absent_or_null_cache_counts_are_read_as_no_cache_use() -> None:
    usage = {"input_tokens": 7, "output_tokens": 2, "cache_read_input_tokens": None}
    line = result_line(
        {"custom_id": "r", "result": {"type": "succeeded", "message": {**MESSAGE, "usage": usage}}}, "r", created=0
    )
    assert line.succeeded
    assert line.usage == LineUsage(input_tokens=7, cached_tokens=0, cache_write_tokens=0, output_tokens=2)


def test_canceled_and_expired_results_carry_openais_error_codes_and_messages() -> None:
    canceled = result_line({"custom_id": "a", "result": {"type": "canceled"}}, "a", created=0)
    expired = result_line({"custom_id": "b", "result": {"type": "expired"}}, "b", created=0)
    assert canceled.response is None and canceled.error == {
        "code": "batch_cancelled",
        "message": "This request was not executed because the batch was cancelled.",
    }
    assert expired.response is None and expired.error == {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    }


# --- batches ----------------------------------------------------------------------------------------


def message_batch(status: str, cancel_initiated_at: str | None = None, **counts: int) -> dict[str, Any]:
    return {
        "id": "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0, **counts},
        "ended_at": "2024-08-20T18:37:24.100435Z" if status == "ended" else None,
        "created_at": "2024-08-20T18:37:24.100435Z",
        "expires_at": "2024-08-21T18:37:24.100435Z",
        "cancel_initiated_at": cancel_initiated_at,
        "archived_at": None,
        "results_url": None,
    }


@pytest.mark.parametrize(
    ("batch", "state", "counts"),
    [
        (message_batch("in_progress", processing=10), "in_progress", Counts(total=10)),
        (
            message_batch("canceling", "2024-08-20T18:40:00Z", processing=10),
            "cancelling",
            Counts(total=10),
        ),
        (message_batch("ended", succeeded=8, errored=2), "completed", Counts(total=10, completed=8, failed=2)),
        (message_batch("ended", succeeded=6, errored=1, expired=3), "expired", Counts(total=10, completed=6, failed=4)),
        (
            message_batch("ended", "2024-08-20T18:40:00Z", succeeded=4, errored=1, canceled=5),
            "cancelled",
            Counts(total=10, completed=4, failed=6),
        ),
    ],
)
def test_message_batch_status_and_counts_map_to_openais(batch: dict[str, Any], state: str, counts: Counts) -> None:
    assert batch_status(batch) == (state, counts)


def test_unknown_processing_status_is_an_error() -> None:
    with pytest.raises(TranslationError):
        batch_status(message_batch("paused"))


def test_rfc3339_timestamps_read_as_unix_seconds() -> None:
    assert unix_seconds("2024-08-20T18:37:24.100435Z") == 1724179044
    assert unix_seconds(None) is None and unix_seconds("yesterday") is None


# --- custom ids -------------------------------------------------------------------------------------


def test_conforming_custom_ids_pass_through() -> None:
    for custom_id in ("req-1", "A_b-9", "x" * 64):
        assert anthropic_custom_id(custom_id) == custom_id


def test_other_custom_ids_are_hashed_stably_and_map_back() -> None:
    ours = ["req 1", "réponse-1", "a/b", "x" * 65, "y" * 512, "ok-id"]
    sent = [anthropic_custom_id(c) for c in ours]
    assert sent[-1] == "ok-id"
    assert all(len(s) <= 64 and s.replace("-", "").replace("_", "").isalnum() for s in sent)
    assert sent == [anthropic_custom_id(c) for c in ours] and len(set(sent)) == len(ours)
    back = hashed_custom_ids(ours)
    assert [back.get(s, s) for s in sent] == ours
    assert all(is_hashed_custom_id(s) for s in sent[:-1]) and not is_hashed_custom_id("ok-id")


def test_a_custom_id_shaped_like_a_hash_never_collides_with_a_hashed_one() -> None:
    spaced = "req 1"
    lookalike = anthropic_custom_id(spaced)
    assert anthropic_custom_id(lookalike) != lookalike
    back = hashed_custom_ids([spaced, lookalike])
    assert {back[anthropic_custom_id(spaced)], back[anthropic_custom_id(lookalike)]} == {spaced, lookalike}
