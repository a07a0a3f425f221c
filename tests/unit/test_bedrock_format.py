"""Bedrock record translation: Converse requests and responses, record ids, error records."""

from __future__ import annotations

import pytest

from shared.errors import ProviderError
from shared.providers.base import LineUsage
from shared.providers.bedrock_format import (
    error_response,
    from_converse,
    index_of,
    is_anthropic,
    record_id,
    to_converse,
)

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="


def test_chat_request_becomes_a_converse_request() -> None:
    body = {
        "model": "nova",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
            {"role": "assistant", "content": "A pixel."},
            {"role": "user", "content": "Sure?"},
        ],
        "max_completion_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "seed": 7,
    }
    assert to_converse(body) == {
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


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
    ],
)
def test_what_converse_batches_cannot_take_is_refused_permanently(body: dict[str, object]) -> None:
    with pytest.raises(ProviderError) as caught:
        to_converse(body)
    assert not caught.value.retryable


def test_converse_response_becomes_a_chat_completion_with_usage() -> None:
    output = {
        "output": {"message": {"role": "assistant", "content": [{"text": "Hel"}, {"text": "lo"}]}},
        "stopReason": "max_tokens",
        "usage": {"inputTokens": 10, "outputTokens": 4, "totalTokens": 14, "cacheReadInputTokens": 6},
    }
    body, usage = from_converse(output, model="amazon.nova-lite-v1:0", completion_id="batch_req_1")
    assert body["choices"][0]["message"]["content"] == "Hello" and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": 16,
        "completion_tokens": 4,
        "total_tokens": 20,
        "prompt_tokens_details": {"cached_tokens": 6},
    }
    assert usage == LineUsage(input_tokens=16, cached_tokens=6, output_tokens=4)


def test_error_records_become_openai_error_responses() -> None:
    response = error_response({"errorCode": 400, "errorMessage": "Malformed input"}, "req_1")
    assert response == {
        "status_code": 400,
        "request_id": "req_1",
        "body": {"error": {"message": "Malformed input", "type": "invalid_request_error", "param": None, "code": None}},
    }
    assert error_response({}, "req_2")["status_code"] == 500


def test_record_ids_round_trip_and_models_are_told_apart() -> None:
    assert index_of(record_id(42)) == 42 and index_of("other") is None
    assert is_anthropic("anthropic.claude-3-5-sonnet-20240620-v1:0")
    assert is_anthropic("us.anthropic.claude-sonnet-4-5-20250929-v1:0") and not is_anthropic("amazon.nova-lite-v1:0")
