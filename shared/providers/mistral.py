"""The `mistral` provider: Mistral's batch jobs API (reference/provider-apis.md section 8).

Submission uploads the translated input as a file with purpose `batch` and records its id, records that
a create is under way, then creates a job on that one input file and records the job's id. A create
whose answer was lost is found again among the jobs made since it started, by its input file (a file
only this submission uploaded), before another is tried, so a retry never starts a second job.

Mistral's input lines are `{custom_id, body}`: no `method` or `url`, since the job names the endpoint and
the model (mistral_format.py translates the bodies). Its result lines are OpenAI's `{custom_id, response:
{status_code, body}, error}`. A job that runs out of time (`TIMEOUT_EXCEEDED`) is `expired` and keeps what
finished; `timeout_hours` is set from the batch's own window, so Mistral stops when batchgw would. The
poller reads running jobs' states from the list of jobs, newest first, rather than retrieving each.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import orjson

from shared.errors import ProviderError
from shared.lifecycle import BatchStatus
from shared.providers.base import (
    Journal,
    ProviderStatus,
    ResultLine,
    SubmitRequest,
    TranslationError,
    Unreadable,
    Verbatim,
    guarded,
)
from shared.providers.http import (
    HttpClients,
    ReopeningReader,
    build_client,
    cancel,
    create_once,
    delete_batch_files,
    json_of,
    result_file_lines,
    send,
)
from shared.providers.listing import Page, listed_objects, statuses_in_order
from shared.providers.mistral_format import openai_response, to_mistral
from shared.providers.openai_results import in_full
from shared.providers.registry import ProviderDeps
from shared.records import Counts, ErrorEntry
from shared.routing import Deployment
from shared.secret_refs import resolve_secret

DEFAULT_API_BASE: Final = "https://api.mistral.ai/v1"
JOBS: Final = "/batch/jobs"
_STATES: Final[dict[str, BatchStatus]] = {
    "QUEUED": "in_progress",
    "RUNNING": "in_progress",
    "SUCCESS": "completed",
    "FAILED": "failed",
    "TIMEOUT_EXCEEDED": "expired",
    "CANCELLATION_REQUESTED": "cancelling",
    "CANCELLED": "cancelled",
}
_RESULT_FILES: Final = ("output_file", "error_file")
# how far before `create_started` a lost job may carry its creation time (clock skew between us and Mistral)
FIND_SKEW_SECONDS: Final = 300
_FIND_PAGE_SIZE: Final = 100
_FIND_PAGES: Final = 5
_LIST_PAGE: Final = 100  # jobs asked for in a list page: Mistral's default (it may hold a page to fewer)
# batchgw's completion window; Mistral's default timeout too
_WINDOW_HOURS: Final = 24


def build(deployment: Deployment, deps: ProviderDeps) -> MistralProvider:
    api_key = resolve_secret(deployment.api_key) if deployment.api_key else None
    return MistralProvider(deployment, api_key, clock=deps.clock)


def screen(deployment: Deployment, body: dict[str, Any]) -> None:
    """Raise TranslationError for a request Mistral's chat or embeddings API cannot take."""
    to_mistral(body)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def job_status(job: Mapping[str, Any]) -> ProviderStatus:
    """A Mistral batch job's state, counts and (for a failed job) errors in OpenAI's vocabulary."""
    state = _STATES.get(str(job.get("status")))
    if state is None:
        raise ProviderError(f"unknown batch job status {job.get('status')!r}", retryable=True)
    counts = Counts(
        total=_count(job.get("total_requests")),
        completed=_count(job.get("succeeded_requests")),
        failed=_count(job.get("failed_requests")),
    )
    errors = tuple(_error(e) for e in job.get("errors") or () if isinstance(e, dict)) if state == "failed" else ()
    return ProviderStatus(state, counts, errors)


def _listed(job: Mapping[str, Any]) -> ProviderStatus | None:
    """A listed job's status; None when it cannot be read (the job is then retrieved on its own)."""
    try:
        return job_status(job)
    except ProviderError:
        return None


def _error(entry: Mapping[str, Any]) -> ErrorEntry:
    message, count = str(entry.get("message") or "the job failed"), _count(entry.get("count"))
    return ErrorEntry(code="provider_error", message=f"{message} ({count} requests)" if count else message)


def _openai_line(line: ResultLine) -> ResultLine:
    # Mistral's line ids are its own: batchgw gives each line its `batch_req_` id
    response = openai_response(line.response) if line.response is not None else None
    return replace(line, id=None, response=response)


class MistralProvider:
    """Batches on Mistral's batch jobs API."""

    def __init__(self, deployment: Deployment, api_key: str | None, clock: Callable[[], float] = time.time) -> None:
        self._deployment = deployment
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._clock = clock
        self._api = HttpClients(self._client, deployment.max_retries)

    def _client(self, max_retries: int) -> httpx.Client:
        return build_client(
            base_url=(self._deployment.api_base or DEFAULT_API_BASE).rstrip("/"),
            headers=self._headers,
            timeout=self._deployment.timeout,
            max_retries=max_retries,
        )

    def close(self) -> None:
        self._api.close()

    # --- submit ---------------------------------------------------------------------------------

    def submit(self, request: SubmitRequest, journal: Journal) -> None:
        if "input_file_id" not in journal.refs:
            journal.record(input_file_id=self._upload(request))
        if "batch_id" in journal.refs:
            return
        input_file_id = journal.refs["input_file_id"]
        create_once(
            journal,
            find=lambda: self._find_job(input_file_id, int(journal.refs["create_started"])),
            create=lambda: self._create(request, input_file_id),
            retries=self._deployment.max_retries,
        )

    def _input(self, request: SubmitRequest) -> Iterator[bytes]:
        for custom_id, body in request.open_lines():
            try:
                line = {"custom_id": custom_id, "body": to_mistral(body)}
            except TranslationError as exc:  # screened out before submission: only a changed translator gets here
                raise ProviderError(
                    f"Request {custom_id!r} cannot be sent to Mistral: {exc}", retryable=False, code="invalid_request"
                ) from None
            yield orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)

    def _upload(self, request: SubmitRequest) -> str:
        response = send(
            self._api.retrying,
            "POST",
            "/files",
            what="upload batch input",
            data={"purpose": "batch"},
            files={
                "file": (
                    f"{request.batch_id}.jsonl",
                    ReopeningReader(lambda: self._input(request)),
                    "application/jsonl",
                )
            },
        )
        file_id = json_of(response, "upload batch input").get("id")
        if not isinstance(file_id, str) or not file_id:
            raise ProviderError("upload batch input: the answer has no file id", retryable=True)
        return file_id

    def _timeout_hours(self, request: SubmitRequest) -> int:
        """Hours left in the batch's window, so Mistral stops when batchgw would end the batch anyway."""
        if not request.expires_at:
            return _WINDOW_HOURS
        return min(_WINDOW_HOURS, max(1, math.ceil((request.expires_at - self._clock()) / 3600)))

    def _create(self, request: SubmitRequest, input_file_id: str) -> str:
        body = {
            "input_files": [input_file_id],
            "endpoint": request.endpoint,
            "model": self._deployment.provider_model,
            "metadata": {"batchgw_batch_id": request.batch_id},
            "timeout_hours": self._timeout_hours(request),
        }
        response = send(self._api.once, "POST", JOBS, what="create batch job", json=body)
        job_id = json_of(response, "create batch job").get("id")
        if not isinstance(job_id, str) or not job_id:
            raise ProviderError("create batch job: the answer has no job id", retryable=True)
        return job_id

    def _find_job(self, input_file_id: str, create_started: int) -> str | None:
        """The job an earlier attempt created on `input_file_id`, if there is one: newest first, since then."""
        since = datetime.fromtimestamp(create_started - FIND_SKEW_SECONDS, UTC).isoformat()
        for page in range(_FIND_PAGES):
            params: dict[str, str | int] = {
                "page": page,
                "page_size": _FIND_PAGE_SIZE,
                "created_after": since,
                "order_by": "-created",
            }
            answer = json_of(
                send(self._api.retrying, "GET", JOBS, what="list batch jobs", params=params), "list batch jobs"
            )
            jobs = [j for j in answer.get("data") or () if isinstance(j, dict)]
            for job in jobs:
                if input_file_id in (job.get("input_files") or ()) and isinstance(job.get("id"), str):
                    return str(job["id"])
            if len(jobs) < _FIND_PAGE_SIZE:
                return None
        return None

    # --- after submit ---------------------------------------------------------------------------

    def _job(self, job_id: str) -> dict[str, Any]:
        return json_of(
            send(self._api.retrying, "GET", f"{JOBS}/{job_id}", what="retrieve batch job"), "retrieve batch job"
        )

    def list_statuses(self, refs: Sequence[Mapping[str, str]]) -> dict[str, ProviderStatus]:
        """Read from `GET /batch/jobs` pages (newest first), one after another: the list pages by number, so it
        cannot be entered at a job of ours. A job made while the pages are read moves the rest one place on,
        so a job is at worst shown twice, never skipped for that."""

        def fetch(token: str | None) -> Page:
            # the token: the next page's number and how many jobs the pages before it showed
            page, shown = (int(n) for n in (token or "0:0").split(":"))
            params: dict[str, str | int] = {"page": page, "page_size": _LIST_PAGE, "order_by": "-created"}
            answer = json_of(
                send(self._api.retrying, "GET", JOBS, what="list batch jobs", params=params), "list batch jobs"
            )
            jobs = listed_objects(answer.get("data"))
            total, shown = answer.get("total"), shown + len(jobs)
            # without a total, read on while pages show jobs (the caller's page budget bounds it)
            more = bool(jobs) and (not isinstance(total, int) or total > shown)
            return [(str(j["id"]), _listed(j)) for j in jobs], f"{page + 1}:{shown}" if more else None

        return statuses_in_order([r["batch_id"] for r in refs], fetch)

    def refresh(self, refs: Mapping[str, str]) -> ProviderStatus:
        return job_status(self._job(refs["batch_id"]))

    def cancel(self, refs: Mapping[str, str]) -> None:
        cancel(self._api.retrying, f"{JOBS}/{refs['batch_id']}/cancel", what="cancel batch job")

    def results(self, refs: Mapping[str, str], custom_ids: Sequence[str]) -> Iterator[ResultLine | Unreadable]:
        job = self._job(refs["batch_id"])
        for item in result_file_lines(self._api.retrying, job, _RESULT_FILES):
            for line in in_full(item) if isinstance(item, Verbatim) else (item,):  # each line is translated
                yield guarded(line.custom_id, _openai_line, line) if isinstance(line, ResultLine) else line

    def cleanup(self, refs: Mapping[str, str]) -> None:
        """Delete the uploaded input and the job's output and error files (Mistral keeps them until then)."""
        delete_batch_files(self._api.retrying, refs, self._job, _RESULT_FILES)
