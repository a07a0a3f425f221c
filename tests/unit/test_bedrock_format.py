"""Bedrock records: Converse and Claude requests, what Bedrock cannot take, responses, and reading output files."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import orjson
import pytest
from moto import mock_aws

from shared.jsonl import MAX_LINE_BYTES
from shared.providers import anthropic_format, registry
from shared.providers.base import LineUsage, ResultLine, TranslationError, Unreadable
from shared.providers.bedrock import BedrockProvider, model_input
from shared.providers.bedrock_format import (
    ANTHROPIC_VERSION,
    IMAGES_AS_DATA_URLS,
    MAX_RECORD_BYTES,
    MalformedOutput,
    error_response,
    from_converse,
    index_in_line,
    index_of,
    is_anthropic,
    record_id,
    to_claude,
    to_converse,
)
from shared.routing import Deployment

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
NOVA = "amazon.nova-lite-v1:0"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
BUCKET = "batchgw-dev"
JOB = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/job000000001"


def deployment(model: str, **fields: Any) -> Deployment:
    return Deployment(
        name="d",
        provider="bedrock",
        model=model,
        role_arn="arn:aws:iam::123456789012:role/batchgw-bedrock",
        s3_bucket=BUCKET,
        region="us-east-1",
        **fields,
    )


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


# --- Converse requests ------------------------------------------------------------------------------


def test_chat_request_becomes_a_converse_request() -> None:
    body = {
        "model": "nova",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
            user([{"type": "text", "text": "What is this?"}, image(f"data:image/png;base64,{PNG}")]),
            {"role": "assistant", "content": "A pixel."},
            user("Sure?"),
        ],
        "max_completion_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "seed": 7,
    }
    assert to_converse(body, max_tokens=1024) == {
        "system": [{"text": "Be brief."}, {"text": "No emoji."}],
        "messages": [
            {
                "role": "user",
                "content": [{"text": "What is this?"}, {"image": {"format": "png", "source": {"bytes": PNG}}}],
            },
            {"role": "assistant", "content": [{"text": "A pixel."}]},
            {"role": "user", "content": [{"text": "Sure?"}]},
        ],
        "inferenceConfig": {"maxTokens": 64, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
    }


def test_converse_request_merges_turns_clamps_temperature_and_drops_blank_text() -> None:
    body = {
        "messages": [user("one"), user([{"type": "text", "text": "  "}, {"type": "text", "text": "two"}]), user("")],
        "temperature": 1.7,
        "stop": ["", "END"],
        "response_format": {"type": "json_object"},
    }
    assert to_converse(body, max_tokens=1024) == {
        "messages": [{"role": "user", "content": [{"text": "one"}, {"text": "two"}]}],
        "system": [{"text": anthropic_format.JSON_OBJECT_INSTRUCTION}],
        "inferenceConfig": {"maxTokens": 1024, "temperature": 1.0, "stopSequences": ["END"]},
    }


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"messages": [user("x")], "tools": [WEATHER_TOOL]}, "does not take tools"),
        ({"messages": [user("x"), {"role": "assistant", "content": None, "tool_calls": [CALL]}]}, "tool calls"),
        ({"messages": [user("x"), {"role": "tool", "tool_call_id": "call_1", "content": "18C"}]}, "tool calls"),
        ({"messages": [user([image("https://example.com/cat.png")])]}, IMAGES_AS_DATA_URLS),
        ({"messages": [user([image("data:image/tiff;base64,AAAA")])]}, "image/png, image/jpeg, image/gif, image/webp"),
        ({"messages": [user([image("data:image/png;base64,not base64!")])]}, "not valid base64"),
        (
            {"messages": [user([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}])]},
            "'input_audio' is not supported",
        ),
        (
            {"messages": [user([{"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}])]},
            "'file' is not supported",
        ),
        ({"messages": [{"role": "system", "content": [image(f"data:image/png;base64,{PNG}")]}, user("x")]}, "system"),
        ({"messages": [user("x")], "response_format": {"type": "json_schema", "json_schema": {}}}, "json_schema"),
        ({"messages": [{"role": "assistant", "content": "Hi"}, user("x")]}, "start with a user message"),
        ({"messages": [user("x"), {"role": "assistant", "content": ""}, user("y")]}, "no content"),
        ({"messages": [{"role": "critic", "content": "x"}]}, "'critic' is not supported"),
        ({"messages": "x"}, "messages must be a list"),
        ({"messages": [user("x")], "max_tokens": 0}, "positive integer"),
        ({"messages": [user("x")], "temperature": "warm"}, "temperature must be a number"),
        ({"messages": [user("x")], "n": 3}, "n=3: Bedrock's Converse API answers one choice per request"),
        ({"messages": [user("x")], "logprobs": True}, "Bedrock's Converse API does not return log probabilities"),
    ],
)
def test_what_converse_cannot_take_is_a_translation_error_for_that_request(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(TranslationError) as caught:
        to_converse(body, max_tokens=1024)
    assert reason in str(caught.value)
    # screening finds it before the batch runs, so it fails alone
    assert registry.screen(deployment(NOVA), {"model": "d", **body}) == str(caught.value)


def test_a_request_without_its_own_limit_is_capped_at_the_deployments_output_bound() -> None:
    # Given deployments whose output bound (what batchgw reserves budget for) is 1,024 tokens, and one at the default
    claude, nova = deployment(CLAUDE, max_output_tokens=1024), deployment(NOVA, max_output_tokens=1024)
    body = {"messages": [user("Write a long essay.")]}

    # Then a record of a line without a limit caps its answer at that bound, both for Claude and for Converse
    assert model_input(claude, body)["max_tokens"] == 1024
    assert model_input(nova, body)["inferenceConfig"] == {"maxTokens": 1024}
    assert model_input(deployment(NOVA), body)["inferenceConfig"] == {"maxTokens": deployment(NOVA).output_bound}
    # and a line's own limit wins
    assert model_input(claude, {**body, "max_tokens": 50})["max_tokens"] == 50
    assert model_input(nova, {**body, "max_completion_tokens": 50})["inferenceConfig"] == {"maxTokens": 50}


# --- Claude's native body ---------------------------------------------------------------------------


def test_claude_record_is_the_native_body_with_bedrocks_version_and_no_model() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            user([{"type": "text", "text": "What is this?"}, image(f"data:image/png;base64,{PNG}")]),
        ],
        "max_tokens": 50,
    }
    assert to_claude(body, CLAUDE, max_tokens=1024) == {
        "anthropic_version": ANTHROPIC_VERSION,
        "max_tokens": 50,
        "system": "Be brief.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                ],
            }
        ],
    }
    assert model_input(deployment(CLAUDE), body) == to_claude(body, CLAUDE, max_tokens=1024)


def test_claude_record_refuses_image_urls_that_anthropic_itself_takes() -> None:
    body = {"messages": [user([{"type": "text", "text": "What?"}, image("https://example.com/cat.png")])]}
    # Anthropic's own API takes the URL; Bedrock does not
    assert anthropic_format.to_params(body, CLAUDE)["messages"][0]["content"][1]["source"]["type"] == "url"
    with pytest.raises(TranslationError, match=IMAGES_AS_DATA_URLS):
        to_claude(body, CLAUDE, max_tokens=1024)
    assert registry.screen(deployment(CLAUDE), body) == IMAGES_AS_DATA_URLS


def test_claude_record_refuses_what_anthropic_format_refuses_as_translation_errors() -> None:
    audio = {"messages": [user([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}])]}
    assert "'input_audio' is not supported" in str(registry.screen(deployment(CLAUDE), audio))
    several = {"messages": [user("x")], "n": 2}
    assert "n=2: Anthropic's Messages API answers one choice" in str(registry.screen(deployment(CLAUDE), several))


# --- responses --------------------------------------------------------------------------------------


def converse_output(**usage: Any) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": "Hel"}, {"text": "lo"}]}},
        "stopReason": "max_tokens",
        "usage": {"inputTokens": 10, "outputTokens": 4, "totalTokens": 14, **usage},
        "metrics": {"latencyMs": 100},
    }


def test_converse_response_becomes_a_chat_completion_with_usage() -> None:
    output = converse_output(cacheReadInputTokens=6, cacheWriteInputTokens=2, totalTokens=22)
    body, usage = from_converse(output, model=NOVA, completion_id="batch_req_1")
    assert body["choices"][0]["message"]["content"] == "Hello" and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": 18,
        "completion_tokens": 4,
        "total_tokens": 22,
        "prompt_tokens_details": {"cached_tokens": 6},
    }
    assert usage == LineUsage(input_tokens=18, cached_tokens=6, cache_write_tokens=2, output_tokens=4)


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ("oops", "modelOutput is 'oops'"),
        ({**converse_output(), "output": {"message": {"content": "Hello"}}}, "not a message with content blocks"),
        ({**converse_output(), "output": {"message": {"content": ["Hello"]}}}, "content block 0 is 'Hello'"),
        ({**converse_output(), "output": {"message": {"content": [{"text": 5}]}}}, "content block 0 has text 5"),
        ({**converse_output(), "usage": None}, "usage is None"),
        (converse_output(inputTokens=-1), "usage.inputTokens is -1"),
        (converse_output(outputTokens="4"), "usage.outputTokens is '4'"),
        (converse_output(cacheReadInputTokens=1.5), "usage.cacheReadInputTokens is 1.5"),
        ({**converse_output(), "usage": {"outputTokens": 4}}, "usage.inputTokens is None"),
    ],
)
def test_malformed_converse_response_is_refused_saying_why(output: Any, problem: str) -> None:
    with pytest.raises(MalformedOutput, match=problem.replace(".", r"\.")):
        from_converse(output, model=NOVA, completion_id="batch_req_1")


def test_error_records_become_openai_error_responses() -> None:
    response = error_response({"errorCode": 400, "errorMessage": "Malformed input"}, "req_1")
    assert response == {
        "status_code": 400,
        "request_id": "req_1",
        "body": {"error": {"message": "Malformed input", "type": "invalid_request_error", "param": None, "code": None}},
    }
    assert error_response({}, "req_2")["status_code"] == 500
    with pytest.raises(MalformedOutput, match="not an object"):
        error_response("throttled", "req_3")


def test_record_ids_round_trip_and_models_are_told_apart() -> None:
    assert record_id(42) == "r0000000042" and index_of(record_id(42)) == 42
    assert index_of("r00000000042") == 42  # the 12-character ids batchgw wrote before
    assert index_of("other") is None and index_of("r" + "\u0661" * 10) is None
    assert index_in_line(b'{"recordId": "r0000000007", "modelInput": {"messages": [{"con') == 7
    assert index_in_line(b'{"modelInput": {"messages": [{"con') is None
    assert is_anthropic("anthropic.claude-3-5-sonnet-20240620-v1:0")
    assert is_anthropic("us.anthropic.claude-sonnet-4-5-20250929-v1:0") and not is_anthropic("amazon.nova-lite-v1:0")


# --- reading a job's output file --------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield


def claude_output(**usage: Any) -> dict[str, Any]:
    return {
        "id": "msg_bdrk_01",
        "type": "message",
        "role": "assistant",
        "model": CLAUDE,
        "content": [{"type": "text", "text": "Paris."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 30, "output_tokens": 5, **usage},
    }


def record(index: int, **fields: Any) -> bytes:
    return orjson.dumps({"recordId": record_id(index), "modelInput": {"messages": []}, **fields})


def read_output(model: str, lines: list[bytes], custom_ids: list[str]) -> list[ResultLine | Unreadable]:
    """What BedrockProvider.results yields for a job whose output file holds `lines`."""
    prefix = "batchgw/batch_01/output/"
    key = f"{prefix}job000000001/input.jsonl.out"
    boto3.client("s3", region_name="us-east-1").put_object(Bucket=BUCKET, Key=key, Body=b"\n".join(lines) + b"\n")
    provider = BedrockProvider(deployment(model), boto3.session.Session())
    return list(provider.results({"batch_id": JOB, "output_prefix": prefix}, custom_ids))


@pytest.mark.parametrize(
    ("model", "good", "wrong_block", "negative", "not_int"),
    [
        (
            CLAUDE,
            claude_output(),
            {**claude_output(), "content": [{"type": "text", "text": None}]},
            claude_output(input_tokens=-3),
            claude_output(output_tokens=2.5),
        ),
        (
            NOVA,
            converse_output(),
            {**converse_output(), "output": {"message": {"content": [["Hello"]]}}},
            converse_output(outputTokens=-3),
            converse_output(inputTokens="10"),
        ),
    ],
)
@pytest.mark.usefixtures("aws")
def test_output_file_with_every_defect_yields_each_request_once_and_keeps_good_usage(
    model: str, good: dict[str, Any], wrong_block: dict[str, Any], negative: dict[str, Any], not_int: dict[str, Any]
) -> None:
    # Given an output file with good records, each defect, a repeated record and a record too long to read
    custom_ids = [f"c{i}" for i in range(9)]
    lines = [
        record(0, modelOutput=good),
        b"{not json",
        b"[1, 2]",
        record(99, modelOutput=good),
        orjson.dumps({"recordId": "bogus", "modelOutput": good}),
        record(1, modelOutput="oops"),
        record(2, modelOutput=wrong_block),
        record(3, modelOutput=negative),
        record(4, modelOutput=not_int),
        record(5, error={"errorCode": 400, "errorMessage": "Malformed input request: #: bad"}),
        record(0, modelOutput=converse_output(inputTokens=999) if model == NOVA else claude_output(input_tokens=999)),
        record(6),
        record(7, error="throttled"),
        b'{"recordId": "%s", "modelInput": {"text": "%s"}}' % (record_id(8).encode(), b"a" * MAX_RECORD_BYTES),
        b"",
    ]

    # When the adapter reads it
    results = read_output(model, lines, custom_ids)

    # Then every request of the file has exactly one line, and nothing raised
    named = [item.custom_id for item in results if item.custom_id is not None]
    assert sorted(named) == custom_ids
    assert [item for item in results if item.custom_id is None] == [
        Unreadable(None, "a record is not valid JSON"),
        Unreadable(None, "a record is not a JSON object"),
        Unreadable(None, "record 'r0000000099' maps to no request"),
        Unreadable(None, "record 'bogus' maps to no request"),
    ]
    by_id = {item.custom_id: item for item in results}
    first, failed = by_id["c0"], by_id["c5"]
    assert isinstance(first, ResultLine) and first.succeeded and first.usage is not None
    assert first.usage.output_tokens == 4 if model == NOVA else 5
    assert first.usage.input_tokens != 999  # the first record's usage, not the repeat's
    assert isinstance(failed, ResultLine) and failed.response is not None and failed.response["status_code"] == 400
    reasons = {item.custom_id: item.reason for item in results if isinstance(item, Unreadable) and item.custom_id}
    assert sorted(reasons) == ["c1", "c2", "c3", "c4", "c6", "c7", "c8"]
    assert "'oops'" in reasons["c1"] and "content block 0" in reasons["c2"] and "neither" in reasons["c6"]
    assert "-3" in reasons["c3"] and "usage" in reasons["c4"] and "'throttled'" in reasons["c7"]
    assert f"longer than {MAX_RECORD_BYTES:,} bytes" in reasons["c8"]


@pytest.mark.usefixtures("aws")
def test_the_record_of_an_input_line_as_long_as_batchgw_takes_is_read_and_priced() -> None:
    # Given a request whose input line is just under batchgw's line limit, whose record repeats it as modelInput
    body = {"messages": [user("x" * (MAX_LINE_BYTES - 200))]}
    line = orjson.dumps({"custom_id": "big", "method": "POST", "url": "/v1/chat/completions", "body": body})
    assert len(line) <= MAX_LINE_BYTES
    answered = {"recordId": record_id(0), "modelInput": model_input(deployment(CLAUDE), body)}
    answered["modelOutput"] = claude_output()

    # When the adapter reads its output
    (result,) = read_output(CLAUDE, [orjson.dumps(answered)], ["big"])

    # Then its answer is read and priced, not lost as a record too long to read
    assert isinstance(result, ResultLine) and result.succeeded
    assert result.usage == LineUsage(input_tokens=30, output_tokens=5)


@pytest.mark.usefixtures("aws")
def test_cut_off_record_is_unreadable_for_the_request_its_record_id_names() -> None:
    # Given an output file with a record cut off mid-JSON, a cut-off repeat of a record read before, and a
    # record cut off before its recordId
    whole = record(0, modelOutput=claude_output())
    cut = record(1, modelOutput=claude_output())
    lines = [whole, cut[: len(cut) // 2], whole[: len(whole) // 2], b'{"modelInput": {"messages": [{"con']

    # When the adapter reads it
    results = read_output(CLAUDE, lines, ["c0", "c1"])

    # Then the cut-off record fails its own request, the repeat is dropped, and the last names no request
    assert isinstance(results[0], ResultLine) and results[0].succeeded and results[0].custom_id == "c0"
    assert results[1:] == [
        Unreadable("c1", "a record is not valid JSON"),
        Unreadable(None, "a record is not valid JSON"),
    ]
