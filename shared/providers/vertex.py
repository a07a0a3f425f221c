"""The `vertex` provider: Gemini batch prediction on Vertex AI, with files in a Cloud Storage bucket.

Submission streams our input, translated line by line (shared/providers/vertex_format.py), to
`gs://{gcs_bucket}/batchgw/{batch id}/input.jsonl` and records where it went; then records that a
create is under way, then the job's resource name (as `batch_id`). A create whose answer was lost is
found again by its display name, which is our batch id, before another is tried. Results are the
`predictions*.jsonl` objects under the job's output prefix, read by shared/providers/vertex_results.py;
their lines carry the input line's index spelt in digit labels (vertex_format.line_labels), which map them
back to custom_ids.

Auth is a bearer token: the deployment's `api_key` as a ready-made OAuth token, else Application
Default Credentials (google-auth, loaded on first use, refreshed over urllib3: Lambda has no `requests`).
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import httpx
import orjson

from shared import ids
from shared.errors import ProviderError
from shared.jsonl import LineTooLong
from shared.providers.base import Journal, ProviderStatus, ResultLine, SubmitRequest, Unreadable, guarded
from shared.providers.http import LazyClients, build_client, cancel, create_once, json_of, send, stream_lines
from shared.providers.listing import Page, listed_objects, statuses_in_order
from shared.providers.registry import ProviderDeps
from shared.providers.vertex_format import index_in_line, input_line, line_index
from shared.providers.vertex_results import job_status, result_line
from shared.routing import Deployment
from shared.secret_refs import resolve_secret

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from urllib3 import PoolManager

DEFAULT_LOCATION: Final = "us-central1"
DEFAULT_STORAGE_BASE: Final = "https://storage.googleapis.com"
SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
PREFIX: Final = "batchgw"
_FIND_PAGES: Final = 5
UPLOAD_CHUNK: Final = 8 * 1024 * 1024  # resumable upload chunks must be multiples of 256 KiB
_LIST_PAGES: Final = 1000
_JOBS_PAGE: Final = 1000  # jobs asked for in a list page (Google may answer fewer)


def split_gs_uri(uri: str) -> tuple[str, str]:
    """(bucket, object name or prefix) of a gs:// URI."""
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    return bucket, name


def _unparsed(raw: bytes, reason: str, custom_ids: Sequence[str]) -> Unreadable:
    """A prediction line that cannot be parsed: unreadable for the request its labels name, if its start
    shows them all."""
    index = index_in_line(raw)
    return Unreadable(custom_ids[index] if index is not None and index < len(custom_ids) else None, reason)


class _BearerAuth(httpx.Auth):
    """A static token, or ADC credentials refreshed when they expire (shared by the poller's threads)."""

    def __init__(self, token: str | None, credentials: Credentials | None = None) -> None:
        self._token = token
        self._credentials = credentials
        self._pool: PoolManager | None = None
        self._lock = threading.Lock()

    def token(self) -> str:
        if self._token:
            return self._token
        with self._lock:
            return self._adc_token()

    def _adc_token(self) -> str:
        import google.auth
        import urllib3
        from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError, TransportError
        from google.auth.transport.urllib3 import Request

        try:
            if self._credentials is None:
                self._credentials, _ = google.auth.default(scopes=[SCOPE])
            if not self._credentials.valid:
                if self._pool is None:
                    self._pool = urllib3.PoolManager()
                # google-auth leaves these two untyped
                self._credentials.refresh(Request(self._pool))  # type: ignore[no-untyped-call]
        except DefaultCredentialsError as exc:
            raise ProviderError(f"Google credentials: {exc}", retryable=False, code="provider_auth") from exc
        except TransportError as exc:
            raise ProviderError(f"Google credentials: {exc}", retryable=True) from exc
        except GoogleAuthError as exc:
            raise ProviderError(f"Google credentials: {exc}", retryable=exc.retryable, code="provider_auth") from exc
        token = self._credentials.token
        if not isinstance(token, str):
            raise ProviderError("Google credentials: the refresh gave no token", retryable=True)
        return token

    def close(self) -> None:
        if self._pool is not None:
            self._pool.clear()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        yield request


class _TranslatedInput:
    """Our input as Vertex lines, translated as they are read; a line's position in what is sent is the
    index its Vertex line is labelled with."""

    def __init__(self, request: SubmitRequest, deployment: Deployment) -> None:
        self._request = request
        self._deployment = deployment

    def __iter__(self) -> Iterator[bytes]:
        bound, model = self._deployment.output_bound, self._deployment.provider_model
        for index, line in enumerate(self._request.open_lines()):
            yield input_line(line.body, index, max_output_tokens=bound, model=model)


def build(deployment: Deployment, deps: ProviderDeps) -> VertexProvider:
    return VertexProvider(deployment, resolve_secret(deployment.api_key) if deployment.api_key else None)


def screen(deployment: Deployment, body: dict[str, Any]) -> None:
    """Raise TranslationError for a request Gemini's batch prediction cannot take."""
    input_line(body, 0, model=deployment.provider_model)


class VertexProvider:
    """Batches as Vertex AI batch prediction jobs."""

    def __init__(self, deployment: Deployment, api_key: str | None, *, credentials: Credentials | None = None) -> None:
        """`credentials` replaces Application Default Credentials when there is no `api_key`."""
        self._deployment = deployment
        self._auth = _BearerAuth(api_key, credentials)
        self._location = deployment.location or DEFAULT_LOCATION
        self._clients = LazyClients()

    def _api_base(self) -> str:
        if self._deployment.api_base:
            return self._deployment.api_base.rstrip("/")
        if self._location == "global":
            return "https://aiplatform.googleapis.com"
        return f"https://{self._location}-aiplatform.googleapis.com"

    def _client(self, base_url: str, max_retries: int) -> httpx.Client:
        client = build_client(base_url=base_url, headers={}, timeout=self._deployment.timeout, max_retries=max_retries)
        client.auth = self._auth
        return client

    def _shared_client(self, name: str, base_url: str, max_retries: int) -> httpx.Client:
        return self._clients.get(name, lambda: self._client(base_url, max_retries))

    @property
    def _http(self) -> httpx.Client:
        return self._shared_client("api", self._api_base(), self._deployment.max_retries)

    @property
    def _http_once(self) -> httpx.Client:
        return self._shared_client("api_once", self._api_base(), 0)

    @property
    def _storage(self) -> httpx.Client:
        base = (self._deployment.storage_base or DEFAULT_STORAGE_BASE).rstrip("/")
        return self._shared_client("storage", base, self._deployment.max_retries)

    def close(self) -> None:
        self._clients.close()
        self._auth.close()

    @property
    def _jobs_path(self) -> str:
        return f"/v1/projects/{self._deployment.project}/locations/{self._location}/batchPredictionJobs"

    def _uri(self, batch_id: str, name: str) -> str:
        return f"gs://{self._deployment.gcs_bucket}/{PREFIX}/{batch_id}/{name}"

    # --- submit ---------------------------------------------------------------------------------

    def _upload(self, request: SubmitRequest, uri: str) -> None:
        """Stream the translated input to `uri` in a resumable upload: Cloud Storage's way for data of
        unknown length, sent in chunks of UPLOAD_CHUNK bytes, so memory stays at one chunk."""
        bucket, name = split_gs_uri(uri)
        started = send(
            self._storage,
            "POST",
            f"/upload/storage/v1/b/{bucket}/o",
            what="start the input upload",
            params={"uploadType": "resumable", "name": name},
            headers={"X-Upload-Content-Type": "application/jsonl"},
            json={"name": name, "contentType": "application/jsonl"},
        )
        session = started.headers.get("location")
        if not session:
            raise ProviderError("start the input upload: no upload session in the answer", retryable=True)
        sent, pending = 0, bytearray()
        for line in _TranslatedInput(request, self._deployment):
            pending += line
            while len(pending) >= UPLOAD_CHUNK:
                self._upload_chunk(session, bytes(pending[:UPLOAD_CHUNK]), sent, total=None)
                del pending[:UPLOAD_CHUNK]
                sent += UPLOAD_CHUNK
        self._upload_chunk(session, bytes(pending), sent, total=sent + len(pending))

    def _upload_chunk(self, session: str, chunk: bytes, start: int, *, total: int | None) -> None:
        span = f"{start}-{start + len(chunk) - 1}" if chunk else "*"
        size = "*" if total is None else str(total)
        # 308 "Resume Incomplete" answers every chunk but the last
        send(
            self._storage,
            "PUT",
            session,
            what="upload the input",
            content=chunk,
            headers={"Content-Range": f"bytes {span}/{size}"},
        )

    def _find_job(self, batch_id: str) -> str | None:
        """The name of a job an earlier attempt created for `batch_id`, if there is one."""
        found: list[tuple[str, str]] = []
        params: dict[str, str | int] = {"filter": f'display_name="{batch_id}"', "pageSize": 100}
        for _ in range(_FIND_PAGES):
            page = json_of(send(self._http, "GET", self._jobs_path, what="list jobs", params=params), "list jobs")
            for job in page.get("batchPredictionJobs") or ():
                if isinstance(job, dict) and job.get("displayName") == batch_id and isinstance(job.get("name"), str):
                    found.append((str(job.get("createTime") or ""), job["name"]))
            token = page.get("nextPageToken")
            if not token:
                break
            params["pageToken"] = str(token)
        # should a job have been made twice, the first one is the batch's; the other only costs its runs
        return min(found)[1] if found else None

    def _create(self, request: SubmitRequest, refs: Mapping[str, str]) -> str:
        body = {
            "displayName": request.batch_id,
            "model": f"publishers/google/models/{self._deployment.provider_model}",
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": [refs["input_uri"]]}},
            "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {"outputUriPrefix": refs["output_uri"]}},
        }
        response = send(self._http_once, "POST", self._jobs_path, what="create batch prediction job", json=body)
        name = json_of(response, "create batch prediction job").get("name")
        if not isinstance(name, str) or not name:
            raise ProviderError("create batch prediction job: the answer has no job name", retryable=True)
        return name

    def submit(self, request: SubmitRequest, journal: Journal) -> None:
        if "input_uri" not in journal.refs:
            input_uri = self._uri(request.batch_id, "input.jsonl")
            self._upload(request, input_uri)
            journal.record(
                input_uri=input_uri,
                output_uri=self._uri(request.batch_id, "output"),
                line_count=str(request.line_count),
            )
        if "batch_id" in journal.refs:
            return
        create_once(
            journal,
            find=lambda: self._find_job(request.batch_id),
            create=lambda: self._create(request, journal.refs),
            retries=self._deployment.max_retries,
        )

    # --- after submit ---------------------------------------------------------------------------

    def list_statuses(self, refs: Sequence[Mapping[str, str]]) -> dict[str, ProviderStatus]:
        """Read from batchPredictionJobs list pages of the jobs named as batchgw names them (its batch ids), one
        after another: Google orders the list as it likes, and a pageToken cannot be made from a job of ours."""
        wanted = {r["batch_id"]: r for r in refs}
        params: dict[str, str | int] = {"filter": f'display_name:"{ids.BATCH}*"', "pageSize": _JOBS_PAGE}

        def fetch(token: str | None) -> Page:
            query = {**params, **({"pageToken": token} if token else {})}
            page = json_of(send(self._http, "GET", self._jobs_path, what="list jobs", params=query), "list jobs")
            jobs = listed_objects(page.get("batchPredictionJobs"), "name")
            shown = [(str(j["name"]), _listed(j, wanted.get(j["name"]))) for j in jobs]
            return shown, str(page.get("nextPageToken") or "") or None

        return statuses_in_order(list(wanted), fetch)

    def refresh(self, refs: Mapping[str, str]) -> ProviderStatus:
        job = json_of(send(self._http, "GET", f"/v1/{refs['batch_id']}", what="get job"), "get job")
        return job_status(job, _line_count(refs))

    def cancel(self, refs: Mapping[str, str]) -> None:
        cancel(self._http, f"/v1/{refs['batch_id']}:cancel", what="cancel job", json={})

    def _prediction_objects(self, bucket: str, prefix: str) -> Iterator[str]:
        for name in self._objects(bucket, prefix):
            if name.rsplit("/", 1)[-1].startswith("predictions") and name.endswith(".jsonl"):
                yield name

    def _objects(self, bucket: str, prefix: str) -> Iterator[str]:
        params: dict[str, str] = {"prefix": prefix}
        for _ in range(_LIST_PAGES):
            page = json_of(
                send(self._storage, "GET", f"/storage/v1/b/{bucket}/o", what="list results", params=params),
                "list results",
            )
            for item in page.get("items") or ():
                name = item.get("name") if isinstance(item, dict) else None
                if isinstance(name, str):
                    yield name
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = str(token)

    def results(self, refs: Mapping[str, str], custom_ids: Sequence[str]) -> Iterator[ResultLine | Unreadable]:
        bucket, prefix = split_gs_uri(refs["output_uri"])
        model = self._deployment.provider_model
        for name in list(self._prediction_objects(bucket, prefix.rstrip("/") + "/")):
            url = f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}"
            for raw in stream_lines(self._storage, url, what="download results", params={"alt": "media"}):
                if isinstance(raw, LineTooLong):
                    yield _unparsed(raw, f"a prediction line is longer than {len(raw):,} bytes", custom_ids)
                    continue
                if not raw.strip():
                    continue
                try:
                    prediction = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    yield _unparsed(raw, "a prediction line is not valid JSON", custom_ids)
                    continue
                index = line_index(prediction) if isinstance(prediction, dict) else None
                if index is None or index >= len(custom_ids):
                    yield Unreadable(None, "a prediction line maps to no request")
                    continue
                custom_id = custom_ids[index]
                yield guarded(custom_id, result_line, prediction, custom_id, model)

    def cleanup(self, refs: Mapping[str, str]) -> None:
        """Delete the input and every object of the job's output prefix from the Cloud Storage bucket."""
        names: list[tuple[str, str]] = []
        if "input_uri" in refs:
            names.append(split_gs_uri(refs["input_uri"]))
        if "output_uri" in refs:
            bucket, prefix = split_gs_uri(refs["output_uri"])
            names.extend((bucket, name) for name in self._objects(bucket, prefix.rstrip("/") + "/"))
        for bucket, name in names:
            try:
                send(self._storage, "DELETE", f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}", what="delete")
            except ProviderError as exc:
                if exc.code != "not_found":
                    raise


def _line_count(refs: Mapping[str, str]) -> int | None:
    total = refs.get("line_count")
    return int(total) if total and total.isdigit() else None


def _listed(job: Mapping[str, Any], refs: Mapping[str, str] | None) -> ProviderStatus | None:
    """A listed job's status; None when it cannot be read (then it is retrieved) or is not ours."""
    if refs is None:
        return None
    try:
        return job_status(job, _line_count(refs))
    except ProviderError:
        return None
