"""Reading OpenAI-compatible batch objects and lines, including Azure's documented quirks."""

from __future__ import annotations

import orjson
import pytest

from shared.errors import ProviderError
from shared.providers.base import LineUsage, ResultLine, Unreadable
from shared.providers.openai import counts_of, errors_of, openai_state, result_line
from shared.records import Counts

# an Azure OpenAI batch as its older REST examples show it
AZURE_BATCH = {
    "cancelled_at": None,
    "completed_at": None,
    "created_at": "2024-07-19T17:13:57.2491382+00:00",
    "endpoint": None,
    "error_file_id": "",
    "errors": None,
    "id": "batch_6caaf24d-54a5-46be-b1b7-518884fcbdde",
    "in_progress_at": None,
    "input_file_id": "file-b4fa7277f3eb4722ac18b90f46102c3f",
    "metadata": None,
    "object": "batch",
    "output_file_id": "",
    "request_counts": {"completed": None, "failed": None, "total": None},
    "status": "Validating",
}


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("Validating", "validating"),
        ("InProgress", "in_progress"),
        ("in_progress", "in_progress"),
        ("Finalizing", "finalizing"),
        ("Completed", "completed"),
        ("canceled", "cancelled"),
        ("Cancelling", "cancelling"),
    ],
)
def test_statuses_in_any_spelling(status: str, state: str) -> None:
    assert openai_state(status) == state


def test_unknown_status_is_a_retryable_error() -> None:
    with pytest.raises(ProviderError) as caught:
        openai_state("Exploded")
    assert caught.value.retryable


def test_azure_batch_with_null_counts_and_iso_times_reads_cleanly() -> None:
    assert openai_state(AZURE_BATCH["status"]) == "validating"
    assert counts_of(AZURE_BATCH) == Counts(total=0, completed=0, failed=0)
    assert errors_of(AZURE_BATCH) == ()
    failed = {
        **AZURE_BATCH,
        "errors": {
            "object": "list",
            "data": [{"code": "invalid_json_line", "line": 2, "message": "bad", "param": None}],
        },
    }
    (error,) = errors_of(failed)
    assert (error.code, error.line, error.message) == ("invalid_json_line", 2, "bad")


def test_azure_output_line_without_id_reads_with_its_usage() -> None:
    line = orjson.dumps(
        {
            "custom_id": "task-0",
            "response": {
                "body": {
                    "id": "chatcmpl-9",
                    "object": "chat.completion",
                    "model": "gpt-4o-2024-05-13",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "Hi"},
                            "content_filter_results": {},
                        }
                    ],
                    "usage": {"completion_tokens": 5, "prompt_tokens": 27, "total_tokens": 32},
                    "prompt_filter_results": [],
                },
                "request_id": "6caaf24d",
                "status_code": 200,
            },
            "error": None,
        }
    )
    parsed = result_line(line)
    assert isinstance(parsed, ResultLine) and parsed.id is None and parsed.succeeded
    assert parsed.usage == LineUsage(input_tokens=27, output_tokens=5)


def test_blank_lines_are_skipped() -> None:
    assert result_line(b"") is None and result_line(b"  ") is None


@pytest.mark.parametrize(
    ("raw", "custom_id", "why"),
    [
        (b"not json", None, "not valid JSON"),
        (b"[1]", None, "no custom_id"),
        (b'{"no_custom_id": 1}', None, "no custom_id"),
        (b'{"id": "x", "custom_id": "a\\nb", "response": {"status_code": 20', "a\nb", "not valid JSON"),
        (b'{"custom_id": "c", "response": "ok"}', "c", "response is not a JSON object"),
        (b'{"custom_id": "c", "response": null, "error": "boom"}', "c", "error is not a JSON object"),
        (
            b'{"custom_id": "c", "response": {"status_code": 200, "body": {"usage": {"prompt_tokens": -3}}}}',
            "c",
            "not a non-negative integer",
        ),
    ],
)
def test_broken_lines_are_unreadable_for_the_custom_id_they_show(raw: bytes, custom_id: str | None, why: str) -> None:
    parsed = result_line(raw)
    assert isinstance(parsed, Unreadable) and parsed.custom_id == custom_id and why in parsed.reason
