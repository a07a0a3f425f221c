"""OpenAI request bodies for Mistral's batch lines, and Mistral's answers and job states in OpenAI's terms."""

from __future__ import annotations

from typing import Any

import pytest

from shared.errors import ProviderError
from shared.providers.base import TranslationError
from shared.providers.mistral import job_status
from shared.providers.mistral_format import openai_response, to_mistral
from shared.records import Counts

USER = {"role": "user", "content": "hi"}


def test_chat_body_keeps_mistral_fields_and_renames_openai_ones() -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": [USER],
        "max_tokens": 10,
        "max_completion_tokens": 20,
        "seed": 3,
        "temperature": 0.2,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
        "response_format": {"type": "json_object"},
        "user": "u-1",
        "logit_bias": None,
    }
    assert to_mistral(body) == {
        "messages": [USER],
        "max_tokens": 20,  # max_completion_tokens wins over the older max_tokens
        "random_seed": 3,
        "temperature": 0.2,
        "tools": body["tools"],
        "tool_choice": "required",
        "response_format": {"type": "json_object"},
    }


def test_chat_messages_lose_names_and_developer_becomes_system_but_tool_messages_keep_their_name() -> None:
    messages = [
        {"role": "developer", "content": "Be brief.", "name": "ops"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}], "refusal": None},
        {"role": "tool", "tool_call_id": "c1", "name": "f", "content": "18C"},
    ]
    assert to_mistral({"messages": messages})["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "tool_calls": [{"id": "c1"}]},
        {"role": "tool", "tool_call_id": "c1", "name": "f", "content": "18C"},
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"messages": [USER], "logprobs": True}, "`logprobs`"),
        ({"messages": [USER], "stream": True}, "streamed"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "input_audio"),
        ({"messages": [{"role": "function", "content": "x"}]}, "role 'function'"),
        ({"messages": [{"role": "assistant", "content": "x", "audio": {"id": "a"}}]}, "`audio`"),
        ({"messages": [USER], "tools": [{"type": "custom", "custom": {"name": "x"}}]}, "function tools only"),
        ({"input": [[1, 2, 3]]}, "list of strings"),
        ({"input": "x", "user": "u", "dimensions": 8, "extra": 1}, "`extra`"),
        ({"model": "m"}, "needs `messages` \\(chat\\) or `input`"),
    ],
)
def test_requests_mistral_cannot_take_are_refused_with_the_reason(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(TranslationError, match=reason):
        to_mistral(body)


def test_embeddings_body_sends_dimensions_as_output_dimension() -> None:
    body = {"model": "e", "input": ["a"], "dimensions": 8, "encoding_format": "float", "user": "u"}
    assert to_mistral(body) == {"input": ["a"], "output_dimension": 8, "encoding_format": "float"}


def test_mistral_error_body_becomes_an_openai_error_with_a_readable_message() -> None:
    detail = {"detail": [{"type": "extra_forbidden", "loc": ["body", "x"]}]}
    body = {"object": "error", "message": detail, "type": "invalid_request_message_error", "param": None, "code": None}
    error = openai_response({"status_code": 422, "body": body})["body"]["error"]
    assert error["type"] == "invalid_request_message_error" and "extra_forbidden" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_mistral_chat_answer_takes_openai_finish_reason_text_content_and_a_request_id() -> None:
    content = [{"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]}, {"type": "text", "text": "42"}]
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "model_length"}
    response = openai_response({"status_code": 200, "body": {"id": "cmpl-1", "choices": [choice]}})
    assert response["request_id"] == "cmpl-1"
    (out,) = response["body"]["choices"]
    assert out["finish_reason"] == "length" and out["message"]["content"] == "42"


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("QUEUED", "in_progress"),
        ("RUNNING", "in_progress"),
        ("SUCCESS", "completed"),
        ("FAILED", "failed"),
        ("TIMEOUT_EXCEEDED", "expired"),
        ("CANCELLATION_REQUESTED", "cancelling"),
        ("CANCELLED", "cancelled"),
    ],
)
def test_mistral_job_status_maps_to_openai_state(status: str, state: str) -> None:
    assert job_status({"status": status}).state == state


def test_mistral_job_counts_are_succeeded_and_failed_and_errors_only_show_on_a_failed_job() -> None:
    job = {"total_requests": 5, "completed_requests": 4, "succeeded_requests": 3, "failed_requests": 1}
    errors = [{"message": "invalid line", "count": 2}]
    running = job_status(job | {"status": "RUNNING", "errors": errors})
    assert running.counts == Counts(total=5, completed=3, failed=1)
    assert running.errors == ()
    (error,) = job_status(job | {"status": "FAILED", "errors": errors}).errors
    assert error.message == "invalid line (2 requests)"


def test_unknown_mistral_job_status_is_a_retryable_provider_error() -> None:
    with pytest.raises(ProviderError, match="PAUSED") as raised:
        job_status({"status": "PAUSED"})
    assert raised.value.retryable
