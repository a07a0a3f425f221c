"""HTTP plumbing the provider adapters share: clients with timeouts and retries, error mapping, upload bodies."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from itertools import chain
from typing import Any

import httpx
import orjson
from httpx_retries import Retry, RetryTransport

from shared import deadline
from shared.errors import ProviderBusy, ProviderError
from shared.jsonl import iter_line_blocks
from shared.providers.base import Journal, ResultLine, Unreadable, Verbatim
from shared.providers.openai_results import result_lines

RETRY_STATUSES = (408, 429, 500, 502, 503, 504, 529)  # 529: Anthropic's "overloaded"
_NOT_RETRYABLE_4XX = range(400, 500)
# the longest result line batchgw reads from a provider; a longer one becomes an error line of its own
MAX_RESULT_LINE_BYTES = 16 * 1024 * 1024


class OutOfTime(httpx.TimeoutException):
    """The invocation's deadline (shared/deadline.py) leaves no time for another attempt."""


class DeadlineTransport(httpx.HTTPTransport):
    """Caps each attempt's timeouts by what the current deadline leaves, and refuses to start past it."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        left = deadline.remaining()
        if left is not None:
            if left <= 0:
                raise OutOfTime("the invocation's deadline has passed", request=request)
            timeouts = request.extensions.get("timeout") or {}
            request.extensions["timeout"] = {
                name: left if value is None else min(value, left) for name, value in timeouts.items()
            } or dict.fromkeys(("connect", "read", "write", "pool"), left)
        return super().handle_request(request)


class DeadlineRetry(Retry):
    """Retries that stop when the current deadline is gone and never sleep past it."""

    def is_exhausted(self) -> bool:
        left = deadline.remaining()
        return super().is_exhausted() or (left is not None and left <= 0)

    def _calculate_sleep(self, headers: httpx.Headers | Mapping[str, str]) -> float:
        sleep = super()._calculate_sleep(headers)
        left = deadline.remaining()
        return sleep if left is None else max(0.0, min(sleep, left))


def build_client(
    *,
    base_url: str,
    headers: Mapping[str, str],
    timeout: float,
    max_retries: int,
    params: Mapping[str, str] | None = None,
) -> httpx.Client:
    """A client that retries 408, 429 and 5xx answers, timeouts and dropped connections, honouring Retry-After.

    Only for calls that are safe to repeat; a call that creates something uses `build_client(max_retries=0)`
    and its adapter looks for what an earlier attempt may have created before trying again.
    """
    retry = DeadlineRetry(
        total=max_retries,
        backoff_factor=0.5,
        max_backoff_wait=30.0,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=("GET", "POST", "DELETE"),
    )
    return httpx.Client(
        base_url=base_url,
        headers=dict(headers),
        params=dict(params or {}),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        transport=RetryTransport(transport=DeadlineTransport(), retry=retry)
        if max_retries
        else DeadlineTransport(retries=1),
        follow_redirects=True,
    )


def create_once(journal: Journal, *, find: Callable[[], str | None], create: Callable[[], str], retries: int) -> None:
    """Create the provider batch and record it as `batch_id`, once across retries, crashes and lost answers.

    Records `create_started` (a Unix time) before the first try; every later try, in this call or a
    resumed submission, first looks (`find`) for the batch an earlier one may have made. Retryable errors
    are retried `retries` times with backoff; `create` itself must never be resent by its client. A
    ProviderBusy is raised at once: the provider asked to wait longer than a retry here would.
    """
    for attempt in range(retries + 1):
        if "create_started" in journal.refs:
            found = find()
            if found is not None:
                journal.record(batch_id=found)
                return
        else:
            journal.record(create_started=str(int(time.time())))
        try:
            journal.record(batch_id=create())
            return
        except ProviderError as exc:
            if isinstance(exc, ProviderBusy) or not exc.retryable or attempt == retries:
                raise
            time.sleep(min(0.5 * 2**attempt, 8.0))


def cancel(client: httpx.Client, url: str, *, what: str, **kwargs: Any) -> None:
    """Ask a provider to cancel. A refusal is not an error: a batch that already ended cannot be
    cancelled, and the next refresh reports how it ended."""
    try:
        send(client, "POST", url, what=what, **kwargs)
    except ProviderError as exc:
        if exc.retryable:
            raise


class LazyClients:
    """httpx clients built on first use and closed together; safe to share across the poller's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, httpx.Client] = {}

    def get(self, name: str, build: Callable[[], httpx.Client]) -> httpx.Client:
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                client = self._clients[name] = build()
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


class HttpClients:
    """An adapter's two clients to its API, built on first use: `retrying` for what is safe to resend, and
    `once` for creating a batch, which is never resent (a resend could create a second one; create_once
    looks for what an earlier attempt made instead)."""

    def __init__(self, build: Callable[[int], httpx.Client], max_retries: int) -> None:
        self._build = build
        self._max_retries = max_retries
        self._clients = LazyClients()

    @property
    def retrying(self) -> httpx.Client:
        return self._clients.get("retrying", lambda: self._build(self._max_retries))

    @property
    def once(self) -> httpx.Client:
        return self._clients.get("once", lambda: self._build(0))

    def close(self) -> None:
        self._clients.close()


def provider_error(response: httpx.Response, what: str) -> ProviderError:
    """A ProviderError for a failed answer, with the provider's own message where it gave one."""
    message = response.text[:500]
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = body.get("error", body)
        if isinstance(detail, dict) and isinstance(detail.get("message"), str):
            message = detail["message"]
        elif isinstance(detail, str):
            message = detail
    retryable = response.status_code in RETRY_STATUSES or response.status_code not in _NOT_RETRYABLE_4XX
    code = "not_found" if response.status_code == 404 else "provider_error"
    return ProviderError(f"{what}: HTTP {response.status_code}: {message}", retryable=retryable, code=code)


def result_file_lines(
    client: httpx.Client, batch: Mapping[str, Any], keys: tuple[str, ...]
) -> Iterator[ResultLine | Verbatim | Unreadable]:
    """The OpenAI-shaped lines of the result files a batch object names under `keys`, streamed from an API
    with OpenAI's `GET /files/{id}/content`."""
    for key in keys:
        file_id = batch.get(key)
        if not isinstance(file_id, str) or not file_id:
            continue
        yield from result_lines(stream_line_blocks(client, f"/files/{file_id}/content", what=f"download {key}"))


def delete_batch_files(
    client: httpx.Client, refs: Mapping[str, str], fetch: Callable[[str], Mapping[str, Any]], keys: tuple[str, ...]
) -> None:
    """Delete a batch's uploaded input and the result files its provider object names under `keys`, each
    once, from an API with OpenAI's `DELETE /files/{id}`; what is already gone is fine."""
    files = [refs["input_file_id"]] if "input_file_id" in refs else []
    if "batch_id" in refs:
        try:
            batch = fetch(refs["batch_id"])
        except ProviderError as exc:
            if exc.code != "not_found":
                raise
        else:
            files += [f for key in keys if isinstance(f := batch.get(key), str) and f]
    for file_id in dict.fromkeys(files):
        try:
            send(client, "DELETE", f"/files/{file_id}", what="delete a provider file")
        except ProviderError as exc:
            if exc.code != "not_found":
                raise


def send(client: httpx.Client, method: str, url: str, *, what: str, **kwargs: Any) -> httpx.Response:
    """Send one request; a failed answer or transport error becomes a ProviderError."""
    try:
        response = client.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        raise ProviderError(f"{what}: {type(exc).__name__}: {exc}", retryable=True) from exc
    if response.is_error:
        raise provider_error(response, what)
    return response


def json_of(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise ProviderError(f"{what}: the answer is not JSON", retryable=True) from exc
    if not isinstance(body, dict):
        raise ProviderError(f"{what}: the answer is not a JSON object", retryable=True)
    return body


def stream_lines(client: httpx.Client, url: str, *, what: str, **kwargs: Any) -> Iterator[bytes]:
    """Stream a JSONL download line by line, never holding the whole body; a line over MAX_RESULT_LINE_BYTES
    comes as a LineTooLong holding its start."""
    return chain.from_iterable(stream_line_blocks(client, url, what=what, **kwargs))


def stream_line_blocks(client: httpx.Client, url: str, *, what: str, **kwargs: Any) -> Iterator[list[bytes]]:
    """The lines `stream_lines` yields, a list at a time (`iter_line_blocks`)."""
    try:
        with client.stream("GET", url, **kwargs) as response:
            if response.is_error:
                response.read()
                raise provider_error(response, what)
            yield from iter_line_blocks(response.iter_bytes(), max_bytes=MAX_RESULT_LINE_BYTES)
    except httpx.TransportError as exc:
        raise ProviderError(f"{what}: {type(exc).__name__}: {exc}", retryable=True) from exc


class ReopeningReader(io.RawIOBase):
    """A file-like view of a chunk stream that starts over on `seek(0)`, so a retried upload resends it all."""

    def __init__(self, open_stream: Callable[[], Iterator[bytes]]) -> None:
        self._open = open_stream
        self._chunks: Iterator[bytes] = iter(())
        self._pending = b""
        self._started = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if offset != 0 or whence != io.SEEK_SET:
            raise io.UnsupportedOperation("only seek(0) is supported")
        self._chunks, self._pending, self._started = self._open(), b"", True
        return 0

    def readinto(self, buffer: Any) -> int:
        if not self._started:
            self.seek(0)
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
