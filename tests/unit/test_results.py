"""Output lines: usage from every OpenAI body shape, stable ids, the not-run error lines."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from shared.providers.base import LineUsage, ResultLine, Unreadable
from shared.results import BadUsage, checked, not_run, render, request_id, usage_from_openai


def test_usage_from_chat_completion() -> None:
    body = {
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 3},
            "completion_tokens_details": {"reasoning_tokens": 2},
        }
    }
    assert usage_from_openai(body) == LineUsage(input_tokens=10, cached_tokens=3, output_tokens=4, reasoning_tokens=2)


def test_usage_from_responses_and_embeddings() -> None:
    responses = {"usage": {"input_tokens": 9, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 1}}}
    assert usage_from_openai(responses) == LineUsage(input_tokens=9, cached_tokens=1, output_tokens=5)
    assert usage_from_openai({"usage": {"prompt_tokens": 7, "total_tokens": 7}}) == LineUsage(input_tokens=7)
    assert usage_from_openai({"error": {}}) is None and usage_from_openai("x") is None


_COUNTS: dict[str, dict[str, Any]] = {  # every count given, as OpenAI gives them
    "chat": {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": 1},
    },
    "responses": {
        "input_tokens": 10,
        "output_tokens": 4,
        "input_tokens_details": {"cached_tokens": 2},
        "output_tokens_details": {"reasoning_tokens": 1},
    },
}
_FIELDS = [
    ("chat", ("prompt_tokens",)), ("chat", ("completion_tokens",)),
    ("chat", ("prompt_tokens_details", "cached_tokens")), ("chat", ("completion_tokens_details", "reasoning_tokens")),
    ("responses", ("input_tokens",)), ("responses", ("output_tokens",)),
    ("responses", ("input_tokens_details", "cached_tokens")),
    ("responses", ("output_tokens_details", "reasoning_tokens")),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "path"), _FIELDS)
@pytest.mark.parametrize("bad", [-1, True, 1.5, "3", [3]])
def test_a_count_that_is_not_a_whole_non_negative_number_is_refused_in_any_field(
    kind: str, path: tuple[str, ...], bad: object
) -> None:
    assert usage_from_openai({"usage": _COUNTS[kind]}) == LineUsage(10, 2, 0, 4, 1)
    usage = dict(_COUNTS[kind])
    if len(path) == 2:
        usage[path[0]] = {path[1]: bad}
    else:
        usage[path[0]] = bad
    with pytest.raises(BadUsage, match="is not a non-negative integer"):
        usage_from_openai({"usage": usage})
    # and the same field given as None counts as none
    usage[path[0]] = {path[1]: None} if len(path) == 2 else None
    assert usage_from_openai({"usage": usage}) is not None


def test_rendered_lines_have_stable_ids_and_openai_shape() -> None:
    line = ResultLine(custom_id="a", response={"status_code": 200, "request_id": "r", "body": {}})
    first, second = orjson.loads(render(line, "batch_1")), orjson.loads(render(line, "batch_1"))
    assert first == second and first["id"] == request_id("batch_1", "a") and first["error"] is None
    assert request_id("batch_1", "a") != request_id("batch_2", "a")
    assert render(line, "batch_1").endswith(b"\n")


def test_requests_never_run_become_error_lines_by_outcome() -> None:
    assert not_run("a", "expired").error == {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    }
    cancelled = not_run("a", "cancelled").error
    assert cancelled is not None and cancelled["code"] == "batch_cancelled"
    assert not not_run("a", "failed").succeeded and not_run("a", "failed").response is None


@pytest.mark.parametrize(
    "usage",
    [
        LineUsage(-1, 0, 0, 5, 0),
        LineUsage(3, 0, 0, True, 0),
        LineUsage(3, 0, 0, 5.0, 0),  # type: ignore[arg-type]
        LineUsage(3, 0, -2, 5, 0),
        LineUsage(3, 0, 0, 5, 2**64 - 1),  # a wrapped counter
        LineUsage(3, 10**9 + 1, 0, 5, 0),
    ],
)
def test_an_adapters_usage_that_is_not_counts_fails_its_line_alone(usage: LineUsage) -> None:
    # the last check before pricing: whatever an adapter built, a negative, bool, float or impossibly large
    # count is not priced
    line = ResultLine("c1", {"status_code": 200, "body": {}}, usage=usage)
    why = f"the usage {tuple(usage)!r} is not token counts from 0 to 1,000,000,000"
    assert checked(line) == Unreadable("c1", why)
    at_most = replace(line, usage=LineUsage(10**9, 10**9, 10**9, 10**9, 10**9))
    assert checked(at_most) == at_most


def test_an_adapters_whole_counts_pass_unchanged() -> None:
    line = ResultLine("c1", {"status_code": 200, "body": {}}, usage=LineUsage(3, 1, 0, 5, 2))
    assert checked(line) is line
