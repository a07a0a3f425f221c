"""OpenAI batch output lines: their usage, their ids and their bytes (CONTRACT.md section 6)."""

from __future__ import annotations

import hashlib
import re
import reprlib
from dataclasses import replace
from typing import Any, Final

import orjson

from shared.ids import REQUEST
from shared.jsonl import LineTooLong
from shared.providers.base import LineUsage, ResultLine, Unreadable

_CUSTOM_ID: Final = re.compile(rb'"custom_id"\s*:\s*("(?:[^"\\]|\\.)*")')


# the most tokens one count of one request's usage may report: no model reads or writes a billion tokens in
# one request, and a count past it is a provider's fault (a wrapped counter reads 2**64 - 1), not a bill
MAX_TOKENS: Final = 1_000_000_000


class BadUsage(ValueError):
    """A response's usage that cannot be priced: counts that are not whole, non-negative numbers, or more
    tokens than a request can hold."""


def _count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadUsage(f"token count {value!r} is not a non-negative integer")
    if value > MAX_TOKENS:
        raise BadUsage(f"token count {value!r} is more than {MAX_TOKENS:,}, more than a request can hold")
    return value


_CHAT_USAGE: Final = ("prompt_tokens", "prompt_tokens_details", "completion_tokens", "completion_tokens_details")
_RESPONSES_USAGE: Final = ("input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details")


def usage_from_openai(body: Any) -> LineUsage | None:
    """The usage of an OpenAI response body: chat and text completions, embeddings and responses.

    None when the body reports no usage; BadUsage when it reports usage that cannot be priced. This runs
    once per result line, so the common case (every count a plain int in range) is plain lookups and one
    check, the one every provider's lines pass before they are priced (`checked`).
    """
    return openai_usage(body.get("usage") if isinstance(body, dict) else None)


def openai_usage(usage: Any) -> LineUsage | None:
    """An OpenAI response body's `usage` as a LineUsage (see usage_from_openai)."""
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise BadUsage("usage is not an object")
    names = _RESPONSES_USAGE if "input_tokens" in usage else _CHAT_USAGE
    inputs, outputs = usage.get(names[1]) or {}, usage.get(names[3]) or {}
    if not isinstance(inputs, dict) or not isinstance(outputs, dict):
        raise BadUsage("usage details are not objects")
    counts = LineUsage._make(
        (usage.get(names[0]), inputs.get("cached_tokens"), 0, usage.get(names[2]), outputs.get("reasoning_tokens"))
    )
    if _counts(counts):
        return counts
    return LineUsage._make(map(_count, counts))  # None counts as 0; anything else but a count is refused


def custom_id_in(prefix: bytes) -> str | None:
    """The custom_id a (possibly cut-off) OpenAI-format line names, if its start shows one."""
    found = _CUSTOM_ID.search(prefix)
    if found is None:
        return None
    try:
        value = orjson.loads(found.group(1))
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, str) else None


def checked_usage(
    usage: Any, counts: tuple[str, ...], required: frozenset[str], malformed: type[Exception]
) -> dict[str, Any]:
    """A provider's usage object whose token `counts` are counts where given, the `required` ones given;
    raises `malformed` saying what is wrong otherwise."""
    if not isinstance(usage, dict):
        raise malformed(f"its usage is {reprlib.repr(usage)}, not an object")
    for name in counts:
        value = usage.get(name)
        if value is None and name not in required:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise malformed(f"its usage.{name} is {reprlib.repr(value)}, not a count of tokens")
    return usage


def parsed_line(raw: bytes) -> dict[str, Any] | Unreadable | None:
    """A provider's JSON result line as an object with a string custom_id; Unreadable for a broken one (with
    its custom_id where that much can be read); None for a blank one."""
    if isinstance(raw, LineTooLong):
        return Unreadable(custom_id_in(raw), f"the line is longer than {len(raw):,} bytes")
    if not raw or raw.isspace():
        return None
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Unreadable(custom_id_in(raw), "the line is not valid JSON")
    if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
        return Unreadable(None, "the line has no custom_id")
    return line


def checked(line: ResultLine) -> ResultLine | Unreadable:
    """`line` if it is a well-formed output or error line whose usage can be priced; else why it is not.

    Adapters build lines from what providers send; this is the last look before a line is written and
    priced, so one malformed line fails alone instead of failing its batch.
    """
    response = line.response
    if response is None and line.error is None:
        return Unreadable(line.custom_id, "the line has neither a response nor an error")
    if response is not None:
        status = response.get("status_code")
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            return Unreadable(line.custom_id, f"the response's status_code {status!r} is not an HTTP status")
        if not isinstance(response.get("body"), dict):
            return Unreadable(line.custom_id, "the response's body is not a JSON object")
    if line.usage is not None and not _counts(line.usage):
        return Unreadable(
            line.custom_id, f"the usage {tuple(line.usage)!r} is not token counts from 0 to {MAX_TOKENS:,}"
        )
    return line


def _counts(usage: LineUsage) -> bool:
    """Whether every field of `usage` is an int (bool excluded) from 0 to MAX_TOKENS, without a call per field:
    this runs once per result line."""
    a, b, c, d, e = usage
    return (
        (type(a) is int and type(b) is int and type(c) is int and type(d) is int and type(e) is int)
        and (0 <= a <= MAX_TOKENS and 0 <= b <= MAX_TOKENS and 0 <= c <= MAX_TOKENS and 0 <= d <= MAX_TOKENS)
        and 0 <= e <= MAX_TOKENS
    )


def provider_error_line(custom_id: str, reason: str) -> ResultLine:
    """The error line of a request whose provider result could not be read or priced."""
    message = f"The provider's result for this request could not be read: {reason}"
    return ResultLine(custom_id=custom_id, response=None, error={"code": "provider_error", "message": message})


def invalid_request_line(custom_id: str, reason: str) -> ResultLine:
    """The error line of a request its provider cannot take, refused before the batch ran."""
    message = f"This request cannot be sent to the batch's provider: {reason}"
    return ResultLine(custom_id=custom_id, response=None, error={"code": "invalid_request", "message": message})


def with_error(line: ResultLine) -> ResultLine:
    """`line`, a failed request's, with an error object (CONTRACT.md section 6: every error line has
    `{code, message}`). A provider's own failed answer stays in `response`, as in OpenAI's error lines, and
    gives the error: a request the provider refused (4xx but a timeout or a throttle) is `invalid_request`,
    any other a `provider_error`, with the provider's status, code and message."""
    if line.error is not None or line.response is None:
        return line
    status = line.response["status_code"]
    body = line.response.get("body")
    given = body.get("error") if isinstance(body, dict) else None
    given = given if isinstance(given, dict) else {}
    refused = 400 <= status < 500 and status not in (408, 429)
    code, message = given.get("code"), given.get("message")
    named = isinstance(code, str | int) and not isinstance(code, bool) and code != ""
    about = f"HTTP {status}, {code}" if named else f"HTTP {status}"
    said = f": {message}" if isinstance(message, str) and message else "."
    error = {
        "code": "invalid_request" if refused else "provider_error",
        "message": f"The provider {'refused' if refused else 'failed'} this request ({about}){said}",
    }
    return replace(line, error=error)


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


def as_ended(line: ResultLine, outcome: str) -> ResultLine:
    """`line`, but, for a request its provider reports not run because its batch was cancelled or expired, with
    the error of how the batch ended: batchgw expires a batch by cancelling it at its provider."""
    stopped = line.response is None and line.error is not None and line.error.get("code") in _STOPPED
    if not stopped or outcome not in _STOPPED_BY:
        return line
    return replace(line, error=not_run(line.custom_id, outcome).error)


_NOT_RUN = {
    "expired": ("batch_expired", "This request could not be executed before the completion window expired."),
    "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled."),
    "failed": ("batch_failed", "This request was not executed because the batch failed."),
    "completed": ("missing_result", "The provider returned no result for this request."),
}
_STOPPED_BY: Final = ("expired", "cancelled")
_STOPPED: Final = frozenset(_NOT_RUN[outcome][0] for outcome in _STOPPED_BY)
