"""Batch input files: split a byte stream into lines and validate it as it passes (CONTRACT.md section 4).

The validator never holds more than one line and the custom_ids it has seen, so its memory is bounded
by the request limit, not by the file size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NoReturn

import orjson

from shared.errors import InvalidBatchInput

MAX_LINES = 50_000
MAX_BYTES = 200 * 1000 * 1000
MAX_LINE_BYTES = 32 * 1024 * 1024
MAX_CUSTOM_ID_CHARS = 512

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/responses")
_URLS = {**{e: e for e in ENDPOINTS}, **{e.removeprefix("/v1"): e for e in ENDPOINTS}}


def normalize_endpoint(url: str) -> str | None:
    """The canonical `/v1/...` form of a batch endpoint, or None if batches do not serve it."""
    return _URLS.get(url)


def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the lines of a chunked byte stream, without their line endings (LF or CRLF)."""
    carry = b""
    for chunk in chunks:
        if not chunk:
            continue
        parts = (carry + chunk).split(b"\n") if carry else chunk.split(b"\n")
        carry = parts.pop()
        for part in parts:
            yield part[:-1] if part.endswith(b"\r") else part
    if carry:
        yield carry[:-1] if carry.endswith(b"\r") else carry


@dataclass(frozen=True, slots=True)
class BatchInputSummary:
    """What a valid batch input file holds: its request count, endpoint, model and custom_ids in order."""

    line_count: int
    endpoint: str
    model: str
    custom_ids: tuple[str, ...]
    bytes: int


class BatchInputValidator:
    """Validates a batch input file fed in chunks of any size; raises InvalidBatchInput at the first bad line."""

    def __init__(self) -> None:
        self._carry = bytearray()
        self._bytes = 0
        self._line_no = 0
        self._blank_since: int | None = None
        self._seen: dict[str, int] = {}
        self._endpoint: str | None = None
        self._model: str | None = None

    def feed(self, chunk: bytes) -> None:
        """Validate every line completed by `chunk`."""
        self._bytes += len(chunk)
        if self._bytes > MAX_BYTES:
            self._fail(self._line_no + 1, "file_too_large", "the file is larger than the 200 MB limit")
        if b"\n" not in chunk:
            self._carry += chunk
            if len(self._carry) > MAX_LINE_BYTES:
                self._fail(self._line_no + 1, "line_too_large", "the line is longer than 32 MB")
            return
        head, *middle, tail = chunk.split(b"\n")
        if self._carry:
            self._carry += head
            self._line(bytes(self._carry))
        else:
            self._line(head)
        for line in middle:
            self._line(line)
        self._carry = bytearray(tail)

    def finish(self) -> BatchInputSummary:
        """Validate the last line and the file as a whole; returns what the file holds."""
        if self._carry:
            self._line(bytes(self._carry))
            self._carry = bytearray()
        if self._endpoint is None or self._model is None:
            self._fail(1, "empty_file", "the file contains no requests")
        return BatchInputSummary(
            line_count=len(self._seen),
            endpoint=self._endpoint,
            model=self._model,
            custom_ids=tuple(self._seen),
            bytes=self._bytes,
        )

    def _fail(self, line: int, rule: str, detail: str) -> NoReturn:
        raise InvalidBatchInput(line, rule, detail)

    def _line(self, raw: bytes) -> None:
        self._line_no += 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw.strip():
            if self._blank_since is None:
                self._blank_since = self._line_no
            return
        if self._blank_since is not None:
            self._fail(self._blank_since, "blank_line", "blank lines are allowed only at the end of the file")
        if len(raw) > MAX_LINE_BYTES:
            self._fail(self._line_no, "line_too_large", "the line is longer than 32 MB")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self._fail(self._line_no, *_decode_problem(raw, exc))
        if not isinstance(obj, dict):
            self._fail(self._line_no, "invalid_json_line", "each line must be a JSON object")
        self._check_request(obj)

    def _check_request(self, obj: dict[str, object]) -> None:
        n = self._line_no
        custom_id = obj.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            self._fail(n, "invalid_custom_id", "custom_id must be a non-empty string")
        if len(custom_id) > MAX_CUSTOM_ID_CHARS:
            self._fail(n, "invalid_custom_id", f"custom_id is longer than {MAX_CUSTOM_ID_CHARS} characters")
        first = self._seen.get(custom_id)
        if first is not None:
            self._fail(n, "duplicate_custom_id", f"custom_id {custom_id!r} was already used on line {first}")
        if obj.get("method") != "POST":
            self._fail(n, "invalid_method", 'method must be "POST"')
        url = obj.get("url")
        endpoint = normalize_endpoint(url) if isinstance(url, str) else None
        if endpoint is None:
            self._fail(n, "invalid_url", f"url must be one of {', '.join(ENDPOINTS)}")
        body = obj.get("body")
        if not isinstance(body, dict):
            self._fail(n, "invalid_body", "body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self._fail(n, "invalid_model", "body.model must be a non-empty string")
        if self._endpoint is None:
            self._endpoint, self._model = endpoint, model
        elif endpoint != self._endpoint:
            self._fail(n, "url_mismatch", f"every line must use the same url ({self._endpoint}), got {url}")
        elif model != self._model:
            self._fail(n, "model_mismatch", f"every line must use the same model ({self._model}), got {model}")
        if len(self._seen) >= MAX_LINES:
            self._fail(n, "too_many_requests", f"the file has more than {MAX_LINES:,} requests")
        self._seen[custom_id] = n


def _decode_problem(raw: bytes, exc: orjson.JSONDecodeError) -> tuple[str, str]:
    if raw.startswith(b"\xef\xbb\xbf"):
        return "invalid_encoding", "the file starts with a UTF-8 byte order mark; save it without one"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_encoding", "the line is not valid UTF-8"
    return "invalid_json_line", f"the line is not valid JSON ({exc})"


def validate_batch_input(chunks: Iterable[bytes]) -> BatchInputSummary:
    """Validate a whole batch input stream; raises InvalidBatchInput naming the first bad line."""
    validator = BatchInputValidator()
    for chunk in chunks:
        validator.feed(chunk)
    return validator.finish()
