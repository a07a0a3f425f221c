"""The `together` provider: Together AI's batch API, through the OpenAI adapter.

Together copies OpenAI's Files + Batches API with differences this adapter absorbs
(reference/provider-apis.md section 8, Together's docs and SDKs):

- An upload is three calls. `POST /files` with the form fields `purpose=batch-api`, `file_name` and
  `file_type` answers `302` with a presigned URL (`Location`) and the file id (`X-Together-File-Id`);
  the bytes go to that URL by `PUT`, with a Content-Length (presigned URLs refuse chunked bodies) and
  without our Authorization header (the URL carries its own); `POST /files/{id}/preprocess` then makes
  the file one a batch can use.
- Input lines are `{custom_id, body}`, and a custom_id is at most 64 characters: an id Together would
  refuse is sent as a stable hash, as for Anthropic, and mapped back in the results.
- Create answers `{"job": {...}}`, statuses are upper-case, listing answers a bare array, and progress
  is a percentage rather than request counts; it is reported against the number of requests sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

import httpx
import orjson

from shared.errors import ProviderError
from shared.providers.anthropic_format import anthropic_custom_id, hashed_custom_ids, is_hashed_custom_id
from shared.providers.base import Journal, ProviderStatus, ResultLine, SubmitRequest, Unreadable, Verbatim
from shared.providers.http import build_client, json_of, send
from shared.providers.listing import listed_objects
from shared.providers.openai import OpenAIProvider
from shared.providers.openai_results import in_full, openai_state
from shared.providers.registry import ProviderDeps
from shared.records import Counts, ErrorEntry
from shared.routing import Deployment

DEFAULT_API_BASE: Final = "https://api.together.xyz/v1"
FILE_PURPOSE: Final = "batch-api"


def build(deployment: Deployment, deps: ProviderDeps) -> TogetherProvider:
    return TogetherProvider(deployment)


def screen(deployment: Deployment, body: dict[str, Any]) -> None:
    """Together takes OpenAI chat requests as they are (with the deployment's model)."""


class _Replayable:
    """A request body that starts over from `open_stream` each time it is iterated: once to measure it
    (a presigned PUT needs its Content-Length), once to send it."""

    def __init__(self, open_stream: Callable[[], Iterator[bytes]]) -> None:
        self._open = open_stream

    def __iter__(self) -> Iterator[bytes]:
        return self._open()


class TogetherProvider(OpenAIProvider):
    """Batches on Together AI's batch API."""

    def _base_url(self) -> str:
        return (self._deployment.api_base or DEFAULT_API_BASE).rstrip("/")

    def submit(self, request: SubmitRequest, journal: Journal) -> None:
        if "request_count" not in journal.refs:
            journal.record(request_count=str(request.line_count))  # what Together's progress is a share of
        super().submit(request, journal)

    def _translated_input(self, request: SubmitRequest) -> Iterator[bytes]:
        model = self._deployment.provider_model
        for custom_id, body in request.open_lines():
            line = {"custom_id": anthropic_custom_id(custom_id), "body": {**body, "model": model}}
            yield orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)

    def _upload(self, request: SubmitRequest) -> dict[str, Any]:
        form = {"purpose": FILE_PURPOSE, "file_name": f"{request.batch_id}.jsonl", "file_type": "jsonl"}
        started = send(self._api.retrying, "POST", "/files", what="start upload", data=form, follow_redirects=False)
        location: str | None = started.headers.get("location")
        file_id: str | None = started.headers.get("x-together-file-id")
        if started.status_code != httpx.codes.FOUND or not location or not file_id:
            raise ProviderError(
                f"start upload: expected a redirect to an upload URL, got HTTP {started.status_code}", retryable=True
            )
        content = _Replayable(lambda: self._translated_input(request))
        size = sum(len(chunk) for chunk in content)
        # the presigned URL's own signature forbids an Authorization header; a failed PUT is not resent
        # here: the submission retries the whole upload
        with build_client(base_url="", headers={}, timeout=self._deployment.timeout, max_retries=0) as presigned:
            send(
                presigned,
                "PUT",
                location,
                what="upload batch input",
                content=content,
                headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            )
        processed = send(self._api.retrying, "POST", f"/files/{file_id}/preprocess", what="finish upload")
        return {**json_of(processed, "finish upload"), "id": file_id}

    def _batches(self) -> list[dict[str, Any]]:
        """Every batch of the account: Together lists them all at once, as a bare array."""
        try:
            answer = orjson.loads(send(self._api.retrying, "GET", "/batches", what="list batches").content)
        except orjson.JSONDecodeError as exc:
            raise ProviderError("list batches: the answer is not JSON", retryable=True) from exc
        batches = answer.get("data") if isinstance(answer, dict) else answer
        return listed_objects(batches)

    def _find_batch(self, input_file_id: str, request: SubmitRequest, journal: Journal) -> str | None:
        """The batch an earlier attempt created from `input_file_id` (a file only this submission uploaded)."""
        for batch in self._batches():
            batch_id = batch.get("id")
            ours = batch.get("input_file_id") == input_file_id and isinstance(batch_id, str) and batch_id
            if ours and not journal.claimed_by_another(str(batch_id)):
                return str(batch_id)
        return None

    def list_statuses(self, refs: Sequence[Mapping[str, str]]) -> dict[str, ProviderStatus]:
        """Read from the one list Together answers."""
        wanted = {r["batch_id"]: r for r in refs}
        return {
            batch["id"]: self._status(batch, wanted[batch["id"]])
            for batch in self._batches()
            if batch.get("id") in wanted
        }

    def _create(self, request: SubmitRequest, input_file_id: str) -> str:
        body = {"input_file_id": input_file_id, "endpoint": request.endpoint, "completion_window": "24h"}
        answer = json_of(send(self._api.once, "POST", "/batches", what="create batch", json=body), "create batch")
        job = answer.get("job", answer)
        batch_id = job.get("id") if isinstance(job, dict) else None
        if not isinstance(batch_id, str) or not batch_id:
            raise ProviderError("create batch: the answer has no batch id", retryable=True)
        return batch_id

    def refresh(self, refs: Mapping[str, str]) -> ProviderStatus:
        return self._status(self._batch(refs["batch_id"]), refs)

    def _status(self, batch: Mapping[str, Any], refs: Mapping[str, str]) -> ProviderStatus:
        state = openai_state(batch.get("status"))
        # progress counts requests done, failed ones included; the final counts come from the result files
        total, progress = int(refs.get("request_count", "0")), batch.get("progress")
        counts = None
        if total and isinstance(progress, int | float) and not isinstance(progress, bool):
            counts = Counts(total=total, completed=min(total, max(0, round(total * progress / 100))), failed=0)
        error = batch.get("error")
        if state == "failed" and isinstance(error, str) and error:
            return ProviderStatus(state, counts, (ErrorEntry(code="provider_error", message=error),))
        return ProviderStatus(state, counts)

    def results(
        self, refs: Mapping[str, str], custom_ids: Sequence[str]
    ) -> Iterator[ResultLine | Verbatim | Unreadable]:
        hashed: dict[str, str] | None = None
        for item in super().results(refs, custom_ids):
            if isinstance(item, Verbatim) and not any(map(is_hashed_custom_id, item.custom_ids)):
                yield item
                continue
            for line in in_full(item) if isinstance(item, Verbatim) else (item,):  # a hashed custom_id changes
                if line.custom_id is not None and is_hashed_custom_id(line.custom_id):
                    if hashed is None:  # map hashed ids back only when a result needs it
                        hashed = hashed_custom_ids(custom_ids)
                    line = replace(line, custom_id=hashed.get(line.custom_id, line.custom_id))
                yield line
