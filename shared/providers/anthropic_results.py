"""Anthropic Message Batches and their results in OpenAI's terms, for the `anthropic` provider. Pure: no I/O.

Each Anthropic result line becomes an OpenAI output line; an `errored` one keeps Anthropic's error type and
message under the HTTP status of that type; `canceled` and `expired` requests get OpenAI's own
`batch_cancelled` and `batch_expired` errors (shared/completion.py relabels them by how the batch ended); a
line not shaped as Anthropic documents (its usage, above all, which is billed) becomes a `provider_error`
line saying what is wrong. The forced tool call a `json_schema` request becomes
(shared/providers/anthropic_format.py) is returned as the message content.
"""

from __future__ import annotations

import hashlib
import reprlib
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import orjson

from shared.lifecycle import BatchStatus
from shared.providers.anthropic_format import SCHEMA_TOOL_PREFIX, JSONObject
from shared.providers.base import LineUsage, ResultLine, TranslationError
from shared.records import Counts
from shared.results import checked_usage, not_run

_FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_ERROR_STATUS: Final = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_STATES: Final[dict[str, BatchStatus]] = {"in_progress": "in_progress", "canceling": "cancelling"}
_TOKEN_COUNTS: Final = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
_REQUIRED_TOKEN_COUNTS: Final = frozenset({"input_tokens", "output_tokens"})
# what to_chat_completion reads of each kind of content block, and the type it must have
_READ_BLOCK_FIELDS: Final[dict[str, dict[str, type]]] = {
    "text": {"text": str},
    "tool_use": {"id": str, "name": str, "input": dict},
}


# --- batches and results ----------------------------------------------------------------------------


def unix_seconds(timestamp: Any) -> int | None:
    """An RFC 3339 timestamp as Unix seconds; None when absent or unreadable."""
    if not isinstance(timestamp, str):
        return None
    try:
        return int(datetime.fromisoformat(timestamp).timestamp())
    except ValueError:
        return None


def batch_status(batch: Mapping[str, Any]) -> tuple[BatchStatus, Counts]:
    """A MessageBatch's state in OpenAI's vocabulary, and its request counts."""
    counts = batch.get("request_counts") or {}
    number = {k: _int(counts.get(k)) for k in ("processing", "succeeded", "errored", "canceled", "expired")}
    mapped = Counts(
        total=sum(number.values()),
        completed=number["succeeded"],
        failed=number["errored"] + number["canceled"] + number["expired"],
    )
    status = batch.get("processing_status")
    if status == "ended":
        if batch.get("cancel_initiated_at"):
            return "cancelled", mapped
        return ("expired" if number["expired"] else "completed"), mapped
    if status in _STATES:
        return _STATES[status], mapped
    raise TranslationError(f"unknown message batch processing_status {status!r}")


class MalformedResult(ValueError):
    """A result line not shaped as Anthropic documents it; the text says what is wrong."""


def result_line(line: Mapping[str, Any], custom_id: str, *, created: int) -> ResultLine:
    """One Anthropic result line (its custom_id already mapped back to `custom_id`) as an OpenAI output line.

    A line that cannot be read becomes a `provider_error` line for `custom_id` saying what is wrong with it.
    """
    try:
        return _result_line(line, custom_id, created)
    except MalformedResult as exc:
        message = f"Anthropic returned a result for this request that cannot be read: {exc}."
        return ResultLine(custom_id=custom_id, response=None, error={"code": "provider_error", "message": message})


def _result_line(line: Mapping[str, Any], custom_id: str, created: int) -> ResultLine:
    result = line.get("result")
    if not isinstance(result, dict):
        raise MalformedResult(f"its result is {reprlib.repr(result)}, not an object")
    match result.get("type"):
        case "succeeded":
            message = checked_message(result.get("message"))
            body, usage = to_chat_completion(message, custom_id, created=created)
            response = {"status_code": 200, "request_id": body["id"], "body": body}
            return ResultLine(custom_id=custom_id, response=response, usage=usage)
        case "errored":
            return ResultLine(custom_id=custom_id, response=error_response(result.get("error"), custom_id))
        case "canceled":
            return not_run(custom_id, "cancelled")
        case "expired":
            return not_run(custom_id, "expired")
        case other:
            raise MalformedResult(f"its result type {other!r} is unknown")


def checked_message(message: Any) -> JSONObject:
    """`message` if it reads as a Message (to_chat_completion's input), else MalformedResult saying why not.

    Its usage is billed, so token counts that are missing, negative or not integers make it unreadable.
    """
    if not isinstance(message, dict):
        raise MalformedResult(f"its message is {reprlib.repr(message)}, not an object")
    for name in ("id", "model"):
        if not isinstance(message.get(name), str):
            raise MalformedResult(f"its message's {name} is {reprlib.repr(message.get(name))}, not a string")
    content = message.get("content")
    if not isinstance(content, list):
        raise MalformedResult(f"its message's content is {reprlib.repr(content)}, not a list of content blocks")
    for index, block in enumerate(content):
        if not isinstance(block, dict):
            raise MalformedResult(f"its message's content block {index} is {reprlib.repr(block)}, not an object")
        fields = _READ_BLOCK_FIELDS.get(str(block.get("type")), {})  # other blocks (thinking, ...) are not read
        wrong = [name for name, kind in fields.items() if not isinstance(block.get(name), kind)]
        if wrong:
            raise MalformedResult(f"its message's content block {index}, {block['type']}, has no valid {wrong[0]}")
    checked_usage(message.get("usage"), _TOKEN_COUNTS, _REQUIRED_TOKEN_COUNTS, MalformedResult)
    return message


def to_chat_completion(
    message: Mapping[str, Any], custom_id: str, *, created: int | None = None
) -> tuple[JSONObject, LineUsage]:
    """An Anthropic Message as an OpenAI `chat.completion` body (`created` defaults to now), and its usage.

    Check an untrusted message with checked_message first: this reads absent token counts as zero.
    """
    texts: list[str] = []
    tool_calls: list[JSONObject] = []
    structured: str | None = None
    for block in message.get("content") or ():
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            if str(block.get("name", "")).startswith(SCHEMA_TOOL_PREFIX):
                structured = arguments
                continue
            call = {
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": arguments},
            }
            tool_calls.append(call)
    reply: JSONObject = {
        "role": "assistant",
        "content": structured if structured is not None else ("".join(texts) or None),
        "refusal": None,
        "annotations": [],
    }
    finish_reason = _FINISH_REASONS.get(str(message.get("stop_reason")), "stop")
    if finish_reason in ("stop", "tool_calls"):  # not cut off or refused: the calls it holds say how it ended
        finish_reason = "tool_calls" if tool_calls else "stop"
    if tool_calls:
        reply["tool_calls"] = tool_calls
    usage, line_usage = _usage(message.get("usage") or {})
    body: JSONObject = {
        "id": message.get("id") or _stable_id("msg_", custom_id),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": message.get("model"),
        "choices": [{"index": 0, "message": reply, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage,
    }
    return body, line_usage


def _usage(usage: Mapping[str, Any]) -> tuple[JSONObject, LineUsage]:
    """OpenAI usage (prompt tokens count cache reads and writes, as OpenAI's do) and the usage to price."""
    uncached, output = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
    cache_read, cache_write = _int(usage.get("cache_read_input_tokens")), _int(usage.get("cache_creation_input_tokens"))
    prompt = uncached + cache_read + cache_write
    openai_usage = {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }
    return openai_usage, LineUsage(
        input_tokens=prompt, cached_tokens=cache_read, cache_write_tokens=cache_write, output_tokens=output
    )


def error_response(error: Any, custom_id: str) -> JSONObject:
    """An `errored` result's ErrorResponse as the response of an OpenAI error line: Anthropic's error type and
    message, under the HTTP status Anthropic gives that type. Raises MalformedResult if it is no ErrorResponse.
    """
    detail = error.get("error") if isinstance(error, dict) else None
    kind, message = (detail.get("type"), detail.get("message")) if isinstance(detail, dict) else (None, None)
    if not isinstance(error, dict) or not isinstance(kind, str) or not isinstance(message, str):
        raise MalformedResult(f"its error is {reprlib.repr(error)}, not an ErrorResponse with a type and a message")
    request_id = error.get("request_id")  # null in the batch results seen
    return {
        "status_code": _ERROR_STATUS.get(kind, 500),
        "request_id": request_id if isinstance(request_id, str) and request_id else _stable_id("req_", custom_id),
        "body": {"error": {"message": message, "type": kind, "param": None, "code": None}},
    }


def _stable_id(prefix: str, custom_id: str) -> str:
    return prefix + hashlib.blake2b(custom_id.encode(), digest_size=12).hexdigest()


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0
