"""The `openai` provider: OpenAI's Batch API, or any OpenAI-compatible one at `api_base`.

Submission records the uploaded file's id, then that a create is under way, then the batch id. A
create whose answer was lost (a timeout, a 5xx after the batch was made) is found again by its input
file id before another is tried, so a retry never starts a second provider batch.

Between upload and create it waits, briefly, for the provider to process the file (Azure refuses a batch
on a file still `pending`); a file still pending, or a deployment whose enqueued-token quota is full
(Azure's `token_limit_exceeded`), is a ProviderBusy: the batch waits and a later try resumes from the
recorded file. Where Azure does not "fail fast", it accepts such a batch and fails it in validation instead:
`refresh` reports that as busy too, and `_find_batch` never adopts such a run again. Every file batchgw
uploads, and every result file, is given an expiry, and `cleanup` deletes them all: Azure caps a resource
at 500 batch files without an expiry.
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any, Final

import httpx
import orjson

from shared import deadline
from shared.errors import ProviderBusy, ProviderError
from shared.providers.base import Journal, ProviderStatus, ResultLine, SubmitRequest, Unreadable, Verbatim
from shared.providers.http import (
    HttpClients,
    ReopeningReader,
    build_client,
    cancel,
    create_once,
    delete_batch_files,
    json_of,
    provider_error,
    result_file_lines,
    send,
)
from shared.providers.listing import Page, id_cursor_page, listed_objects, statuses_from_pages
from shared.providers.openai_results import counts_of, errors_of, openai_state
from shared.providers.registry import ProviderDeps
from shared.routing import Deployment
from shared.secret_refs import SecretError, resolve_secret

DEFAULT_API_BASE = "https://api.openai.com/v1"
_RESULT_FILES = ("output_file_id", "error_file_id")
_FIND_PAGES = 5
_LIST_PAGE = 100  # the most OpenAI's list takes
_TAG = "batchgw_batch_id"  # the metadata key naming the batchgw batch a provider batch runs
# Uploads and result files expire after 14 days: the shortest expiry Azure takes (OpenAI takes 1 hour to
# 30 days), yet longer than any batch needs its files (up to a day waiting for its provider, a day
# running, an hour past its window, then 7 days of cleanup retries). Files with an expiry also count
# against Azure's cap of 10,000 files per resource instead of 500.
FILE_TTL_SECONDS = 14 * 24 * 3600
# how long one submission waits for its upload to be processed, at most, before asking to be retried
FILE_WAIT_SECONDS = 60.0
FILE_RETRY_AFTER = 30.0
QUOTA_RETRY_AFTER = 60.0
# the upload's form fields besides the file, nested as the openai SDK writes them, which OpenAI and Azure read
UPLOAD_FIELDS: Final = {
    "purpose": "batch",
    "expires_after[anchor]": "created_at",
    "expires_after[seconds]": str(FILE_TTL_SECONDS),
}
_PROCESSING = frozenset({"pending", "running"})  # Azure's states of a file not yet processed
_PENDING_REFUSAL = re.compile(r"is in '?(pending|running)'? state", re.IGNORECASE)


def build(deployment: Deployment, deps: ProviderDeps) -> OpenAIProvider:
    return OpenAIProvider(deployment)


def screen(deployment: Deployment, body: dict[str, Any]) -> None:
    """An OpenAI-compatible batch API takes any OpenAI request as it is."""


def provider_status(batch: Mapping[str, Any]) -> ProviderStatus:
    """A batch object's status. One that failed in validation only because the deployment's enqueued-token
    quota was full, no request run (Azure's regions without "fail fast"), is busy as a create refused for
    it is: it is submitted again after a wait."""
    state, counts, errors = openai_state(batch.get("status")), counts_of(batch), errors_of(batch)
    busy = (
        state == "failed"
        and bool(errors)
        and all(e.code == "token_limit_exceeded" for e in errors)
        and (counts is None or counts.completed + counts.failed == 0)
    )
    return ProviderStatus(state, counts, errors, retry_after=QUOTA_RETRY_AFTER if busy else 0.0)


def _status_of(batch: Mapping[str, Any]) -> ProviderStatus | None:
    """A listed batch's status; None when it cannot be read (the poller then retrieves that batch)."""
    try:
        return provider_status(batch)
    except (ProviderError, ValueError, TypeError):
        return None


def batch_line(custom_id: str, body: Mapping[str, Any], *, model: str, url: str) -> bytes:
    """One request as a batch input line for the provider: its model, and the url the batch is created with."""
    line = {"custom_id": custom_id, "method": "POST", "url": url, "body": {**body, "model": model}}
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def create_body(input_file_id: str, endpoint: str, batch_id: str) -> dict[str, Any]:
    """The body that creates the provider batch of batchgw batch `batch_id`."""
    return {
        "input_file_id": input_file_id,
        "endpoint": endpoint,
        "completion_window": "24h",
        "metadata": {_TAG: batch_id},
        "output_expires_after": {"anchor": "created_at", "seconds": FILE_TTL_SECONDS},
    }


def busy_refusal(response: httpx.Response) -> ProviderBusy | None:
    """A refused create that means "not now" (nothing was created): the input file is still being
    processed, or the deployment's enqueued-token quota is full (Azure says to retry with backoff)."""
    if response.status_code != 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    message = str(error.get("message") or "")
    if error.get("code") == "token_limit_exceeded":
        return ProviderBusy(f"create batch: {message}", retry_after=QUOTA_RETRY_AFTER, code="token_limit_exceeded")
    if _PENDING_REFUSAL.search(message):
        return ProviderBusy(f"create batch: {message}", retry_after=FILE_RETRY_AFTER)
    return None


class SecretAuth(httpx.Auth):
    """Sends the value of a secret reference in a header. On a 401 it reads the reference again, past any
    cache, and resends the request once if the value changed: a rotated key, a refreshed Entra token."""

    def __init__(self, ref: str, *, header: str = "Authorization", scheme: str = "Bearer") -> None:
        self._ref = ref
        self._header = header
        self._scheme = scheme

    def _value(self, *, force_fetch: bool) -> str:
        try:
            return resolve_secret(self._ref, force_fetch=force_fetch)
        except SecretError as exc:
            raise ProviderError(f"credentials: {exc}", retryable=True, code="provider_auth") from exc

    def _set(self, request: httpx.Request, value: str) -> None:
        request.headers[self._header] = f"{self._scheme} {value}" if self._scheme else value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        value = self._value(force_fetch=False)
        self._set(request, value)
        response = yield request
        if response.status_code == 401:
            fresh = self._value(force_fetch=True)
            if fresh != value:
                self._set(request, fresh)
                yield request


class OpenAIProvider:
    """Batches on OpenAI or an OpenAI-compatible batch API."""

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment
        self._api = HttpClients(self._client, deployment.max_retries)

    def _auth(self) -> httpx.Auth | None:
        return SecretAuth(self._deployment.api_key) if self._deployment.api_key else None

    def _base_url(self) -> str:
        return (self._deployment.api_base or DEFAULT_API_BASE).rstrip("/")

    def _params(self) -> dict[str, str]:
        return {}

    def _client(self, max_retries: int) -> httpx.Client:
        client = build_client(
            base_url=self._base_url(),
            headers={},
            timeout=self._deployment.timeout,
            max_retries=max_retries,
            params=self._params(),
        )
        auth = self._auth()
        if auth is not None:
            client.auth = auth
        return client

    def close(self) -> None:
        self._api.close()

    def _endpoint(self, endpoint: str) -> str:
        """The endpoint as this server wants it in lines and at create."""
        return endpoint

    # --- submit ---------------------------------------------------------------------------------

    def _translated_input(self, request: SubmitRequest) -> Iterator[bytes]:
        """Our input with each line's model and url as the provider wants them."""
        model, url = self._deployment.provider_model, self._endpoint(request.endpoint)
        for custom_id, body in request.open_lines():
            yield batch_line(custom_id, body, model=model, url=url)

    def _upload(self, request: SubmitRequest) -> dict[str, Any]:
        """Upload the input; the provider's file object."""
        response = send(
            self._api.retrying,
            "POST",
            "/files",
            what="upload batch input",
            data=UPLOAD_FIELDS,
            files={
                "file": (
                    f"{request.batch_id}.jsonl",
                    ReopeningReader(lambda: self._translated_input(request)),
                    "application/jsonl",
                )
            },
        )
        file = json_of(response, "upload batch input")
        if not isinstance(file.get("id"), str) or not file["id"]:
            raise ProviderError("upload batch input: the answer has no file id", retryable=True)
        return file

    def _await_processed(self, file_id: str, file: Mapping[str, Any] | None) -> None:
        """Return once the provider has processed the input `file_id` (`file`: its object, if at hand).

        Waits with backoff for as long as the invocation's deadline allows, less one call for the create;
        raises ProviderBusy if it is still being processed then, and ProviderError if processing failed.
        """
        budget = FILE_WAIT_SECONDS
        left = deadline.remaining()
        if left is not None:
            budget = min(budget, left - self._deployment.timeout)
        give_up, pause = time.monotonic() + budget, 0.5
        while True:
            if file is None:
                what = "retrieve batch input"
                file = json_of(send(self._api.retrying, "GET", f"/files/{file_id}", what=what), what)
            status = str(file.get("status") or "").lower()
            if status == "error":
                details = file.get("status_details") or "no details given"
                raise ProviderError(f"the provider could not process the batch input: {details}", retryable=False)
            if status not in _PROCESSING:
                return
            if time.monotonic() + pause > give_up:
                message = f"the batch input {file_id} is still {status} at the provider"
                raise ProviderBusy(message, retry_after=FILE_RETRY_AFTER)
            time.sleep(pause)
            file, pause = None, min(pause * 2, 8.0)

    def _find_batch(self, input_file_id: str, request: SubmitRequest, journal: Journal) -> str | None:
        """The id of the batch an earlier attempt created from `input_file_id` for this batch, if there is one."""
        after: str | None = None
        for _ in range(_FIND_PAGES):
            params: dict[str, str | int] = {"limit": 100, **({"after": after} if after else {})}
            page = json_of(
                send(self._api.retrying, "GET", "/batches", what="list batches", params=params), "list batches"
            )
            data = [b for b in page.get("data") or [] if isinstance(b, dict)]
            for batch in data:
                found, metadata = batch.get("id"), batch.get("metadata")
                status = _status_of(batch)
                if (
                    batch.get("input_file_id") == input_file_id
                    and isinstance(found, str)
                    and (not isinstance(metadata, dict) or metadata.get(_TAG, request.batch_id) == request.batch_id)
                    and not (status is not None and status.retry_after)  # a run failed as busy, given up on
                    and not journal.claimed_by_another(found)
                ):
                    return found
            if not page.get("has_more") or not data:
                return None
            after = str(data[-1].get("id"))
        return None

    def _create(self, request: SubmitRequest, input_file_id: str) -> str:
        body = create_body(input_file_id, self._endpoint(request.endpoint), request.batch_id)
        try:
            response = self._api.once.post("/batches", json=body)
        except httpx.TransportError as exc:
            raise ProviderError(f"create batch: {type(exc).__name__}: {exc}", retryable=True) from exc
        if response.is_error:
            raise busy_refusal(response) or provider_error(response, "create batch")
        batch_id = json_of(response, "create batch").get("id")
        if not isinstance(batch_id, str) or not batch_id:
            raise ProviderError("create batch: the answer has no batch id", retryable=True)
        return batch_id

    def submit(self, request: SubmitRequest, journal: Journal) -> None:
        uploaded = None
        if "input_file_id" not in journal.refs:
            uploaded = self._upload(request)
            journal.record(input_file_id=uploaded["id"])
        if "batch_id" in journal.refs:
            return
        input_file_id = journal.refs["input_file_id"]
        self._await_processed(input_file_id, uploaded)
        create_once(
            journal,
            find=lambda: self._find_batch(input_file_id, request, journal),
            create=lambda: self._create(request, input_file_id),
            retries=self._deployment.max_retries,
        )

    # --- after submit ---------------------------------------------------------------------------

    def _batch(self, batch_id: str) -> dict[str, Any]:
        return json_of(send(self._api.retrying, "GET", f"/batches/{batch_id}", what="retrieve batch"), "retrieve batch")

    def list_statuses(self, refs: Sequence[Mapping[str, str]]) -> dict[str, ProviderStatus]:
        """Read from `GET /batches` pages (100 a page, newest first, entered after our own batches' ids)."""

        def fetch(after: str | None) -> Page:
            params: dict[str, str | int] = {"limit": _LIST_PAGE, **({"after": after} if after else {})}
            page = json_of(
                send(self._api.retrying, "GET", "/batches", what="list batches", params=params), "list batches"
            )
            shown = listed_objects(page.get("data"))
            return id_cursor_page([(b["id"], _status_of(b)) for b in shown], bool(page.get("has_more")))

        return statuses_from_pages([r["batch_id"] for r in refs], fetch, page_size=_LIST_PAGE)

    def refresh(self, refs: Mapping[str, str]) -> ProviderStatus:
        return provider_status(self._batch(refs["batch_id"]))

    def cancel(self, refs: Mapping[str, str]) -> None:
        cancel(self._api.retrying, f"/batches/{refs['batch_id']}/cancel", what="cancel batch")

    def results(
        self, refs: Mapping[str, str], custom_ids: Sequence[str]
    ) -> Iterator[ResultLine | Verbatim | Unreadable]:
        batch = self._batch(refs["batch_id"])
        yield from result_file_lines(self._api.retrying, batch, _RESULT_FILES)

    def cleanup(self, refs: Mapping[str, str]) -> None:
        """Delete the uploaded input and the batch's output and error files (they count against the
        provider's file quota: Azure's is 500 per resource)."""
        delete_batch_files(self._api.retrying, refs, self._batch, _RESULT_FILES)
