"""What an OpenAI-compatible batch API answers, read in batchgw's terms. Pure: no I/O.

A batch object's status (in OpenAI's or Azure's older spelling), request counts and errors; and each line of
its output and error files as a Verbatim (an answered request's line, kept as it is), a ResultLine, or an
Unreadable for a line that cannot be read or priced. The
adapters built on the openai one (azure, together), mistral's and `mode: sync` batches read with these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from shared.errors import ProviderError
from shared.jsonl import LineTooLong
from shared.lifecycle import BatchStatus
from shared.providers.base import ResultLine, Unreadable, Verbatim
from shared.records import Counts, ErrorEntry
from shared.results import BadUsage, openai_usage, parsed_line, usage_from_openai

_STATES: dict[str, BatchStatus] = {
    "validating": "validating",
    "inprogress": "in_progress",
    "finalizing": "finalizing",
    "completed": "completed",
    "failed": "failed",
    "expired": "expired",
    "cancelling": "cancelling",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "canceling": "cancelling",
}


def openai_state(status: object) -> BatchStatus:
    """An OpenAI-compatible status in OpenAI's spelling; Azure's older API answers `Validating`, `InProgress`."""
    state = _STATES.get(str(status).lower().replace("_", ""))
    if state is None:
        raise ProviderError(f"unknown batch status {status!r}", retryable=True)
    return state


def counts_of(batch: Mapping[str, Any]) -> Counts | None:
    counts = batch.get("request_counts")
    if not isinstance(counts, dict):
        return None
    return Counts(
        total=counts.get("total") or 0,
        completed=counts.get("completed") or 0,
        failed=counts.get("failed") or 0,
    )


def errors_of(batch: Mapping[str, Any]) -> tuple[ErrorEntry, ...]:
    errors = batch.get("errors")
    data = errors.get("data") if isinstance(errors, dict) else None
    return tuple(
        ErrorEntry(
            code=str(e.get("code") or "provider_error"),
            message=str(e.get("message") or ""),
            param=e.get("param"),
            line=e.get("line"),
        )
        for e in data or ()
        if isinstance(e, dict)
    )


# The one line an OpenAI-compatible output file holds most: a request answered 200, with its usage. Decoded
# into these types, only the ids, the status and the usage become Python objects; the rest of the line (the
# answer itself) is checked as JSON and skipped.
class _Body(msgspec.Struct):
    usage: Any = None  # read by `openai_usage`, as in a line read in full


class _Response(msgspec.Struct):
    status_code: int
    body: _Body


class _Answered(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    custom_id: str
    response: _Response
    error: None = None


_answered = msgspec.json.Decoder(_Answered)


def result_line(raw: bytes) -> ResultLine | Verbatim | Unreadable | None:
    """An OpenAI output or error line: a Verbatim when it is an answered request's line batchgw would write as
    it is, else a ResultLine; Unreadable for a line that cannot be read or priced (with its custom_id when that
    much can be read); None for a blank line."""
    kept = _as_it_is(raw)
    return kept if kept is not None else _read(raw)


def _as_it_is(raw: bytes) -> Verbatim | None:
    """`raw` as a Verbatim if it is an answered request's line that every JSON reader reads as batchgw does;
    None for any other line (read in full, which says what is wrong with it)."""
    if isinstance(raw, LineTooLong):
        return None
    try:
        line = _answered.decode(raw)
        usage = openai_usage(line.response.body.usage)
    except (msgspec.DecodeError, RecursionError, BadUsage):
        return None
    if (
        line.response.status_code == 200
        and line.id
        and (raw.isascii() or _utf8(raw))  # what the decoder skipped is not checked for UTF-8
        and b"\r" not in raw  # JSON whitespace, but a line break to many line readers
        # named once, since readers differ on which of two keys they read: every reader finds the request and
        # the response batchgw priced (a repeated `error` is never the null this reads; a key repeated deeper
        # is read as orjson, Python and JavaScript read it: the last)
        and raw.count(b'"custom_id"') == 1
        and raw.count(b'"response"') == 1
    ):
        return Verbatim(line.custom_id, usage, raw)
    return None


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def in_full(line: Verbatim) -> ResultLine | Unreadable:
    """`line` read in full, for an adapter that changes it."""
    read = _read(line.raw)
    assert read is not None, "a Verbatim is never a blank line"
    return read


def _read(raw: bytes) -> ResultLine | Unreadable | None:
    line = parsed_line(raw)
    if not isinstance(line, dict):
        return line
    custom_id: str = line["custom_id"]
    response, error = line.get("response"), line.get("error")
    if response is not None and not isinstance(response, dict):
        return Unreadable(custom_id, "the line's response is not a JSON object")
    if error is not None and not isinstance(error, dict):
        return Unreadable(custom_id, "the line's error is not a JSON object")
    usage = None
    if response is not None and response.get("status_code") == 200:
        try:
            usage = usage_from_openai(response.get("body"))
        except BadUsage as exc:
            return Unreadable(custom_id, str(exc))
    request_id = line.get("id")
    return ResultLine(
        custom_id=custom_id,
        response=response,
        error=error,
        usage=usage,
        id=request_id if isinstance(request_id, str) and request_id else None,
    )
