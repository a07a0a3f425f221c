"""The `anthropic` provider: Anthropic's Message Batches API, for /v1/chat/completions batches.

Our input is translated line by line (shared/providers/anthropic_format.py) into the create request's
body as it streams out, so no input is held whole. Anthropic keeps no client metadata on a batch, so a
create whose answer was lost is found again by when it was made and how many requests it holds; see
`AnthropicProvider._find_batch` for what that relies on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import httpx
import orjson

from shared.errors import ProviderError
from shared.providers.anthropic_format import anthropic_custom_id, hashed_custom_ids, is_hashed_custom_id, to_params
from shared.providers.anthropic_results import batch_status, result_line, unix_seconds
from shared.providers.base import (
    Journal,
    ProviderStatus,
    ResultLine,
    SubmitRequest,
    TranslationError,
    Unreadable,
    guarded,
)
from shared.providers.http import HttpClients, build_client, cancel, create_once, json_of, send, stream_lines
from shared.providers.listing import Page, id_cursor_page, listed_objects, statuses_from_pages
from shared.providers.registry import ProviderDeps
from shared.results import parsed_line
from shared.routing import Deployment
from shared.secret_refs import resolve_secret

logger = logging.getLogger(__name__)

DEFAULT_API_BASE: Final = "https://api.anthropic.com"
ANTHROPIC_VERSION: Final = "2023-06-01"
BATCHES: Final = "/v1/messages/batches"
# how far before `create_started` a lost batch may carry its creation time (clock skew between us and Anthropic)
FIND_SKEW_SECONDS: Final = 60
_FIND_PAGE_SIZE: Final = 100
_FIND_PAGES: Final = 10
_LIST_PAGE: Final = 1000  # the most a list page holds (`limit` is 1-1000)


def build(deployment: Deployment, deps: ProviderDeps) -> AnthropicProvider:
    return AnthropicProvider(deployment, resolve_secret(deployment.api_key) if deployment.api_key else None)


def screen(deployment: Deployment, body: dict[str, Any]) -> None:
    """Raise TranslationError for a request Anthropic's Messages API cannot take."""
    to_params(body, deployment.provider_model, max_tokens=deployment.output_bound)


class _CreateBody:
    """The create request's JSON, translated from our input as it is sent; iterating again starts over."""

    def __init__(self, request: SubmitRequest, model: str, max_tokens: int) -> None:
        self._request = request
        self._model = model
        self._max_tokens = max_tokens

    def __iter__(self) -> Iterator[bytes]:
        yield b'{"requests":['
        separator = b""
        for custom_id, body in self._request.open_lines():
            try:
                params = to_params(body, self._model, max_tokens=self._max_tokens)
            except TranslationError as exc:  # screened out before submission: only a changed translator gets here
                raise ProviderError(
                    f"Request {custom_id!r} cannot be sent to Anthropic: {exc}", retryable=False, code="invalid_request"
                ) from None
            yield separator + orjson.dumps({"custom_id": anthropic_custom_id(custom_id), "params": params})
            separator = b","
        yield b"]}"


class AnthropicProvider:
    """Batches on Anthropic's Message Batches API."""

    def __init__(self, deployment: Deployment, api_key: str | None) -> None:
        self._deployment = deployment
        self._headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
        if api_key:
            self._headers["x-api-key"] = api_key
        self._api = HttpClients(self._client, deployment.max_retries)

    def _client(self, max_retries: int) -> httpx.Client:
        base_url = (self._deployment.api_base or DEFAULT_API_BASE).rstrip("/")
        return build_client(
            base_url=base_url, headers=self._headers, timeout=self._deployment.timeout, max_retries=max_retries
        )

    def close(self) -> None:
        self._api.close()

    # --- submit ---------------------------------------------------------------------------------

    def submit(self, request: SubmitRequest, journal: Journal) -> None:
        if "batch_id" in journal.refs:
            return
        create_once(
            journal,
            find=lambda: self._find_batch(request, int(journal.refs["create_started"]), journal),
            create=lambda: self._create(request),
            retries=self._deployment.max_retries,
        )

    def _create(self, request: SubmitRequest) -> str:
        body = _CreateBody(request, self._deployment.provider_model, self._deployment.output_bound)
        response = send(self._api.once, "POST", BATCHES, what="create message batch", content=body)
        batch_id = json_of(response, "create message batch").get("id")
        if not isinstance(batch_id, str) or not batch_id:
            raise ProviderError("create message batch: the answer has no batch id", retryable=True)
        return batch_id

    def _find_batch(self, request: SubmitRequest, create_started: int, journal: Journal) -> str | None:
        """The id of the batch an earlier attempt created for `request`, if exactly one batch can be it.

        Anthropic keeps no metadata on a batch, so this relies on what a batch does show: a candidate was
        created no earlier than `create_started` minus FIND_SKEW_SECONDS (our clock and Anthropic's agree
        that well), holds exactly `request.line_count` requests, has not been cancelled, and is not claimed
        by another of our batches (every batch the gateway records is claimed in its table, whichever
        process made it). It relies on nothing outside the gateway creating a batch of the same size in
        that window with the same API key: such a batch, alone, would be taken for ours if our create never
        made one, so give batchgw its own Anthropic workspace. If several qualify, none is taken, since
        taking another's batch would hand its results to the wrong owner; a new batch is created instead,
        and the one our lost create made only costs.
        """
        earliest = create_started - FIND_SKEW_SECONDS
        candidates: list[str] = []
        after_id: str | None = None
        for _ in range(_FIND_PAGES):
            params: dict[str, str | int] = {"limit": _FIND_PAGE_SIZE, **({"after_id": after_id} if after_id else {})}
            page = json_of(send(self._api.retrying, "GET", BATCHES, what="list message batches", params=params), "list")
            data = [b for b in page.get("data") or [] if isinstance(b, dict)]
            older_reached = False
            for batch in data:
                created = unix_seconds(batch.get("created_at"))
                if created is not None and created < earliest:
                    older_reached = True  # the list is newest first: the rest are older still
                elif created is not None and self._could_be_ours(batch, request.line_count, journal):
                    candidates.append(str(batch["id"]))
            if older_reached or not page.get("has_more") or not data:
                break
            after_id = str(page.get("last_id") or data[-1].get("id"))
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            logger.warning(
                "several provider batches could be the one a lost create made; creating another",
                extra={"batch_id": request.batch_id, "candidates": candidates},
            )
        return None

    def _could_be_ours(self, batch: Mapping[str, Any], line_count: int, journal: Journal) -> bool:
        batch_id = batch.get("id")
        if not isinstance(batch_id, str) or batch.get("cancel_initiated_at") or journal.claimed_by_another(batch_id):
            return False
        try:
            _, counts = batch_status(batch)
        except TranslationError:
            return False
        return counts.total == line_count

    # --- after submit ---------------------------------------------------------------------------

    def _batch(self, batch_id: str) -> dict[str, Any]:
        return json_of(
            send(self._api.retrying, "GET", f"{BATCHES}/{batch_id}", what="retrieve message batch"), "retrieve"
        )

    def list_statuses(self, refs: Sequence[Mapping[str, str]]) -> dict[str, ProviderStatus]:
        """Read from `GET /v1/messages/batches` pages (1,000 a page, newest first, entered after our own
        batches' ids); a listed batch whose status cannot be read is retrieved."""

        def fetch(after_id: str | None) -> Page:
            params: dict[str, str | int] = {"limit": _LIST_PAGE, **({"after_id": after_id} if after_id else {})}
            page = json_of(send(self._api.retrying, "GET", BATCHES, what="list message batches", params=params), "list")
            shown = listed_objects(page.get("data"))
            return id_cursor_page([(b["id"], _listed(b)) for b in shown], bool(page.get("has_more")))

        return statuses_from_pages([r["batch_id"] for r in refs], fetch, page_size=_LIST_PAGE)

    def refresh(self, refs: Mapping[str, str]) -> ProviderStatus:
        batch = self._batch(refs["batch_id"])
        try:
            state, counts = batch_status(batch)
        except TranslationError as exc:
            raise ProviderError(f"retrieve message batch: {exc}", retryable=True) from None
        return ProviderStatus(state, counts)

    def cancel(self, refs: Mapping[str, str]) -> None:
        cancel(self._api.retrying, f"{BATCHES}/{refs['batch_id']}/cancel", what="cancel message batch")

    def results(self, refs: Mapping[str, str], custom_ids: Sequence[str]) -> Iterator[ResultLine | Unreadable]:
        batch = self._batch(refs["batch_id"])
        results_url = batch.get("results_url")
        if not isinstance(results_url, str) or not results_url:
            raise ProviderError("message batch results: the batch has no results_url yet", retryable=True)
        created = unix_seconds(batch.get("ended_at")) or int(time.time())
        hashed: dict[str, str] | None = None
        lines = stream_lines(
            self._api.retrying,
            results_url,
            what="download message batch results",
            headers={"accept": "application/binary"},
        )
        for raw in lines:
            line = parsed_line(raw)
            if line is None or isinstance(line, Unreadable):
                if line is not None:
                    yield line
                continue
            custom_id: str = line["custom_id"]
            if is_hashed_custom_id(custom_id):
                if hashed is None:  # map hashed ids back only when a result needs it
                    hashed = hashed_custom_ids(custom_ids)
                custom_id = hashed.get(custom_id, custom_id)
            yield guarded(custom_id, result_line, line, custom_id, created=created)

    def cleanup(self, refs: Mapping[str, str]) -> None:
        """Nothing to remove: a message batch holds no files, and its results expire at Anthropic."""


def _listed(batch: Mapping[str, Any]) -> ProviderStatus | None:
    """A listed message batch's status; None when it cannot be read (then it is retrieved)."""
    try:
        state, counts = batch_status(batch)
    except TranslationError:
        return None
    return ProviderStatus(state, counts)
