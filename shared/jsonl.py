"""Batch input files: split a byte stream into lines and validate it as it passes (CONTRACT.md section 4).

The validator never holds more than one line and the custom_ids it has seen, so its memory is bounded
by the request limit, not by the file size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any, NoReturn

import orjson

from shared.errors import InvalidBatchInput
from shared.records import ModelBounds
from shared.tokens import media_parts, prompt_tokens

MAX_LINES = 50_000
MAX_BYTES = 200 * 1000 * 1000
MAX_LINE_BYTES = 32 * 1024 * 1024
MAX_CUSTOM_ID_CHARS = 512
MAX_MODELS = 20  # models one batch may name: one run each, admitted in one transaction with the batch
MAX_MODEL_CHARS = 256  # what the routing file can name, many times over

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/responses")
_URLS = {**{e: e for e in ENDPOINTS}, **{e.removeprefix("/v1"): e for e in ENDPOINTS}}


def normalize_endpoint(url: str) -> str | None:
    """The canonical `/v1/...` form of a batch endpoint, or None if batches do not serve it."""
    return _URLS.get(url)


class LineTooLong(bytes):
    """The start of a line longer than the limit `iter_lines` was given (the rest is skipped)."""


def iter_lines(chunks: Iterable[bytes], *, max_bytes: int | None = None) -> Iterator[bytes]:
    """Yield the lines of a chunked byte stream, without their line endings (LF or CRLF), in time linear in
    the stream's size whatever the chunking. A line over `max_bytes` is yielded as a LineTooLong holding its
    first `max_bytes` bytes."""
    return chain.from_iterable(iter_line_blocks(chunks, max_bytes=max_bytes))


def iter_line_blocks(chunks: Iterable[bytes], *, max_bytes: int | None = None) -> Iterator[list[bytes]]:
    """The lines `iter_lines` yields, a list at a time: those each chunk ends, so that a reader can take a
    chunk's lines at once."""
    carry = bytearray()
    too_long = False
    for chunk in chunks:
        if not chunk:
            continue
        lines = chunk.split(b"\n")  # each but the last ends a line
        rest = lines.pop()
        if lines and too_long:  # the first ends a line already yielded as too long
            del lines[0]
            too_long = False
        if lines:
            if carry:
                carry += lines[0]
                lines[0] = bytes(carry)
                carry.clear()
            if b"\r" in chunk or (max_bytes is not None and len(chunk) > max_bytes):
                lines = [_finished(line, max_bytes) for line in lines]
            else:  # only the first can end in a CR or be too long: the carry's
                lines[0] = _finished(lines[0], max_bytes)
            yield lines
        if rest and not too_long:
            carry += rest
            if max_bytes is not None and len(carry) > max_bytes:
                yield [LineTooLong(bytes(carry[:max_bytes]))]
                carry.clear()
                too_long = True
    if carry:
        yield [_finished(bytes(carry), max_bytes)]


def _finished(line: bytes, max_bytes: int | None) -> bytes:
    if max_bytes is not None and len(line) > max_bytes:
        return LineTooLong(line[:max_bytes])
    return line[:-1] if line.endswith(b"\r") else line


@dataclass(frozen=True, slots=True)
class BatchInputSummary:
    """What a valid batch input file holds: its request count, endpoint, custom_ids in order, and for each
    model it names the bounds of what its requests may cost in tokens."""

    line_count: int
    endpoint: str
    custom_ids: tuple[str, ...]
    model_of: tuple[int, ...]  # for each custom_id, the index of its model in `models`
    bytes: int
    models: dict[str, ModelBounds]


# the request fields that cap a request's output tokens, by endpoint
_OUTPUT_LIMITS = {
    "/v1/chat/completions": ("max_completion_tokens", "max_tokens"),
    "/v1/completions": ("max_tokens",),
    "/v1/responses": ("max_output_tokens",),
}


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else 1


def choices(body: dict[str, object]) -> int:
    """How many answers a request asks to be returned: its `n`."""
    return _count(body.get("n"))


def answers(endpoint: str, body: dict[str, object]) -> int:
    """How many answers a request has generated (and billed), each up to its output limit: `n`, or a
    completion's `best_of`, generated server-side to return n of them."""
    return max(choices(body), _count(body.get("best_of")) if endpoint == "/v1/completions" else 1)


def output_limit(endpoint: str, body: dict[str, object]) -> int | None:
    """The most output tokens a request may produce by its own fields (0 for embeddings), None if unbounded."""
    if endpoint == "/v1/embeddings":
        return 0
    for name in _OUTPUT_LIMITS.get(endpoint, ()):
        limit = body.get(name)
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return limit * answers(endpoint, body)
    return None


class BatchInputValidator:
    """Validates a batch input file fed in chunks of any size; raises InvalidBatchInput at the first bad line."""

    def __init__(self) -> None:
        self._carry = bytearray()
        self._bytes = 0
        self._line_no = 0
        self._blank_since: int | None = None
        self._seen: dict[str, int] = {}
        self._endpoint: str | None = None
        self._models: dict[str, _Bounds] = {}
        self._model_of: list[int] = []

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
        if self._endpoint is None:
            self._fail(1, "empty_file", "the file contains no requests")
        return BatchInputSummary(
            line_count=len(self._seen),
            endpoint=self._endpoint,
            custom_ids=tuple(self._seen),
            model_of=tuple(self._model_of),
            bytes=self._bytes,
            models={
                model: ModelBounds(
                    lines=b.lines,
                    input_tokens=b.input_tokens,
                    output_tokens=b.output_tokens,
                    unbounded_lines=b.unbounded_lines,
                    images=b.images,
                    files=b.files,
                    estimated_input_tokens=b.estimated_input_tokens,
                )
                for model, b in self._models.items()
            },
        )

    def _fail(self, line: int, rule: str, detail: str) -> NoReturn:
        raise InvalidBatchInput(line, rule, detail)

    def _line(self, raw: bytes) -> None:
        self._line_no += 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw or raw.isspace():
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
        endpoint, model = self._check_request(obj)
        bounds = self._models.get(model)
        if bounds is None:
            self._check_new_model(model)
            bounds = self._models[model] = _Bounds(index=len(self._models))
        bounds.add(endpoint, obj["body"], len(raw))
        self._model_of.append(bounds.index)

    def _check_new_model(self, model: str) -> None:
        """A model the file had not named yet: what the file learns of its models stays small (it is kept in
        the file's table item), and no more than a batch can run."""
        if len(model) > MAX_MODEL_CHARS:
            self._fail(self._line_no, "invalid_model", f"body.model is longer than {MAX_MODEL_CHARS} characters")
        if len(self._models) >= MAX_MODELS:
            detail = f"the file names more than {MAX_MODELS} models, the most one batch runs"
            self._fail(self._line_no, "too_many_models", detail)

    def _check_request(self, obj: dict[str, object]) -> tuple[str, str]:
        """The line's endpoint and model, once it has passed every rule."""
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
            self._endpoint = endpoint
        elif endpoint != self._endpoint:
            self._fail(n, "url_mismatch", f"every line must use the same url ({self._endpoint}), got {url}")
        if len(self._seen) >= MAX_LINES:
            self._fail(n, "too_many_requests", f"the file has more than {MAX_LINES:,} requests")
        self._seen[custom_id] = n
        return endpoint, model


# A model's prompts are estimated (shared/tokens.py: a regex pass and a step per word, about 1.5 MB/s of prose
# on the dev machine, against files of up to 200 MB) line by line for its first ESTIMATE_ALL_BYTES; past
# those, one line in a while is estimated and stands for the bytes read since the last one, the gap growing
# with the bytes read (about ESTIMATE_SAMPLES lines each time they double), so that estimating costs about
# the same for any file and validation runs at the speed of its checks.
ESTIMATE_ALL_BYTES = 256 * 1024
ESTIMATE_SAMPLES = 32


class _Bounds:
    """One model's bounds, added up line by line (ModelBounds once the file is done)."""

    def __init__(self, *, index: int) -> None:
        self.index = index
        self.lines = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.unbounded_lines = 0
        self.images = 0
        self.files = 0
        self._estimate = 0.0  # prompt tokens of the bytes up to the last line estimated
        self._estimated_bytes = 0
        self._unestimated_bytes = 0  # read since the last line estimated

    def add(self, endpoint: str, body: dict[str, Any], line_bytes: int) -> None:
        self.lines += 1
        images, files = media_parts(endpoint, body)
        self.images += images
        self.files += files
        # a byte-level tokenizer never makes more tokens than the bytes it reads
        self.input_tokens += line_bytes
        self._unestimated_bytes += line_bytes
        if self.input_tokens <= ESTIMATE_ALL_BYTES or self._unestimated_bytes * ESTIMATE_SAMPLES >= self.input_tokens:
            # this line stands for the bytes since the last one estimated (itself alone, in a small file)
            self._estimate += prompt_tokens(endpoint, body) * self._unestimated_bytes / line_bytes
            self._estimated_bytes += self._unestimated_bytes
            self._unestimated_bytes = 0
        limit = output_limit(endpoint, body)
        if limit is None:  # each of its answers bounded by the deployment's limit
            self.unbounded_lines += answers(endpoint, body)
        else:
            self.output_tokens += limit

    @property
    def estimated_input_tokens(self) -> int:
        """The estimate of every line's prompt: the bytes after the last line estimated at the rate of the rest."""
        return round(self._estimate * (1 + self._unestimated_bytes / self._estimated_bytes))


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
