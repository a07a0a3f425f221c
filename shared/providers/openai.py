"""The `openai` provider: OpenAI's Batch API, or any OpenAI-compatible one at `api_base`.

Submission records the uploaded file's id, then that a create is under way, then the batch id. A
create whose answer was lost (a timeout, a 5xx after the batch was made) is found again by its input
file id before another is tried, so a retry never starts a second provider batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx
import orjson

from shared.errors import ProviderError
from shared.jsonl import LineTooLong
from shared.lifecycle import BatchStatus
from shared.providers.base import Journal, ProviderStatus, ResultLine, SubmitRequest, Unreadable
from shared.providers.http import (
    LazyClients,
    ReopeningReader,
    build_client,
    cancel,
    create_once,
    json_of,
    send,
    stream_lines,
)
from shared.providers.registry import ProviderDeps
from shared.records import Counts, ErrorEntry
from shared.results import BadUsage, custom_id_in, usage_from_openai
from shared.routing import Deployment
from shared.secret_refs import resolve_secret

DEFAULT_API_BASE = "https://api.openai.com/v1"
_RESULT_FILES = ("output_file_id", "error_file_id")
_FIND_PAGES = 5
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


def build(deployment: Deployment, deps: ProviderDeps) -> OpenAIProvider:
    return OpenAIProvider(deployment, resolve_secret(deployment.api_key) if deployment.api_key else None)


def screen(deployment: Deployment, body: dict[str, Any]) -> None:
    """An OpenAI-compatible batch API takes any OpenAI request as it is."""


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


def result_line(raw: bytes) -> ResultLine | Unreadable | None:
    """An OpenAI output or error line as a ResultLine; Unreadable for a line that cannot be read or priced
    (with its custom_id when that much can be read); None for a blank line."""
    if isinstance(raw, LineTooLong):
        return Unreadable(custom_id_in(raw), f"the line is longer than {len(raw):,} bytes")
    if not raw.strip():
        return None
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Unreadable(custom_id_in(raw), "the line is not valid JSON")
    custom_id = line.get("custom_id") if isinstance(line, dict) else None
    if not isinstance(custom_id, str):
        return Unreadable(None, "the line has no custom_id")
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


class OpenAIProvider:
    """Batches on OpenAI or an OpenAI-compatible batch API."""

    def __init__(self, deployment: Deployment, api_key: str | None) -> None:
        self._deployment = deployment
        self._api_key = api_key
        self._clients = LazyClients()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _base_url(self) -> str:
        return (self._deployment.api_base or DEFAULT_API_BASE).rstrip("/")

    def _params(self) -> dict[str, str]:
        return {}

    def _client(self, max_retries: int) -> httpx.Client:
        return build_client(
            base_url=self._base_url(),
            headers=self._headers(),
            timeout=self._deployment.timeout,
            max_retries=max_retries,
            params=self._params(),
        )

    @property
    def _http(self) -> httpx.Client:
        return self._clients.get("retrying", lambda: self._client(self._deployment.max_retries))

    @property
    def _http_once(self) -> httpx.Client:
        """For creating a batch: never resent, since a resend could create a second one."""
        return self._clients.get("once", lambda: self._client(0))

    def close(self) -> None:
        self._clients.close()

    def _endpoint(self, endpoint: str) -> str:
        """The endpoint as this server wants it in lines and at create."""
        return endpoint

    # --- submit ---------------------------------------------------------------------------------

    def _translated_input(self, request: SubmitRequest) -> Iterator[bytes]:
        """Our input with each line's model and url as the provider wants them."""
        model, url = self._deployment.provider_model, self._endpoint(request.endpoint)
        for custom_id, body in request.open_lines():
            line = {"custom_id": custom_id, "method": "POST", "url": url, "body": {**body, "model": model}}
            yield orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)

    def _upload(self, request: SubmitRequest) -> str:
        response = send(
            self._http,
            "POST",
            "/files",
            what="upload batch input",
            data={"purpose": "batch"},
            files={
                "file": (
                    f"{request.batch_id}.jsonl",
                    ReopeningReader(lambda: self._translated_input(request)),
                    "application/jsonl",
                )
            },
        )
        file_id = json_of(response, "upload batch input").get("id")
        if not isinstance(file_id, str) or not file_id:
            raise ProviderError("upload batch input: the answer has no file id", retryable=True)
        return file_id

    def _find_batch(self, input_file_id: str) -> str | None:
        """The id of a batch an earlier attempt created from `input_file_id`, if there is one."""
        after: str | None = None
        for _ in range(_FIND_PAGES):
            params: dict[str, str | int] = {"limit": 100, **({"after": after} if after else {})}
            page = json_of(send(self._http, "GET", "/batches", what="list batches", params=params), "list batches")
            data = [b for b in page.get("data") or [] if isinstance(b, dict)]
            for batch in data:
                if batch.get("input_file_id") == input_file_id and isinstance(batch.get("id"), str):
                    return str(batch["id"])
            if not page.get("has_more") or not data:
                return None
            after = str(data[-1].get("id"))
        return None

    def _create(self, request: SubmitRequest, input_file_id: str) -> str:
        body = {
            "input_file_id": input_file_id,
            "endpoint": self._endpoint(request.endpoint),
            "completion_window": "24h",
            "metadata": {"batchgw_batch_id": request.batch_id},
        }
        response = send(self._http_once, "POST", "/batches", what="create batch", json=body)
        batch_id = json_of(response, "create batch").get("id")
        if not isinstance(batch_id, str) or not batch_id:
            raise ProviderError("create batch: the answer has no batch id", retryable=True)
        return batch_id

    def submit(self, request: SubmitRequest, journal: Journal) -> None:
        if "input_file_id" not in journal.refs:
            journal.record(input_file_id=self._upload(request))
        if "batch_id" in journal.refs:
            return
        input_file_id = journal.refs["input_file_id"]
        create_once(
            journal,
            find=lambda: self._find_batch(input_file_id),
            create=lambda: self._create(request, input_file_id),
            retries=self._deployment.max_retries,
        )

    # --- after submit ---------------------------------------------------------------------------

    def _batch(self, batch_id: str) -> dict[str, Any]:
        return json_of(send(self._http, "GET", f"/batches/{batch_id}", what="retrieve batch"), "retrieve batch")

    def refresh(self, refs: Mapping[str, str]) -> ProviderStatus:
        batch = self._batch(refs["batch_id"])
        return ProviderStatus(openai_state(batch.get("status")), counts_of(batch), errors_of(batch))

    def cancel(self, refs: Mapping[str, str]) -> None:
        cancel(self._http, f"/batches/{refs['batch_id']}/cancel", what="cancel batch")

    def results(self, refs: Mapping[str, str], custom_ids: Sequence[str]) -> Iterator[ResultLine | Unreadable]:
        batch = self._batch(refs["batch_id"])
        for key in _RESULT_FILES:
            file_id = batch.get(key)
            if not isinstance(file_id, str) or not file_id:
                continue
            for raw in stream_lines(self._http, f"/files/{file_id}/content", what=f"download {key}"):
                line = result_line(raw)
                if line is not None:
                    yield line

    def cleanup(self, refs: Mapping[str, str]) -> None:
        """Delete the uploaded input and the batch's output and error files (they count against the
        provider's file quota: Azure's is 500 per resource)."""
        files = [refs["input_file_id"]] if "input_file_id" in refs else []
        if "batch_id" in refs:
            try:
                batch = self._batch(refs["batch_id"])
            except ProviderError as exc:
                if exc.code != "not_found":
                    raise
            else:
                files += [f for key in _RESULT_FILES if isinstance(f := batch.get(key), str) and f]
        for file_id in dict.fromkeys(files):
            try:
                send(self._http, "DELETE", f"/files/{file_id}", what="delete a provider file")
            except ProviderError as exc:
                if exc.code != "not_found":
                    raise
