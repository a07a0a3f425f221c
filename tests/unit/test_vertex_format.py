"""OpenAI chat-completions lines to Vertex Gemini batch lines and back (shared/providers/vertex_format.py and
vertex_results.py)."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from google.genai import types
from openai.types.chat import ChatCompletion

from shared.errors import ProviderError
from shared.jsonl import MAX_LINES
from shared.providers import registry
from shared.providers.base import LineUsage, TranslationError
from shared.providers.vertex_format import (
    generate_content_request,
    index_in_line,
    input_line,
    line_index,
    line_labels,
)
from shared.providers.vertex_results import error_status_code, job_status, openai_state, result_line
from shared.records import Counts, ErrorEntry
from shared.routing import Deployment
from tests.fakes.vertex_upstream import Forecast

WEATHER_PARAMETERS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER_PARAMETERS},
}
VERTEX = Deployment.model_validate({"name": "g", "provider": "vertex", "project": "p", "gcs_bucket": "b"})


# --- requests ---------------------------------------------------------------------------------------


def test_request_with_system_and_turns_maps_roles_and_labels_the_line() -> None:
    body = {
        "model": "gemini-via-vertex",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": [{"type": "text", "text": "How are "}, {"type": "text", "text": "you?"}]},
        ],
    }
    assert generate_content_request(body, 7) == {
        "contents": [
            {"role": "user", "parts": [{"text": "Hello"}]},
            {"role": "model", "parts": [{"text": "Bonjour"}]},
            {"role": "user", "parts": [{"text": "How are "}, {"text": "you?"}]},
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]},
        "labels": {"batchgw_d0": "7", "batchgw_d1": "0", "batchgw_d2": "0", "batchgw_d3": "0", "batchgw_d4": "0"},
    }


def test_input_line_wraps_the_request_as_vertex_wants_it() -> None:
    line = orjson.loads(input_line({"messages": [{"role": "user", "content": "hi"}]}, 0))
    assert line == {"request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "labels": line_labels(0)}}
    assert input_line({"messages": [{"role": "user", "content": "hi"}]}, 0).endswith(b"\n")


def test_images_become_inline_data_or_file_references_with_their_mime_type() -> None:
    content = [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "gs://photos/cat.webp"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a/dog.JPG?size=large"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/render"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"filename": "report.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
    ]
    request = generate_content_request({"messages": [{"role": "user", "content": content}]}, 0)
    assert request["contents"][0]["parts"] == [
        {"text": "Compare"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"fileUri": "gs://photos/cat.webp", "mimeType": "image/webp"}},
        {"fileData": {"fileUri": "https://example.com/a/dog.JPG?size=large", "mimeType": "image/jpeg"}},
        {"fileData": {"fileUri": "https://example.com/render", "mimeType": "image/jpeg"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]


@pytest.mark.parametrize(
    ("part", "reason"),
    [
        ({"type": "file", "file": {"file_id": "file-abc", "filename": "report.pdf"}}, "file_id"),
        ({"type": "file", "file": {"filename": "report.pdf", "file_data": "JVBERi0xLjQK"}}, "data: URL"),
        ({"type": "image_url", "image_url": {"url": "file-xyz"}}, "data: URL"),
        ({"type": "image_url", "image_url": {}}, "data: URL"),
        ({"type": "input_audio", "input_audio": "UklGRg=="}, "input_audio"),
        ({"type": "text", "text": None}, "text"),
        ({"type": "refusal", "refusal": "no"}, "'refusal'"),
        ({"type": "video_url", "video_url": {"url": "gs://v/a.mp4"}}, "'video_url'"),
        (7, "content part"),
    ],
)
def test_content_gemini_cannot_take_is_refused_before_submission_not_dropped(part: Any, reason: str) -> None:
    # Given a user turn with content Vertex has no translation for, alone or beside text
    for content in ([part], [{"type": "text", "text": "Summarise this"}, part]):
        body = {"model": "g", "messages": [{"role": "user", "content": content}]}

        # Then translating it fails, naming what, and screening refuses the line before the batch is sent
        with pytest.raises(TranslationError) as caught:
            generate_content_request(body, 0)
        assert reason in str(caught.value)
        assert registry.screen(VERTEX, body) == str(caught.value)


def test_an_assistant_turns_refusal_is_kept_as_what_it_said() -> None:
    refused = {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot help with that."}]}
    body = {"messages": [{"role": "user", "content": "hi"}, refused, {"role": "user", "content": "why?"}]}
    assert generate_content_request(body, 0)["contents"][1] == {
        "role": "model",
        "parts": [{"text": "I cannot help with that."}],
    }


def test_tool_calls_and_tool_answers_become_function_call_and_response_parts() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "not json"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "get_time"}}],
        "tool_choice": "required",
    }
    request = generate_content_request(body, 1)
    assert request["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {"arguments": "not json"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}},
                {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}},
            ],
        },
        {"role": "user", "parts": [{"text": "Thanks"}]},
    ]
    assert request["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "The weather in a city",
                    "parametersJsonSchema": WEATHER_PARAMETERS,
                },
                {"name": "get_time"},
            ]
        }
    ]
    assert request["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"functionCallingConfig": {"mode": "AUTO"}}),
        ("none", {"functionCallingConfig": {"mode": "NONE"}}),
        ("required", {"functionCallingConfig": {"mode": "ANY"}}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        ),
        (None, None),
    ],
)
def test_tool_choice_maps_to_function_calling_config(tool_choice: Any, expected: Any) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER_TOOL], "tool_choice": tool_choice}
    assert generate_content_request(body, 0).get("toolConfig") == expected


def test_generation_config_takes_every_supported_sampling_field() -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 50,
        "max_completion_tokens": 100,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END", "STOP"],
        "n": 2,
        "seed": 42,
        "response_format": {"type": "json_object"},
        "user": "someone",
        "stream": False,
    }
    request = generate_content_request(body, 0)
    assert request["generationConfig"] == {
        "maxOutputTokens": 100,
        "temperature": 0.2,
        "topP": 0.9,
        "stopSequences": ["END", "STOP"],
        "candidateCount": 2,
        "seed": 42,
        "responseMimeType": "application/json",
    }
    assert set(request) == {"contents", "generationConfig", "labels"}


@pytest.mark.parametrize(
    ("model", "effort", "thinking"),
    [
        # Gemini 2.5 thinks by default, as much as it likes: a budget is the only bound, 0 turns it off
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-2.5-flash-lite", "minimal", {"thinkingBudget": 1024}),
        ("gemini-2.5-flash", "low", {"thinkingBudget": 1024}),
        ("gemini-2.5-pro", "medium", {"thinkingBudget": 8192}),
        ("gemini-2.5-pro", "high", {"thinkingBudget": 24576}),
        ("gemini-2.5-pro", "xhigh", {"thinkingBudget": 24576}),
        # Gemini 3 and later take a level, and always think
        ("gemini-3-flash-preview", "none", {"thinkingLevel": "MINIMAL"}),
        ("gemini-3-flash-preview", "minimal", {"thinkingLevel": "MINIMAL"}),
        ("gemini-3-pro-preview", "low", {"thinkingLevel": "LOW"}),
        ("gemini-3-flash-preview", "medium", {"thinkingLevel": "MEDIUM"}),
        ("gemini-3.1-pro-preview", "high", {"thinkingLevel": "HIGH"}),
        ("gemini-3.5-flash", "xhigh", {"thinkingLevel": "XHIGH"}),
    ],
)
def test_reasoning_effort_bounds_geminis_thinking(model: str, effort: str, thinking: dict[str, Any]) -> None:
    # Given a request that asks for less (or more) reasoning than the model's default, as OpenAI's reasoning
    # models take it: dropped, a Gemini 2.5 Flash asked for `none` thought (and billed its thoughts) anyway
    body = {"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": effort, "max_tokens": 50}

    # Then Vertex is asked for that much thinking, in the form the model takes
    config = generate_content_request(body, 0, model=model)["generationConfig"]
    assert config == {"maxOutputTokens": 50, "thinkingConfig": thinking}


@pytest.mark.parametrize("model", ["gemini-2.0-flash-001", "gemini-2.0-flash-lite", "gemini-1.5-pro-002"])
def test_a_model_that_does_not_think_takes_none_as_it_is_and_refuses_more(model: str) -> None:
    # Given a client that sends reasoning_effort to every model: Gemini 2.0 and 1.5 have no thinking to configure
    body = {"model": "g", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "none"}

    # Then `none` asks for what the model does anyway, and is sent without a thinkingConfig it would refuse
    assert "generationConfig" not in generate_content_request(body, 0, model=model)

    # And more reasoning than none is refused before the batch is sent, as OpenAI refuses it for a model that
    # does not reason, saying which model
    with pytest.raises(TranslationError, match=f"{model} does not think"):
        generate_content_request({**body, "reasoning_effort": "low"}, 0, model=model)
    deployment = VERTEX.model_copy(update={"model": model})
    assert registry.screen(deployment, body) is None
    assert registry.screen(deployment, {**body, "reasoning_effort": "high"}) is not None


def test_no_reasoning_effort_leaves_the_models_own_thinking() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": None}
    assert "generationConfig" not in generate_content_request(body, 0, model="gemini-2.5-flash")


@pytest.mark.parametrize("effort", ["maximum", "", "HIGH", 3, True, ["low"], {"effort": "low"}])
def test_a_reasoning_effort_openai_does_not_take_is_refused_before_submission(effort: Any) -> None:
    body = {"model": "g", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": effort}
    with pytest.raises(TranslationError) as caught:
        generate_content_request(body, 0, model="gemini-2.5-flash")
    assert "reasoning_effort" in str(caught.value)
    assert registry.screen(VERTEX, body) == str(caught.value)


@pytest.mark.parametrize(
    ("fields", "sent"),
    [
        ({"presence_penalty": 0.5, "frequency_penalty": -0.7}, {"presencePenalty": 0.5, "frequencyPenalty": -0.7}),
        ({"logprobs": True, "top_logprobs": 3}, {"responseLogprobs": True, "logprobs": 3}),
        ({"logprobs": True}, {"responseLogprobs": True}),
        ({"logprobs": True, "top_logprobs": 0}, {"responseLogprobs": True}),
        ({"logprobs": False, "top_logprobs": 3, "presence_penalty": "high"}, None),
    ],
)
def test_penalties_and_logprobs_go_to_their_generation_config_fields(
    fields: dict[str, Any], sent: dict[str, Any] | None
) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], **fields}
    assert generate_content_request(body, 0).get("generationConfig") == sent


def test_generation_config_reads_max_tokens_a_single_stop_and_a_json_schema() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 50,
        "stop": "END",
        "n": 1,
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}},
    }
    assert generate_content_request(body, 0)["generationConfig"] == {
        "maxOutputTokens": 50,
        "temperature": 0,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


def test_generation_config_skips_values_of_the_wrong_type_and_reads_max_tokens_past_a_null() -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": None,
        "max_tokens": 20,
        "temperature": True,
        "top_p": "0.9",
        "seed": 1.5,
        "n": True,
        "stop": [1, None],
    }
    assert generate_content_request(body, 0)["generationConfig"] == {"maxOutputTokens": 20}


@pytest.mark.parametrize(("seed", "sent"), [(7, 7), (-(2**31), -(2**31)), (2**31, 0), (2**40 + 5, 5), (-1, -1)])
def test_a_seed_is_folded_into_the_int32_vertex_takes(seed: int, sent: int) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "seed": seed}
    assert generate_content_request(body, 0)["generationConfig"] == {"seed": sent}


def test_text_response_format_and_no_sampling_fields_leave_no_generation_config() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "text"}}
    assert "generationConfig" not in generate_content_request(body, 0)


# what Pydantic makes of it: $defs/$ref, anyOf with null, enums, arrays; Vertex's `Schema` takes none of these
FORECAST_SCHEMA = Forecast.model_json_schema()


def test_pydantic_schema_has_the_json_schema_constructs_vertex_schema_refuses() -> None:
    assert set(FORECAST_SCHEMA["$defs"]) == {"Place", "Unit"}
    assert FORECAST_SCHEMA["properties"]["place"] == {"$ref": "#/$defs/Place"}
    assert {"type": "null"} in FORECAST_SCHEMA["properties"]["note"]["anyOf"]
    assert FORECAST_SCHEMA["properties"]["highs"]["type"] == "array"


def test_json_schema_response_format_goes_unchanged_to_response_json_schema_not_response_schema() -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "forecast", "schema": FORECAST_SCHEMA}}
    body = {"messages": [{"role": "user", "content": "Weather?"}], "response_format": response_format}
    config = generate_content_request(body, 0)["generationConfig"]
    assert config == {"responseMimeType": "application/json", "responseJsonSchema": FORECAST_SCHEMA}
    assert config["responseJsonSchema"] == Forecast.model_json_schema()  # not altered in place either


def test_tool_parameters_go_unchanged_to_parameters_json_schema_not_parameters() -> None:
    tool = {"type": "function", "function": {"name": "forecast", "parameters": FORECAST_SCHEMA, "strict": True}}
    body = {"messages": [{"role": "user", "content": "Weather?"}], "tools": [tool]}
    (declaration,) = generate_content_request(body, 0)["tools"][0]["functionDeclarations"]
    assert declaration == {"name": "forecast", "parametersJsonSchema": FORECAST_SCHEMA}
    assert Forecast.model_json_schema() == FORECAST_SCHEMA  # not altered in place


@pytest.mark.parametrize(
    ("tools", "named"),
    [
        ([{"type": "custom", "custom": {"name": "grep", "description": "free-form input"}}], "'custom'"),
        ([WEATHER_TOOL, {"type": "web_search"}], "'web_search'"),
        ([{"type": "function", "function": {"description": "no name"}}], "name"),
        ([{"type": "function"}], "name"),
        (["get_weather"], "tool"),
        ({"type": "function", "function": {"name": "get_weather"}}, "list"),
    ],
)
def test_tools_gemini_cannot_be_given_are_refused_before_submission_not_dropped(tools: Any, named: str) -> None:
    # Given a request offering the model a tool that is not a named function (or tools that are not a list):
    # dropped, the model answered without the tool it was told it had
    body = {"model": "g", "messages": [{"role": "user", "content": "Weather?"}], "tools": tools}

    # Then the request fails alone, saying which, before the batch is sent
    with pytest.raises(TranslationError) as caught:
        generate_content_request(body, 0)
    assert named in str(caught.value)
    assert registry.screen(VERTEX, body) == str(caught.value)


# --- results ----------------------------------------------------------------------------------------


def prediction(**response: Any) -> dict[str, Any]:
    """A prediction line as Vertex writes it to predictions.jsonl."""
    return {
        "status": "",
        "processed_time": "2025-06-01T10:00:05.123456Z",
        "request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "labels": line_labels(3)},
        "response": {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": "Hello"}, {"text": " there"}]}, "finishReason": "STOP"}
            ],
            "usageMetadata": {
                "promptTokenCount": 120,
                "candidatesTokenCount": 30,
                "totalTokenCount": 175,
                "cachedContentTokenCount": 100,
                "thoughtsTokenCount": 25,
            },
            "modelVersion": "gemini-2.5-flash",
            "createTime": "2025-06-01T10:00:04.000000Z",
            "responseId": "abc123",
            **response,
        },
    }


def test_prediction_becomes_a_chat_completion_with_usage_including_cached_and_thought_tokens() -> None:
    line = result_line(prediction(), "req-3", "gemini-2.5-flash")
    assert line.custom_id == "req-3" and line.succeeded and line.error is None
    assert line.response is not None
    assert line.response["status_code"] == 200 and line.response["request_id"] == "abc123"
    body = line.response["body"]
    assert body["id"] == "chatcmpl-abc123" and body["object"] == "chat.completion"
    assert body["created"] == 1748772005 and body["model"] == "gemini-2.5-flash"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": 120,
        "completion_tokens": 55,
        "total_tokens": 175,
        "prompt_tokens_details": {"cached_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 25},
    }
    assert line.usage == LineUsage(input_tokens=120, cached_tokens=100, output_tokens=55, reasoning_tokens=25)


def test_usage_without_cache_or_thoughts_and_counts_sent_as_strings() -> None:
    usage = {"promptTokenCount": "8", "candidatesTokenCount": "4", "totalTokenCount": "12"}
    line = result_line(prediction(usageMetadata=usage), "a", "gemini-2.5-flash")
    assert line.usage == LineUsage(input_tokens=8, output_tokens=4)
    assert line.response is not None and line.response["body"]["usage"]["total_tokens"] == 12


def test_the_same_line_gets_the_same_completion_id_every_time_and_other_lines_another() -> None:
    without_id = prediction(responseId=None)
    first = result_line(without_id, "a", "m").response
    again = result_line(without_id, "a", "m").response
    other = result_line(without_id, "b", "m").response
    assert first is not None and again is not None and other is not None
    assert first["body"]["id"] == again["body"]["id"] != other["body"]["id"]
    assert first["body"]["id"].startswith("chatcmpl-")


def test_function_calls_become_tool_calls_and_thoughts_are_not_content() -> None:
    parts = [
        {"text": "Let me think about the weather.", "thought": True},
        {"text": "Checking."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
    ]
    line = result_line(
        prediction(candidates=[{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}]), "t", "m"
    )
    assert line.response is not None
    (choice,) = line.response["body"]["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] == "Checking."
    calls = message["tool_calls"]
    assert [(c["type"], c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in calls] == [
        ("function", "get_weather", {"city": "Paris"}),
        ("function", "get_weather", {"city": "Rome"}),
    ]
    # ids differ between calls and stay the same when the line is read again
    again = result_line(prediction(candidates=[{"content": {"parts": parts}}]), "t", "m").response
    assert again is not None
    assert len({c["id"] for c in calls}) == 2
    assert [c["id"] for c in calls] == [c["id"] for c in again["body"]["choices"][0]["message"]["tool_calls"]]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("IMAGE_SAFETY", "content_filter"),
        ("IMAGE_PROHIBITED_CONTENT", "content_filter"),
        ("IMAGE_RECITATION", "content_filter"),
        ("MODEL_ARMOR", "content_filter"),
        ("LANGUAGE", "content_filter"),
        ("ESCALATION", "content_filter"),
        ("PUP_LIMITED_DISABLED", "content_filter"),
        ("CONTINUATION", "length"),
        ("UNEXPECTED_TOOL_CALL", "stop"),
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons_map_to_openai(reason: str | None, expected: str) -> None:
    candidate = {"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": reason}
    line = result_line(prediction(candidates=[candidate]), "a", "m")
    assert line.response is not None and line.response["body"]["choices"][0]["finish_reason"] == expected


def test_logprobs_result_becomes_openai_choice_logprobs_with_the_top_candidates_of_each_token() -> None:
    # Given a candidate with the log probabilities of its tokens (0.0, the proto3 default, left out) and the
    # top candidates at each step
    logprobs_result = {
        "chosenCandidates": [
            {"token": "Hi", "logProbability": -0.25, "tokenId": 5},
            {"token": " é", "tokenId": 9},
        ],
        "topCandidates": [
            {"candidates": [{"token": "Hi", "logProbability": -0.25}, {"token": "Hello", "logProbability": -2.5}]},
            {"candidates": [{"token": " é"}]},
        ],
        "logProbabilitySum": -0.25,
    }
    assert types.LogprobsResult.model_validate(logprobs_result).chosen_candidates  # Google's shape
    candidate = {"content": {"role": "model", "parts": [{"text": "Hi é"}]}, "finishReason": "STOP"}
    line = result_line(prediction(candidates=[{**candidate, "logprobsResult": logprobs_result}]), "a", "m")

    # Then the choice carries them as OpenAI's logprobs, each token with its UTF-8 bytes
    assert line.response is not None
    (choice,) = line.response["body"]["choices"]
    hi, hello, e = (
        {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
        {"token": "Hello", "logprob": -2.5, "bytes": [72, 101, 108, 108, 111]},
        {"token": " é", "logprob": 0.0, "bytes": [32, 195, 169]},
    )
    assert choice["logprobs"] == {
        "content": [{**hi, "top_logprobs": [hi, hello]}, {**e, "top_logprobs": [e]}],
        "refusal": None,
    }
    completion = ChatCompletion.model_validate(line.response["body"])
    assert completion.choices[0].logprobs is not None and completion.choices[0].logprobs.content is not None


@pytest.mark.parametrize(
    "logprobs_result",
    [
        None,
        "x",
        {"chosenCandidates": "x"},
        {"chosenCandidates": [{"token": 5}]},
        {"chosenCandidates": [7]},
        {"chosenCandidates": [{"token": "Hi"}], "topCandidates": ["x"]},
    ],
)
def test_logprobs_that_cannot_be_read_are_left_out_and_the_answer_kept(logprobs_result: Any) -> None:
    candidate = {"content": {"role": "model", "parts": [{"text": "Hi"}]}, "logprobsResult": logprobs_result}
    line = result_line(prediction(candidates=[candidate]), "a", "m")
    assert line.succeeded and line.response is not None
    (choice,) = line.response["body"]["choices"]
    assert choice["logprobs"] is None and choice["message"]["content"] == "Hi"


def test_several_candidates_become_several_choices() -> None:
    candidates = [
        {"index": 0, "content": {"role": "model", "parts": [{"text": "one"}]}, "finishReason": "STOP"},
        {"index": 1, "content": {"role": "model", "parts": [{"text": "two"}]}, "finishReason": "MAX_TOKENS"},
    ]
    line = result_line(prediction(candidates=candidates), "a", "m")
    assert line.response is not None
    choices = line.response["body"]["choices"]
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in choices] == [
        (0, "one", "stop"),
        (1, "two", "length"),
    ]


def test_a_blocked_prompt_is_a_content_filter_answer_that_still_bills_the_prompt() -> None:
    line = result_line(
        prediction(candidates=None, promptFeedback={"blockReason": "SAFETY"}, usageMetadata={"promptTokenCount": 9}),
        "a",
        "m",
    )
    assert line.succeeded and line.response is not None
    (choice,) = line.response["body"]["choices"]
    assert choice["finish_reason"] == "content_filter" and choice["message"]["content"] is None
    assert line.usage == LineUsage(input_tokens=9)


def test_model_falls_back_to_the_deployment_model_when_vertex_names_none() -> None:
    line = result_line(prediction(modelVersion=None), "a", "gemini-2.5-flash")
    assert line.response is not None and line.response["body"]["model"] == "gemini-2.5-flash"


@pytest.mark.parametrize(
    ("status", "status_code", "error_type"),
    [
        (
            'Bad Request: {"error": {"code": 400, "message": "Request contains an invalid argument.", '
            '"status": "INVALID_ARGUMENT"}}',
            400,
            "invalid_request_error",
        ),
        (
            # Vertex's own words for an out-of-range maxOutputTokens: its code, not "try again", says whose fault
            'Bad Request: {"error": {"code": 400, "message": "Unable to submit request because it has a '
            "maxOutputTokens value of 100000 but the supported range is from 1 (inclusive) to 65536 (exclusive). "
            'Update the value and try again.", "status": "INVALID_ARGUMENT"}}',
            400,
            "invalid_request_error",
        ),
        ('{"error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}}', 500, "server_error"),
        ("Unsupported MIME type: image/tiff", 400, "invalid_request_error"),
        (
            "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            400,
            "invalid_request_error",
        ),
        ("Internal error encountered.", 500, "server_error"),
        ("429 Resource exhausted. Please try again later.", 500, "server_error"),
        ("Deadline exceeded", 500, "server_error"),
        ("something odd happened", 500, "server_error"),
    ],
)
def test_a_line_with_a_status_is_an_error_line(status: str, status_code: int, error_type: str) -> None:
    raw = {"status": status, "processed_time": "2025-06-01T10:00:05Z", "request": {"labels": line_labels(0)}}
    line = result_line(raw, "bad-1", "m")
    assert not line.succeeded and line.usage is None and line.custom_id == "bad-1"
    assert line.response == {
        "status_code": status_code,
        "request_id": "",
        "body": {"error": {"message": status, "type": error_type, "param": None, "code": None}},
    }
    assert error_status_code(status) == status_code


def usage(**counts: Any) -> dict[str, Any]:
    return {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15, **counts}


def candidate(**fields: Any) -> dict[str, Any]:
    return {"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": "STOP", **fields}


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"status": "", "request": {}}, "response is not an object: null"),
        ({"status": "", "response": "oops"}, 'response is not an object: "oops"'),
        ({"status": "", "response": [{"candidates": []}]}, "response is not an object"),
        (prediction(candidates="Hello"), 'response.candidates is not a list: "Hello"'),
        (prediction(candidates={"content": {}}), "response.candidates is not a list"),
        (prediction(candidates=[candidate(), "Hello"]), "response.candidates[1] is not an object"),
        (prediction(candidates=[candidate(content="Hello")]), "response.candidates[0].content is not an object"),
        (prediction(candidates=[candidate(content={"parts": "Hello"})]), "candidates[0].content.parts is not"),
        (prediction(candidates=[candidate(content={"parts": ["Hello"]})]), "candidates[0].content.parts is not"),
        (prediction(usageMetadata="lots"), "response.usageMetadata is not an object"),
        (prediction(usageMetadata=usage(promptTokenCount=-5)), "usageMetadata.promptTokenCount is not a token count"),
        (prediction(usageMetadata=usage(candidatesTokenCount="-3")), "candidatesTokenCount is not a token count"),
        (prediction(usageMetadata=usage(thoughtsTokenCount=1.5)), "thoughtsTokenCount is not a token count"),
        (prediction(usageMetadata=usage(promptTokenCount=True)), "promptTokenCount is not a token count"),
        (prediction(usageMetadata=usage(promptTokenCount="9" * 30)), "promptTokenCount is not a token count"),
        (prediction(usageMetadata=usage(promptTokenCount=2**31)), "promptTokenCount is not a token count"),
        (prediction(candidates=10**30), "response.candidates is not a list: 1000000000"),
        (prediction(usageMetadata=usage(cachedContentTokenCount="ten")), "cachedContentTokenCount is not a token"),
        (prediction(usageMetadata=usage(cachedContentTokenCount=11)), "11 cached tokens of 10 prompt tokens"),
    ],
)
def test_a_malformed_prediction_is_a_provider_error_line_saying_what_was_wrong(raw: dict[str, Any], named: str) -> None:
    line = result_line(raw, "odd-1", "m")
    assert line.custom_id == "odd-1" and not line.succeeded
    assert line.response is None and line.usage is None
    assert line.error is not None and line.error["code"] == "provider_error"
    assert named in line.error["message"] and line.error["message"].startswith("Vertex AI returned a prediction")


def test_odd_but_readable_fields_fall_back_instead_of_failing_the_line() -> None:
    line = result_line(
        prediction(
            candidates=[candidate(index=True, content={"parts": [{"functionCall": {"name": "f", "id": 7}}]})],
            modelVersion=["gemini"],
            responseId=12,
            usageMetadata=None,
        ),
        "a",
        "gemini-2.5-flash",
    )
    assert line.succeeded and line.response is not None and line.usage == LineUsage()
    body = line.response["body"]
    assert body["model"] == "gemini-2.5-flash" and body["id"].startswith("chatcmpl-") and body["id"] != "chatcmpl-12"
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["function"] == {"name": "f", "arguments": "{}"}


# --- line labels ------------------------------------------------------------------------------------

# Google's label rules: keys start with a lowercase letter; keys and values use lowercase letters, digits,
# "_" and "-", at most 63 characters (values may be empty); at most 64 labels per request
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")


def test_line_labels_spell_the_index_one_decimal_digit_per_key_units_first() -> None:
    assert line_labels(40213) == {
        "batchgw_d0": "3",
        "batchgw_d1": "1",
        "batchgw_d2": "2",
        "batchgw_d3": "0",
        "batchgw_d4": "4",
    }


def test_line_labels_map_back_every_index_of_a_full_batch_using_only_digits_as_values() -> None:
    seen: dict[str, set[str]] = {}
    for index in range(MAX_LINES):
        labels = line_labels(index)
        assert line_index({"request": {"contents": [], "labels": labels}}) == index
        for key, value in labels.items():
            seen.setdefault(key, set()).add(value)
    # at most 10 values per key, however many batches: far below the 1,000 per key Google keeps over an
    # account's life
    assert set(seen) == {f"batchgw_d{place}" for place in range(5)}
    assert all(values <= set("0123456789") for values in seen.values())


def test_line_labels_obey_googles_label_rules() -> None:
    labels = line_labels(MAX_LINES - 1)
    assert len(labels) <= 64
    assert all(LABEL_KEY.match(key) and LABEL_VALUE.match(value) for key, value in labels.items())


@pytest.mark.parametrize("index", [-1, 100_000])
def test_line_labels_refuse_an_index_they_cannot_spell(index: int) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        line_labels(index)


def _without(labels: dict[str, str], key: str) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k != key}


@pytest.mark.parametrize(
    "prediction_line",
    [
        {"status": "oops"},
        {"request": "labels"},
        {"request": {"labels": None}},
        {"request": {"labels": ["batchgw_d0"]}},
        {"request": {"labels": {"batchgw_line": "12"}}},
        {"request": {"labels": _without(line_labels(12), "batchgw_d3")}},  # a key Google dropped
        {"request": {"labels": {**line_labels(12), "batchgw_d1": "12"}}},
        {"request": {"labels": {**line_labels(12), "batchgw_d1": "x"}}},
        {"request": {"labels": {**line_labels(12), "batchgw_d1": ""}}},
        {"request": {"labels": {**line_labels(12), "batchgw_d1": 1}}},
        {"request": {"labels": {**line_labels(12), "batchgw_d1": "\u0663"}}},  # an Arabic-Indic 3: isdigit() says yes
    ],
)
def test_line_index_is_none_for_missing_or_malformed_labels(prediction_line: dict[str, Any]) -> None:
    assert line_index(prediction_line) is None


def test_line_index_ignores_labels_of_others() -> None:
    assert line_index(prediction()) == 3
    assert line_index({"request": {"labels": {**line_labels(12), "team": "research"}}}) == 12


def test_index_in_line_reads_the_labels_of_a_prediction_cut_off_after_them() -> None:
    # Given a prediction line cut off in its response, whose request's text names a label key too
    request = {"contents": [{"role": "user", "parts": [{"text": '"batchgw_d0": "9"'}]}], "labels": line_labels(4021)}
    whole = orjson.dumps(prediction() | {"request": request})
    cut = whole[: whole.index(b'"response"') + 20]

    # Then its labels give its index (the text's key is escaped in the line: it is no label)
    assert index_in_line(cut) == 4021


@pytest.mark.parametrize(
    "prefix",
    [
        b'{"status":"","request":{"contents":[{"role":"user","parts":[{"te',  # cut off before the labels
        orjson.dumps({"request": {"labels": _without(line_labels(12), "batchgw_d3")}})[:-2],  # a key Google dropped
        # the model's answer repeats the label keys with other digits: which are the line's cannot be told
        orjson.dumps({"request": {"labels": line_labels(5)}, "response": {"args": line_labels(6)}})[:-2],
    ],
)
def test_index_in_line_is_none_unless_the_prefix_shows_each_label_once(prefix: bytes) -> None:
    assert index_in_line(prefix) is None


# --- jobs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("JOB_STATE_QUEUED", "validating"),
        ("JOB_STATE_PENDING", "validating"),
        ("JOB_STATE_RUNNING", "in_progress"),
        ("JOB_STATE_UPDATING", "in_progress"),
        ("JOB_STATE_PAUSED", "in_progress"),
        ("JOB_STATE_SUCCEEDED", "completed"),
        ("JOB_STATE_PARTIALLY_SUCCEEDED", "completed"),
        ("JOB_STATE_FAILED", "failed"),
        ("JOB_STATE_CANCELLING", "cancelling"),
        ("JOB_STATE_CANCELLED", "cancelled"),
        ("JOB_STATE_EXPIRED", "expired"),
    ],
)
def test_job_states_map_to_openai_statuses(state: str, expected: str) -> None:
    assert openai_state(state) == expected


def test_an_unknown_job_state_is_a_retryable_provider_error() -> None:
    with pytest.raises(ProviderError) as caught:
        openai_state("JOB_STATE_UNSPECIFIED")
    assert caught.value.retryable


def test_job_counts_come_from_completion_stats_as_strings_or_ints() -> None:
    job = {
        "state": "JOB_STATE_RUNNING",
        "completionStats": {"successfulCount": "7", "failedCount": 2, "incompleteCount": "1"},
    }
    assert job_status(job, 10).counts == Counts(total=10, completed=7, failed=2)
    assert job_status(job).counts == Counts(total=10, completed=7, failed=2)
    unknown = {"state": "JOB_STATE_FAILED", "completionStats": {"successfulCount": "3", "incompleteCount": "-1"}}
    assert job_status(unknown).counts == Counts(total=3, completed=3, failed=0)
    assert job_status({"state": "JOB_STATE_PENDING"}, 10).counts is None


def test_a_failed_job_reports_its_error() -> None:
    job = {"state": "JOB_STATE_FAILED", "error": {"code": 3, "message": "Invalid input file: line 2"}}
    status = job_status(job)
    assert status.state == "failed" and status.terminal
    assert status.errors == (ErrorEntry(code="invalid_request", message="Invalid input file: line 2"),)
    other = job_status({"state": "JOB_STATE_FAILED", "error": {"code": 13, "message": "Internal"}})
    assert other.errors == (ErrorEntry(code="provider_error", message="Internal"),)
    assert job_status({"state": "JOB_STATE_SUCCEEDED", "error": {}}).errors == ()
