"""The Vertex translation checked against the providers' own SDK types: Google's google-genai for what goes to
Vertex and comes back, openai's for what goes back to the user (shared/providers/vertex_format.py and
vertex_results.py)."""

from __future__ import annotations

import warnings
from typing import Any

import orjson
import pytest
from google.genai import types
from openai.types.chat import ChatCompletion
from pydantic import TypeAdapter, ValidationError

from shared.providers.vertex_format import generate_content_request, input_line, line_index
from shared.providers.vertex_results import result_line
from tests.fakes.vertex_upstream import FakeJob, FakeVertex, Forecast, function_to_call, line_problem

FORECAST_SCHEMA = Forecast.model_json_schema()
FORECAST_TOOL = {
    "type": "function",
    "function": {"name": "record_forecast", "description": "Record a forecast", "parameters": FORECAST_SCHEMA},
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
HI = [{"role": "user", "content": "hi"}]

BODIES: dict[str, dict[str, Any]] = {
    "system and turns": {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
        ]
    },
    "images inline and in cloud storage": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "gs://photos/cat.webp"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/dog.jpg"}},
                ],
            }
        ]
    },
    "audio and a pdf": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                    {
                        "type": "file",
                        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
                    },
                ],
            }
        ]
    },
    "tool calls answered": {
        "messages": [
            {"role": "user", "content": "Forecast for Paris, and the time?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "record_forecast", "arguments": '{"place": {"city": "Paris"}}'},
                    },
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
        ],
        "tools": [FORECAST_TOOL, TIME_TOOL],
        "tool_choice": "auto",
    },
    "tool choice none": {"messages": HI, "tools": [FORECAST_TOOL], "tool_choice": "none"},
    "tool choice required": {"messages": HI, "tools": [FORECAST_TOOL, TIME_TOOL], "tool_choice": "required"},
    "tool choice named": {
        "messages": HI,
        "tools": [FORECAST_TOOL, TIME_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
    },
    "json object": {"messages": HI, "response_format": {"type": "json_object"}},
    "json schema from pydantic": {
        "messages": HI,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "forecast", "schema": FORECAST_SCHEMA, "strict": True},
        },
    },
    "sampling": {
        "messages": HI,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 50,
        "seed": 42,
        "n": 2,
        "stop": ["END", "STOP"],
    },
    "penalties and logprobs": {
        "messages": HI,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logprobs": True,
        "top_logprobs": 3,
    },
    "max completion tokens and one stop": {
        "messages": HI,
        "max_completion_tokens": 100,
        "temperature": 0,
        "stop": "END",
        "n": 1,
    },
}

# each field of a GenerateContentRequest the translation writes, as google-genai types it (the SDK keeps
# the request's labels in GenerateContentConfig.labels)
REQUEST_FIELDS: dict[str, TypeAdapter[Any]] = {
    "contents": TypeAdapter(list[types.Content]),
    "systemInstruction": TypeAdapter(types.Content),
    "tools": TypeAdapter(list[types.Tool]),
    "toolConfig": TypeAdapter(types.ToolConfig),
    "generationConfig": TypeAdapter(types.GenerationConfig),
    "labels": TypeAdapter(types.GenerateContentConfig.model_fields["labels"].annotation),
}


def read_by_google(request: dict[str, Any]) -> dict[str, Any]:
    """`request` as google-genai's models read it and write it back (camelCase, unset fields left out).

    The SDK's models forbid unknown fields, and a value they coerce or drop comes back different."""
    unknown = set(request) - set(REQUEST_FIELDS)
    assert not unknown, f"not fields of a GenerateContentRequest: {unknown}"
    read: dict[str, Any] = {}
    for name, value in request.items():
        adapter = REQUEST_FIELDS[name]
        parsed = adapter.validate_json(orjson.dumps(value))
        read[name] = adapter.dump_python(parsed, mode="json", by_alias=True, exclude_none=True)
    return read


@pytest.mark.parametrize("name", list(BODIES))
def test_every_translated_request_reads_in_googles_sdk_types_exactly_as_sent(name: str) -> None:
    request = generate_content_request(BODIES[name], 12345)
    assert read_by_google(request) == request


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3-flash-preview"])
@pytest.mark.parametrize("effort", ["none", "minimal", "low", "medium", "high", "xhigh"])
def test_every_reasoning_effort_reads_in_googles_sdk_types_exactly_as_sent(model: str, effort: str) -> None:
    request = generate_content_request({"messages": HI, "reasoning_effort": effort}, 0, model=model)
    assert "thinkingConfig" in request["generationConfig"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # google-genai only warns of a level that is not one of ThinkingLevel's
        assert read_by_google(request) == request


def test_the_bodies_cover_every_request_field_and_the_json_schema_fields() -> None:
    requests = [generate_content_request(body, 0) for body in BODIES.values()]
    assert set().union(*requests) == set(REQUEST_FIELDS)
    configs = [r["generationConfig"] for r in requests if "generationConfig" in r]
    assert set().union(*configs) == {
        "temperature",
        "topP",
        "maxOutputTokens",
        "seed",
        "candidateCount",
        "stopSequences",
        "responseMimeType",
        "responseJsonSchema",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
    }
    declarations = [d for r in requests for t in r.get("tools", ()) for d in t["functionDeclarations"]]
    forecast = [d["parametersJsonSchema"] for d in declarations if d["name"] == "record_forecast"]
    assert forecast and all(schema == FORECAST_SCHEMA for schema in forecast)
    assert not any("parameters" in d for d in declarations)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("generationConfig", {"maxOutputToken": 5}),  # misspelt
        ("generationConfig", {"responseMimeType": "application/json", "responseSchema": FORECAST_SCHEMA}),
        ("tools", [{"functionDeclarations": [{"name": "f", "parameters": FORECAST_SCHEMA}]}]),
        ("contents", [{"role": "user", "parts": [{"text": "hi", "image_url": "x"}]}]),
        ("toolConfig", {"functionCallingConfig": {"mode": "ANY", "allowedFunctions": ["f"]}}),
    ],
)
def test_the_sdk_check_refuses_a_misspelt_field_or_json_schema_in_a_vertex_schema_field(field: str, value: Any) -> None:
    # the check above can fail: Google's models refuse what Vertex's proto parser refuses
    with pytest.raises(ValidationError):
        read_by_google({field: value})


@pytest.fixture
def predictions() -> list[dict[str, Any]]:
    """What the fake Vertex writes for every body above, and for a request it fails, in input order."""
    bodies = [*BODIES.values(), {"messages": [{"role": "user", "content": "please fail"}]}]
    lines = [orjson.loads(input_line(body, index)) for index, body in enumerate(bodies)]
    assert [line_problem(line) for line in lines] == [None] * len(lines)
    fake = FakeVertex(processing_seconds=0)
    fake.see_labels(lines)
    job = FakeJob(
        name="projects/p/locations/us-central1/batchPredictionJobs/1",
        display_name="batch_sdk",
        model="gemini-2.5-flash",
        body={},
        output_prefix="gs://bucket/out",
        lines=lines,
    )
    fake.advance(job)
    assert job.state == "JOB_STATE_SUCCEEDED"
    written = {
        line_index(prediction): prediction
        for prediction in (orjson.loads(raw) for content in fake.objects.values() for raw in content.splitlines())
    }
    assert set(written) == set(range(len(lines)))
    return [written[index] for index in range(len(lines))]


def test_every_prediction_the_fake_writes_is_a_google_generate_content_response(
    predictions: list[dict[str, Any]],
) -> None:
    *answered, failed = predictions
    assert len(answered) == len(BODIES)
    for prediction in answered:
        assert prediction["status"] == ""
        response = types.GenerateContentResponse.model_validate_json(orjson.dumps(prediction["response"]))
        assert response.candidates and response.usage_metadata and response.usage_metadata.prompt_token_count
        if function_to_call(prediction["request"]):
            assert response.function_calls
        else:
            assert response.text and response.text.startswith("answer to")
    assert failed["status"].startswith("Bad Request") and "response" not in failed


def test_every_prediction_translated_back_is_an_openai_chat_completion(predictions: list[dict[str, Any]]) -> None:
    *answered, failed = predictions
    for index, prediction in enumerate(answered):
        line = result_line(prediction, f"req-{index}", "gemini-2.5-flash")
        assert line.succeeded and line.response is not None
        completion = ChatCompletion.model_validate(line.response["body"])
        (choice,) = completion.choices
        calls = choice.message.tool_calls or []
        forced = function_to_call(prediction["request"])
        assert [call.function.name for call in calls if call.type == "function"] == ([forced] if forced else [])
        assert choice.finish_reason == ("tool_calls" if forced else "stop")
        assert completion.usage is not None and completion.usage.total_tokens > 0
    error = result_line(failed, "bad", "gemini-2.5-flash")
    assert not error.succeeded and error.response is not None and error.response["status_code"] == 400
    assert "invalid argument" in error.response["body"]["error"]["message"]
