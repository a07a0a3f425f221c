"""What an OpenAI-compatible batch API answers, read in batchgw's terms. Pure: no I/O.

A batch object's status (in OpenAI's or Azure's older spelling), request counts and errors; and each line of
its output and error files as a Verbatim (an answered request's line, kept as it is), a ResultLine, or an
Unreadable for a line that cannot be read or priced. The
adapters built on the openai one (azure, together), mistral's and `mode: sync` batches read with these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from itertools import repeat
from typing import Annotated, Any, cast

import msgspec

from shared.errors import ProviderError
from shared.jsonl import LineTooLong
from shared.lifecycle import BatchStatus
from shared.providers.base import LineUsage, ResultLine, Unreadable, Verbatim
from shared.records import Counts, ErrorEntry
from shared.results import MAX_TOKENS, BadUsage, parsed_line, usage_from_openai

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
# into these types, only the ids, the status and the usage's counts become Python objects; the rest of the
# line (the answer itself) is checked as JSON and skipped. The usage decodes only if `openai_usage` would read
# it so (counts that are whole numbers from 0 to MAX_TOKENS, or null, in objects where it looks for them); any
# other line fails to decode here and is read in full, which says what is wrong with it. No struct holds a
# cycle, so none is tracked by the garbage collector.
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]


class _Inputs(msgspec.Struct, gc=False):
    cached_tokens: _Count | None = None


class _Outputs(msgspec.Struct, gc=False):
    reasoning_tokens: _Count | None = None


class _Usage(msgspec.Struct, gc=False):
    prompt_tokens: _Count | None = None
    prompt_tokens_details: _Inputs | None = None
    completion_tokens: _Count | None = None
    completion_tokens_details: _Outputs | None = None
    input_tokens: _Count | msgspec.UnsetType | None = msgspec.UNSET  # given, even as null: a Responses usage
    input_tokens_details: _Inputs | None = None
    output_tokens: _Count | None = None
    output_tokens_details: _Outputs | None = None


class _Body(msgspec.Struct, gc=False):
    usage: _Usage | None = None


class _Response(msgspec.Struct, gc=False):
    status_code: int
    body: _Body


class _Answered(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    id: str
    custom_id: str
    response: _Response
    error: None = None


_answered = msgspec.json.Decoder(_Answered)
_CR, _CUSTOM_ID, _RESPONSE, _U00 = b"\r", b'"custom_id"', b'"response"', b"\\u00"
# an ASCII letter or `_` spelt as an escape: no JSON encoder writes one, and it is the only way to spell a key
# of the output (`"custom\u005fid"`) that the key counts below do not see and the decoder reads as the key
_ESCAPED_LETTER = re.compile(rb"\\u00[4-7][0-9A-Fa-f]")


def result_lines(blocks: Iterable[list[bytes]]) -> Iterator[ResultLine | Verbatim | Unreadable]:
    """The lines of an OpenAI output or error file, given a list of lines at a time (`iter_line_blocks`), read
    as `result_line` reads each: a list whose every line is an answered request's line batchgw would write as
    it is comes as one Verbatim, read at once."""
    for lines in blocks:
        kept = _as_they_are(lines)
        if kept is not None:
            yield kept
            continue
        for raw in lines:
            line = result_line(raw)
            if line is not None:
                yield line


def result_line(raw: bytes) -> ResultLine | Verbatim | Unreadable | None:
    """An OpenAI output or error line: a Verbatim when it is an answered request's line batchgw would write as
    it is, else a ResultLine; Unreadable for a line that cannot be read or priced (with its custom_id when that
    much can be read); None for a blank line."""
    kept = _as_they_are([raw])
    return kept if kept is not None else _read(raw)


def _as_they_are(lines: list[bytes]) -> Verbatim | None:
    """`lines` as a Verbatim if each is an answered request's line that every JSON reader reads as batchgw
    does; None if any is not (each is then read on its own). Each check runs over the whole list in C: this
    is the path of almost every byte a completion reads."""
    if not lines or LineTooLong in map(type, lines):
        return None
    raw = b"\n".join([*lines, b""])  # as they are written
    if not (raw.isascii() or _utf8(raw)) or _CR in raw:  # the decoder skips text unchecked; CR breaks lines
        return None
    if _U00 in raw and _ESCAPED_LETTER.search(raw):
        return None
    try:
        read = list(map(_answered.decode, lines))
    except (msgspec.DecodeError, RecursionError):
        return None
    # named once in each line as a key, since readers differ on which of two keys they read: every reader finds
    # the request and the response batchgw priced (a repeated `error` is never the null this reads; a key
    # repeated deeper is read as orjson, Python and JavaScript read it: the last). A /v1/responses body names
    # "response" once more, as its object's type, a value
    if set(map(bytes.count, lines, repeat(_CUSTOM_ID))) != {1}:
        return None
    if set(map(bytes.count, lines, repeat(_RESPONSE))) != {1} and set(map(_response_keys, lines)) != {1}:
        return None
    usages: list[LineUsage | None] = []
    for line in read:
        if line.response.status_code != 200 or not line.id:
            return None
        usage = line.response.body.usage
        if usage is None:
            usages.append(None)
            continue
        # what `openai_usage` reads of it
        if usage.input_tokens is msgspec.UNSET:
            inputs, outputs = usage.prompt_tokens_details, usage.completion_tokens_details
            given, made = usage.prompt_tokens, usage.completion_tokens
        else:
            inputs, outputs = usage.input_tokens_details, usage.output_tokens_details
            given, made = usage.input_tokens, usage.output_tokens
        cached = (inputs.cached_tokens or 0) if inputs is not None else 0
        reasoning = (outputs.reasoning_tokens or 0) if outputs is not None else 0
        usages.append(LineUsage(given or 0, cached, 0, made or 0, reasoning))
    return Verbatim([line.custom_id for line in read], usages, raw)


def _response_keys(line: bytes) -> int:
    """How many times `line` names "response" but as a /v1/responses body's type (`"object": "response"`, which
    a quote followed by a colon before it makes a value: in a string they would be escaped)."""
    return line.count(_RESPONSE) - line.count(b'"object":"response"') - line.count(b'"object": "response"')


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


def in_full(kept: Verbatim) -> list[ResultLine | Unreadable]:
    """Each of `kept`'s lines read in full, for an adapter that changes them."""
    read = [_read(raw) for raw in kept.lines()]
    assert None not in read, "a Verbatim holds no blank line"
    return cast(list[ResultLine | Unreadable], read)


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
