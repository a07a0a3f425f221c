"""A fake Mistral batch jobs API (reference/provider-apis.md section 8), served over real HTTP.

Files are uploaded multipart with `purpose=batch`; a job is created on `input_files` with the `model`
and `endpoint` at job level, and its input lines are `{custom_id, body}`. Like Mistral, each request's
body is checked only when the job runs it, against Mistral's own schema, which forbids fields it does
not know: a body with OpenAI's `max_completion_tokens`, `seed`, `user` or a message `name` fails alone
with a 422 `extra_forbidden`, while the rest of the job succeeds. Error bodies are Mistral's
(`{"object": "error", "message", "type", "param", "code"}`), result lines carry no `request_id`.

A job runs by the clock: `QUEUED`, then `RUNNING` for `processing_seconds`, then `SUCCESS` with an
output file (and an error file for the requests that failed: custom_ids containing "fail", bodies
Mistral refuses). A job on model `fake-timeout` ends `TIMEOUT_EXCEEDED` with its first half done; a
cancelled job is `CANCELLATION_REQUESTED` once, then `CANCELLED` with its first half done. A request
whose custom_id contains "long" comes back with finish reason `model_length`. Usage per request is
deterministic and recorded per job and per line. `corrupt` breaks chosen requests' output lines and
`garbage` mixes lines naming no request into the output file (tests/fakes/defects.py).

`Faults` makes a share of calls answer 500, 429 with Retry-After, or hang past the client's timeout;
`slow_create_seconds` makes the next create answer only after that long, once the job exists, so the
client's answer is lost.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.fakes.defects import OPENAI_LINE, Defect, result_rows
from tests.fakes.faults import Faults

API_KEY = "mistral-fake-key"
TIMEOUT_MODEL = "fake-timeout"
ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/embeddings", "/v1/fim/completions", "/v1/moderations"})
# the fields of Mistral's ChatCompletionRequest and EmbeddingRequest (mistralai SDK models); the API forbids others
CHAT_FIELDS = frozenset(
    {
        "model",
        "temperature",
        "top_p",
        "max_tokens",
        "stream",
        "stop",
        "random_seed",
        "metadata",
        "messages",
        "response_format",
        "tools",
        "tool_choice",
        "presence_penalty",
        "frequency_penalty",
        "n",
        "prediction",
        "parallel_tool_calls",
        "reasoning_effort",
        "prompt_mode",
        "guardrails",
        "prompt_cache_key",
        "safe_prompt",
    }
)
EMBEDDING_FIELDS = frozenset({"model", "input", "metadata", "output_dimension", "output_dtype", "encoding_format"})
MESSAGE_FIELDS = {
    "system": frozenset({"role", "content"}),
    "user": frozenset({"role", "content"}),
    "assistant": frozenset({"role", "content", "tool_calls", "prefix"}),
    "tool": frozenset({"role", "content", "tool_call_id", "name"}),
}


@dataclass
class Billed:
    """Token usage the fake charged for one job's succeeded requests."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    succeeded: int = 0


@dataclass
class FakeJob:
    id: str
    input_files: list[str]
    endpoint: str
    model: str
    metadata: dict[str, str]
    timeout_hours: int
    lines: list[dict[str, Any]]
    created_at: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.monotonic)
    status: str = "QUEUED"
    cancel_requested: bool = False
    cancelling_seen: bool = False
    output_file: str | None = None
    error_file: str | None = None
    failed: int = 0
    billed: Billed = field(default_factory=Billed)
    # custom_id -> (prompt, completion) tokens billed for each request that succeeded
    line_usage: dict[str, tuple[int, int]] = field(default_factory=dict)


def mistral_error(status: int, message: Any, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"object": "error", "message": message, "type": kind, "param": None, "code": str(status)}


def extra_fields(body: dict[str, Any], endpoint: str) -> list[str]:
    """The fields of a request body Mistral's API refuses as unknown, each as a `loc` path."""
    allowed = CHAT_FIELDS if endpoint == "/v1/chat/completions" else EMBEDDING_FIELDS
    extra = [f"body.{key}" for key in body if key not in allowed]
    for n, message in enumerate(body.get("messages") or ()):
        fields = MESSAGE_FIELDS.get(message.get("role"), frozenset())
        extra += [f"body.messages.{n}.{key}" for key in message if key not in fields]
    return extra


class FakeMistral:
    def __init__(self, *, processing_seconds: float = 1.0, faults: Faults | None = None) -> None:
        self.processing_seconds = processing_seconds
        # creates the job, then answers only after this long (once): the client's answer is lost
        self.slow_create_seconds = 0.0
        self.faults = faults or Faults()
        self.corrupt: dict[str, Defect] = {}  # custom_id -> how its output line is broken
        self.garbage = False  # mix lines naming no request into output files
        self.files: dict[str, tuple[str, bytes]] = {}
        self.jobs: dict[str, FakeJob] = {}
        self.calls: Counter[str] = Counter()
        self.max_page_size = 100  # Mistral's default; a list page holds at most this many jobs
        self.list_total = True  # list answers say how many jobs the list holds
        self.lock = threading.Lock()
        self.app = self._build()

    def store(self, purpose: str, content: bytes) -> str:
        file_id = str(uuid.uuid4())
        self.files[file_id] = (purpose, content)
        return file_id

    def job_with(self, custom_id: str) -> FakeJob:
        """The job that holds the request `custom_id`."""
        (job,) = [j for j in self.jobs.values() if any(line["custom_id"] == custom_id for line in j.lines)]
        return job

    # --- running a job -------------------------------------------------------------------------

    def _response(self, job: FakeJob, index: int, line: dict[str, Any]) -> dict[str, Any]:
        custom_id, body = line["custom_id"], line["body"]
        extra = extra_fields(body, job.endpoint)
        if extra:
            detail = [
                {"type": "extra_forbidden", "loc": loc.split("."), "msg": "Extra inputs are not permitted"}
                for loc in extra
            ]
            return {"status_code": 422, "body": mistral_error(422, {"detail": detail}, "invalid_request_message_error")}
        if "fail" in custom_id:
            return {"status_code": 400, "body": mistral_error(400, f"Request {custom_id} is invalid")}
        prompt, completion = 20 + index % 5, 7 + index % 3
        job.billed.prompt_tokens += prompt
        job.billed.succeeded += 1
        if job.endpoint == "/v1/embeddings":
            data = [{"object": "embedding", "embedding": [0.1, 0.2], "index": 0}]
            usage = {"prompt_tokens": prompt, "total_tokens": prompt, "completion_tokens": 0}
            job.line_usage[custom_id] = (prompt, 0)
            return {"status_code": 200, "body": {"id": f"emb-{index}", "object": "list", "data": data, "usage": usage}}
        job.billed.completion_tokens += completion
        job.line_usage[custom_id] = (prompt, completion)
        message = {"role": "assistant", "content": f"answer {custom_id}", "tool_calls": None}
        choice = {"index": 0, "message": message, "finish_reason": "model_length" if "long" in custom_id else "stop"}
        chat = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "model": job.model,
            "created": job.created_at,
            "choices": [choice],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
        return {"status_code": 200, "body": chat}

    def _end(self, job: FakeJob, done: int, status: str) -> None:
        """End `job` with its first `done` requests run."""
        succeeded: list[tuple[dict[str, Any], Defect | None]] = []
        errors = bytearray()
        for index, line in enumerate(job.lines[:done]):
            response = self._response(job, index, line)
            # OpenAI's four fields, as Mistral's SDKs read its lines; its response inside is Mistral's own
            result = {
                "id": f"batch-{job.id}-{index}",
                "custom_id": line["custom_id"],
                "response": response,
                "error": None,
            }
            if response["status_code"] == 200:
                succeeded.append((result, self.corrupt.get(line["custom_id"])))
            else:
                job.failed += 1
                errors += orjson.dumps(result, option=orjson.OPT_APPEND_NEWLINE)
        output = b"".join(result_rows(succeeded, OPENAI_LINE, garbage=self.garbage))
        job.output_file = self.store("batch_result", output) if output else None
        job.error_file = self.store("batch_error", bytes(errors)) if errors else None
        job.status = status

    def advance(self, job: FakeJob) -> None:
        if job.status not in ("QUEUED", "RUNNING", "CANCELLATION_REQUESTED"):
            return
        half = len(job.lines) // 2
        if job.cancel_requested:
            if not job.cancelling_seen:
                job.cancelling_seen = True
                job.status = "CANCELLATION_REQUESTED"
            else:
                self._end(job, half, "CANCELLED")
            return
        if job.status == "QUEUED":
            job.status = "RUNNING"
            return
        if time.monotonic() - job.started < self.processing_seconds:
            return
        if job.model == TIMEOUT_MODEL:
            self._end(job, half, "TIMEOUT_EXCEEDED")
        else:
            self._end(job, len(job.lines), "SUCCESS")

    def job_json(self, job: FakeJob) -> dict[str, Any]:
        succeeded = job.billed.succeeded if job.output_file or job.error_file else 0
        return {
            "id": job.id,
            "object": "batch",
            "input_files": job.input_files,
            "metadata": job.metadata,
            "endpoint": job.endpoint,
            "model": job.model,
            "agent_id": None,
            "output_file": job.output_file,
            "error_file": job.error_file,
            "errors": [],
            "status": job.status,
            "created_at": job.created_at,
            "total_requests": len(job.lines),
            "completed_requests": succeeded + job.failed,
            "succeeded_requests": succeeded,
            "failed_requests": job.failed,
            "started_at": job.created_at if job.status != "QUEUED" else None,
            "completed_at": int(time.time()) if job.output_file or job.error_file else None,
        }

    # --- HTTP ----------------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()
        app.state.fake = self
        app.middleware("http")(_faults_and_auth)
        app.post("/v1/files")(_upload_file)
        app.get("/v1/files/{file_id}/content")(_file_content)
        app.delete("/v1/files/{file_id}")(_delete_file)
        app.post("/v1/batch/jobs")(_create_job)
        app.get("/v1/batch/jobs")(_list_jobs)
        app.get("/v1/batch/jobs/{job_id}")(_get_job)
        app.post("/v1/batch/jobs/{job_id}/cancel")(_cancel_job)
        return app


def _fake(request: Request) -> FakeMistral:
    fake: FakeMistral = request.app.state.fake
    return fake


def _error(status: int, message: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(mistral_error(status, message), status_code=status, headers=headers)


async def _faults_and_auth(request: Request, call_next: Any) -> Response:
    fake = _fake(request)
    fake.calls[f"{request.method} {request.url.path}"] += 1
    if request.headers.get("authorization") != f"Bearer {API_KEY}":
        return _error(401, "Unauthorized")
    fault = fake.faults.draw()
    if fault == "error":
        fake.calls["fault:500"] += 1
        return _error(500, "Internal server error")
    if fault == "rate_limit":
        fake.calls["fault:429"] += 1
        return _error(429, "Requests rate limit exceeded", headers={"retry-after": "1"})
    if fault == "hang":
        fake.calls["fault:hang"] += 1
        await asyncio.sleep(fake.faults.hang_seconds)
    response: Response = await call_next(request)
    return response


async def _upload_file(request: Request) -> JSONResponse:
    fake = _fake(request)
    async with request.form() as form:
        upload = form["file"]
        assert not isinstance(upload, str)
        content = await upload.read()
        purpose = str(form.get("purpose") or "fine-tune")
    with fake.lock:
        file_id = fake.store(purpose, content)
    return JSONResponse(
        {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": upload.filename,
            "purpose": purpose,
            "sample_type": "batch_request" if purpose == "batch" else "instruct",
            "num_lines": content.count(b"\n"),
            "source": "upload",
        }
    )


def _file_content(file_id: str, request: Request) -> Response:
    fake = _fake(request)
    if file_id not in fake.files:
        return _error(404, "File not found")
    return Response(fake.files[file_id][1], media_type="application/octet-stream")


def _delete_file(file_id: str, request: Request) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        if fake.files.pop(file_id, None) is None:
            return _error(404, "File not found")
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


def _input_lines(fake: FakeMistral, file_ids: list[str]) -> list[dict[str, Any]] | str:
    lines: list[dict[str, Any]] = []
    for file_id in file_ids:
        if file_id not in fake.files:
            return f"Input file {file_id} not found"
        purpose, content = fake.files[file_id]
        if purpose != "batch":
            return f"Input file {file_id} was uploaded for {purpose}, not batch"
        for raw in content.splitlines():
            line = orjson.loads(raw)
            if not isinstance(line.get("custom_id"), str) or not isinstance(line.get("body"), dict):
                return "Each line needs a custom_id and a body"
            lines.append(line)
    return lines


async def _create_job(request: Request) -> JSONResponse:
    fake = _fake(request)
    body = await request.json()
    with fake.lock:
        if body.get("endpoint") not in ENDPOINTS or not isinstance(body.get("model"), str):
            return _error(422, "endpoint and model are required")
        timeout = body.get("timeout_hours", 24)
        if not isinstance(timeout, int) or not 1 <= timeout < 7 * 24:
            return _error(422, "timeout_hours must be at least 1 and lower than 7 days")
        lines = _input_lines(fake, list(body.get("input_files") or ()))
        if isinstance(lines, str):
            return _error(400, lines)
        job = FakeJob(
            id=str(uuid.uuid4()),
            input_files=list(body["input_files"]),
            endpoint=body["endpoint"],
            model=body["model"],
            metadata=body.get("metadata") or {},
            timeout_hours=timeout,
            lines=lines,
        )
        fake.jobs[job.id] = job
        delay, fake.slow_create_seconds = fake.slow_create_seconds, 0.0
    if delay:
        await asyncio.sleep(delay)
    return JSONResponse(fake.job_json(job))


def _list_jobs(
    request: Request, page: int = 0, page_size: int = 100, created_after: str | None = None, order_by: str = "-created"
) -> JSONResponse:
    fake = _fake(request)
    if order_by not in ("created", "-created"):
        return _error(422, f"order_by must be 'created' or '-created', not {order_by!r}")
    since = datetime.fromisoformat(created_after).timestamp() if created_after else 0
    size = min(page_size, fake.max_page_size)
    with fake.lock:
        jobs = sorted(
            (j for j in fake.jobs.values() if j.created_at >= since),
            key=lambda j: j.started,
            reverse=order_by == "-created",
        )
        chosen = jobs[page * size : (page + 1) * size]
        for job in chosen:  # a listed job shows its state now, as a retrieved one does
            fake.advance(job)
        total = {"total": len(jobs)} if fake.list_total else {}
        return JSONResponse({"object": "list", "data": [fake.job_json(j) for j in chosen], **total})


def _get_job(job_id: str, request: Request) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        job = fake.jobs.get(job_id)
        if job is None:
            return _error(404, "Batch job not found")
        fake.advance(job)
        return JSONResponse(fake.job_json(job))


def _cancel_job(job_id: str, request: Request) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        job = fake.jobs.get(job_id)
        if job is None:
            return _error(404, "Batch job not found")
        if job.status not in ("QUEUED", "RUNNING", "CANCELLATION_REQUESTED"):
            return _error(400, f"Cannot cancel a job with status {job.status}")
        job.cancel_requested = True
        return JSONResponse(fake.job_json(job) | {"status": "CANCELLATION_REQUESTED"})
