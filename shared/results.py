"""OpenAI batch output lines: their usage, their ids and their bytes (CONTRACT.md section 6)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from shared.ids import REQUEST
from shared.providers.base import LineUsage, ResultLine


def usage_from_openai(body: Any) -> LineUsage | None:
    """The usage of an OpenAI response body: chat and text completions, embeddings and responses.

    None when the body has no usable usage. This runs once per result line, so it keeps to plain lookups.
    """
    try:
        usage = body["usage"]
        if "input_tokens" in usage:  # /v1/responses
            return LineUsage(
                int(usage["input_tokens"] or 0),
                int((usage.get("input_tokens_details") or {}).get("cached_tokens") or 0),
                0,
                int(usage.get("output_tokens") or 0),
                int((usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0),
            )
        return LineUsage(
            int(usage.get("prompt_tokens") or 0),
            int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
            0,
            int(usage.get("completion_tokens") or 0),
            int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def request_id(batch_id: str, custom_id: str) -> str:
    """A stable `batch_req_` id for one request, the same on every run of the completion step."""
    digest = hashlib.blake2b(f"{batch_id}\0{custom_id}".encode(), digest_size=14).hexdigest()
    return f"{REQUEST}{digest}"


def render(line: ResultLine, batch_id: str) -> bytes:
    """The output line's JSONL bytes, newline included."""
    return orjson.dumps(
        {
            "id": line.id or request_id(batch_id, line.custom_id),
            "custom_id": line.custom_id,
            "response": line.response,
            "error": line.error,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def not_run(custom_id: str, outcome: str) -> ResultLine:
    """The error line of a request the provider never ran, by how the batch ended."""
    code, message = _NOT_RUN.get(outcome, _NOT_RUN["failed"])
    return ResultLine(custom_id=custom_id, response=None, error={"code": code, "message": message})


_NOT_RUN = {
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
    "failed": ("batch_failed", "This request was not executed because the batch failed."),
    "completed": ("missing_result", "The provider returned no result for this request."),
}
