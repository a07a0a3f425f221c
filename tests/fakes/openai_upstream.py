"""A fake OpenAI Files + Batches API (reference/provider-apis.md sections 1 and 2), served over real HTTP.

It keeps files and batches in memory and runs each batch by the clock: `in_progress` for
`processing_seconds`, then `completed` with an output file (and an error file for every request
whose custom_id contains "fail"). Each line's body is the endpoint's own answer (a chat completion, an
embedding list, a text completion, a Response). A batch of model `fake-expire` expires instead with half
its requests done, a cancelled batch is `cancelling` once and then `cancelled` with half done, and
`fake-refuse` is refused at creation with a 400. `Faults` makes a share of calls answer 500, 429 with
Retry-After, or hang past the client's timeout.

Files: an upload is `uploaded` for `file_processing_seconds`, then `processed`, or `error` (with
`status_details`) when its content holds BAD_FILE_MARKER; `expires_after` must be in OpenAI's range
(1 hour to 30 days), and so must a batch's `output_expires_after`, which its result files then carry.
Files can be retrieved and deleted, so a test sees which are still live.

Usage per request is deterministic and recorded per batch and per line, so tests compute the expected
cost from what the fake billed. `corrupt` breaks chosen requests' output lines and `garbage` mixes lines
naming no request into the output file (tests/fakes/defects.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.fakes.defects import OPENAI_LINE, Defect, result_rows
from tests.fakes.faults import Faults

API_KEY = "sk-fake-upstream"
BAD_FILE_MARKER = "fake-unparseable-file"  # an uploaded file holding this ends in status `error`


@dataclass
class FakeFile:
    id: str
    purpose: str
    filename: str
    content: bytes
    created_at: int
    ready_at: float  # monotonic: processing ends
    expires_at: int | None


@dataclass
class FakeBatch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str]
    created_at: float
    lines: list[dict[str, Any]]
    output_expires_after: int | None = None
    cancel_requested: bool = False
    cancelling_seen: bool = False
    status: str = "in_progress"
    output_file_id: str | None = None
    error_file_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    completed: int = 0
    failed: int = 0
    # custom_id -> (prompt, completion) tokens billed for each request that succeeded
    line_usage: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return str(self.lines[0]["body"].get("model")) if self.lines else ""

    @property
    def active(self) -> bool:
        return self.status in ("validating", "in_progress", "finalizing", "cancelling")


def prompt_tokens(index: int) -> int:
    """What the fake bills as the prompt of the request at `index` (and counts as enqueued before it runs)."""
    return 20 + index % 5


class FakeOpenAI:
    """The fake OpenAI server; FakeAzureOpenAI (tests/fakes/azure_upstream.py) changes its paths and quirks."""

    PREFIXES: tuple[str, ...] = ("/v1",)
    PROCESSING_STATUS = "uploaded"  # a file's status until it is processed
    EXPIRY_SECONDS = (3600, 2_592_000)  # what `expires_after.seconds` may be

    def __init__(self, *, processing_seconds: float = 1.0, faults: Faults | None = None) -> None:
        self.processing_seconds = processing_seconds
        self.file_processing_seconds = 0.0
        # creates the batch, then answers only after this long (once): the client's answer is lost
        self.slow_create_seconds = 0.0
        self.faults = faults or Faults()
        self.corrupt: dict[str, Defect] = {}  # custom_id -> how its output line is broken
        self.garbage = False  # mix lines naming no request into output files
        self.files: dict[str, FakeFile] = {}
        self.batches: dict[str, FakeBatch] = {}
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._seq = 0
        self.app = self._build()

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {API_KEY}"

    def unauthorized(self, request: Request) -> JSONResponse:
        return _error(401, "Incorrect API key provided", code="invalid_api_key")

    def check_lines(self, lines: list[dict[str, Any]]) -> str | None:
        """Why this server would refuse these input lines, or None."""
        return None

    def upload_refusal(self, expires: bool) -> JSONResponse | None:
        """This server's refusal of one more upload (one that `expires`, or not), or None."""
        return None

    def create_refusal(self, file: FakeFile, lines: list[dict[str, Any]]) -> JSONResponse | None:
        """This server's refusal of a batch of `lines` from `file`, or None."""
        return None

    def output_line(self, index: int, custom_id: str, response: Any, error: Any) -> dict[str, Any]:
        return {"id": f"batch_req_{index}", "custom_id": custom_id, "response": response, "error": error}

    def next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self._seq:06d}"

    # --- files ---------------------------------------------------------------------------------

    def store(self, purpose: str, content: bytes, *, expires_after: int | None = None, filename: str = "") -> str:
        now = int(time.time())
        file = FakeFile(
            id=self.next_id("file-fake"),
            purpose=purpose,
            filename=filename or f"{purpose}.jsonl",
            content=content,
            created_at=now,
            ready_at=time.monotonic() + (self.file_processing_seconds if purpose == "batch" else 0.0),
            expires_at=None if expires_after is None else now + expires_after,
        )
        self.files[file.id] = file
        return file.id

    def process_files(self) -> None:
        """Finish processing every upload now."""
        for file in self.files.values():
            file.ready_at = min(file.ready_at, time.monotonic())

    def file_status(self, file: FakeFile) -> tuple[str, str | None]:
        """The file's status and status_details."""
        if time.monotonic() < file.ready_at:
            return self.PROCESSING_STATUS, None
        if BAD_FILE_MARKER.encode() in file.content:
            return "error", "Line 1: the input file could not be parsed."
        return "processed", None

    def file_json(self, file: FakeFile) -> dict[str, Any]:
        status, details = self.file_status(file)
        return {
            "id": file.id,
            "object": "file",
            "bytes": len(file.content),
            "created_at": file.created_at,
            "filename": file.filename,
            "purpose": file.purpose,
            "status": status,
            "status_details": details,
            "expires_at": file.expires_at,
        }

    def expiry_problem(self, policy: dict[str, Any] | None) -> str | None:
        """Why an `expires_after` (or `output_expires_after`) policy is refused, or None."""
        if policy is None:
            return None
        low, high = self.EXPIRY_SECONDS
        seconds = policy.get("seconds")
        if policy.get("anchor") != "created_at":
            return "anchor must be 'created_at'"
        if not isinstance(seconds, int) or not low <= seconds <= high:
            return f"seconds must be an integer between {low} and {high}, got {seconds!r}"
        return None

    # --- batch life ----------------------------------------------------------------------------

    def response_body(self, line: dict[str, Any], index: int, created: int) -> tuple[dict[str, Any], int, int]:
        """The endpoint's answer to `line`, and its prompt and completion tokens."""
        model, url = line["body"]["model"], line["url"]
        prompt, completion = prompt_tokens(index), 7 + index % 3
        if url.endswith("/embeddings"):
            embedding = {"object": "embedding", "index": 0, "embedding": [0.1 * index, -0.2, 0.3]}
            embedding_usage = {"prompt_tokens": prompt, "total_tokens": prompt}
            return {"object": "list", "data": [embedding], "model": model, "usage": embedding_usage}, prompt, 0
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        text = f"answer {line['custom_id']}"
        if url.endswith("/responses"):
            message = {
                "type": "message",
                "id": f"msg_{index}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
            response_usage = {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": completion,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + completion,
            }
            body = {
                "id": f"resp_{index}",
                "object": "response",
                "created_at": created,
                "status": "completed",
                "model": model,
                "output": [message],
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "usage": response_usage,
            }
            return body, prompt, completion
        if url.endswith("/v1/completions") or url == "/completions":
            choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
            body = {"id": f"cmpl-{index}", "object": "text_completion", "created": created, "model": model}
            return body | {"choices": [choice], "usage": usage}, prompt, completion
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        body = {"id": f"chatcmpl-{index}", "object": "chat.completion", "created": created, "model": model}
        return body | {"choices": [choice], "usage": usage}, prompt, completion

    def _run(self, batch: FakeBatch, done: int, outcome: str) -> None:
        """End `batch` with its first `done` requests processed."""
        succeeded: list[tuple[dict[str, Any], Defect | None]] = []
        errors = bytearray()
        created = int(time.time())
        for index, line in enumerate(batch.lines):
            custom_id = line["custom_id"]
            if index >= done:
                if outcome == "cancelled":
                    errors += orjson.dumps(
                        self.output_line(index, custom_id, None, {"code": "batch_cancelled", "message": "cancelled"}),
                        option=orjson.OPT_APPEND_NEWLINE,
                    )
                    batch.failed += 1
                continue
            if "fail" in custom_id:
                error_body = {
                    "error": {"message": "bad request", "type": "invalid_request_error", "param": None, "code": None}
                }
                errors += orjson.dumps(
                    self.output_line(
                        index, custom_id, {"status_code": 400, "request_id": f"req_{index}", "body": error_body}, None
                    ),
                    option=orjson.OPT_APPEND_NEWLINE,
                )
                batch.failed += 1
                continue
            body, prompt, completion = self.response_body(line, index, created)
            batch.prompt_tokens += prompt
            batch.completion_tokens += completion
            batch.line_usage[custom_id] = (prompt, completion)
            batch.completed += 1
            response = {"status_code": 200, "request_id": f"req_{index}", "body": body}
            succeeded.append((self.output_line(index, custom_id, response, None), self.corrupt.get(custom_id)))
        self.store_results(batch, b"".join(result_rows(succeeded, OPENAI_LINE, garbage=self.garbage)), bytes(errors))
        batch.status = outcome

    def store_results(self, batch: FakeBatch, output: bytes, errors: bytes) -> None:
        if output:
            batch.output_file_id = self.store("batch_output", output, expires_after=batch.output_expires_after)
        if errors:
            batch.error_file_id = self.store("batch_output", errors, expires_after=batch.output_expires_after)

    def advance(self, batch: FakeBatch) -> None:
        if batch.status not in ("in_progress", "cancelling"):
            return
        half = len(batch.lines) // 2
        if batch.cancel_requested:
            if not batch.cancelling_seen:
                batch.cancelling_seen = True
                batch.status = "cancelling"
                return
            self._run(batch, half, "cancelled")
            return
        if time.monotonic() - batch.created_at < self.processing_seconds:
            return
        if batch.model == "fake-expire":
            self._run(batch, half, "expired")
        else:
            self._run(batch, len(batch.lines), "completed")

    def batch_json(self, batch: FakeBatch) -> dict[str, Any]:
        total = len(batch.lines)
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": None,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": int(batch.created_at),
            "in_progress_at": int(batch.created_at),
            "request_counts": {"total": total, "completed": batch.completed, "failed": batch.failed},
            "metadata": batch.metadata,
        }

    # --- HTTP ----------------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()
        app.state.fake = self
        app.middleware("http")(_faults_and_auth)
        for prefix in self.PREFIXES:
            app.post(f"{prefix}/files")(_create_file)
            app.get(f"{prefix}/files/{{file_id}}")(_retrieve_file)
            app.delete(f"{prefix}/files/{{file_id}}")(_delete_file)
            app.get(f"{prefix}/files/{{file_id}}/content")(_file_content)
            app.post(f"{prefix}/batches")(_create_batch)
            app.get(f"{prefix}/batches")(_list_batches)
            app.get(f"{prefix}/batches/{{batch_id}}")(_retrieve_batch)
            app.post(f"{prefix}/batches/{{batch_id}}/cancel")(_cancel_batch)
        return app


def _error(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    type_: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _fake(request: Request) -> FakeOpenAI:
    fake: FakeOpenAI = request.app.state.fake
    return fake


async def _faults_and_auth(request: Request, call_next: Any) -> Response:
    fake = _fake(request)
    fake.calls[f"{request.method} {request.url.path}"] += 1
    if not fake.authorized(request):
        fake.calls["refused:401"] += 1
        return fake.unauthorized(request)
    fault = fake.faults.draw()
    if fault == "error":
        fake.calls["fault:500"] += 1
        return _error(500, "server error", type_="server_error")
    if fault == "rate_limit":
        fake.calls["fault:429"] += 1
        return _error(429, "rate limited", type_="requests", code="rate_limit_exceeded", headers={"retry-after": "1"})
    if fault == "hang":
        fake.calls["fault:hang"] += 1
        await asyncio.sleep(fake.faults.hang_seconds)
    response: Response = await call_next(request)
    return response


def _form_policy(form: Any, name: str) -> dict[str, Any] | None:
    """A nested form field as the SDK sends it (`name[anchor]`) or as Azure's curl examples do (`name.anchor`)."""
    policy = {
        key: form.get(f"{name}[{key}]", form.get(f"{name}.{key}"))
        for key in ("anchor", "seconds")
        if f"{name}[{key}]" in form or f"{name}.{key}" in form
    }
    if not policy:
        return None
    seconds = str(policy.get("seconds"))
    return policy | {"seconds": int(seconds) if seconds.isdigit() else seconds}


async def _create_file(request: Request) -> JSONResponse:
    fake = _fake(request)
    async with request.form() as form:
        upload = form["file"]
        assert not isinstance(upload, str)
        content = await upload.read()
        purpose = str(form["purpose"])
        policy = _form_policy(form, "expires_after")
    problem = fake.expiry_problem(policy)
    if problem is not None:
        return _error(400, f"Invalid expires_after: {problem}", param="expires_after")
    seconds = None if policy is None else int(policy["seconds"])
    with fake.lock:
        refusal = fake.upload_refusal(seconds is not None)
        if refusal is not None:
            return refusal
        file_id = fake.store(purpose, content, expires_after=seconds, filename=upload.filename or "upload")
        return JSONResponse(fake.file_json(fake.files[file_id]))


def _retrieve_file(file_id: str, request: Request) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        if file_id not in fake.files:
            return _error(404, "No such File object: " + file_id, param="id")
        return JSONResponse(fake.file_json(fake.files[file_id]))


def _delete_file(file_id: str, request: Request) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        if fake.files.pop(file_id, None) is None:
            return _error(404, "No such File object: " + file_id, param="id")
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


def _file_content(file_id: str, request: Request) -> Response:
    fake = _fake(request)
    if file_id not in fake.files:
        return _error(404, "No such File", param="file_id")
    return Response(fake.files[file_id].content, media_type="application/octet-stream")


async def _create_batch(request: Request) -> JSONResponse:
    fake = _fake(request)
    body = await request.json()
    problem = fake.expiry_problem(body.get("output_expires_after"))
    if problem is not None:
        return _error(400, f"Invalid output_expires_after: {problem}", param="output_expires_after")
    with fake.lock:
        file = fake.files.get(body["input_file_id"])
        if file is None:
            return _error(400, "No such File", param="input_file_id")
        lines = [orjson.loads(raw) for raw in file.content.splitlines() if raw.strip()]
        problem = fake.check_lines(lines)
        if problem is not None:
            return _error(400, problem, param="input_file_id", code="invalid_request")
        if lines and lines[0]["body"].get("model") == "fake-refuse":
            return _error(400, "The model fake-refuse does not support batches.", param="model", code="model_not_found")
        refusal = fake.create_refusal(file, lines)
        if refusal is not None:
            return refusal
        batch = FakeBatch(
            id=fake.next_id("batch_fake"),
            input_file_id=file.id,
            endpoint=body["endpoint"],
            metadata=body.get("metadata") or {},
            created_at=time.monotonic(),
            lines=lines,
            output_expires_after=(body.get("output_expires_after") or {}).get("seconds"),
        )
        fake.batches[batch.id] = batch
        delay, fake.slow_create_seconds = fake.slow_create_seconds, 0.0
    if delay:
        await asyncio.sleep(delay)
    return JSONResponse(fake.batch_json(batch) | {"status": "validating"})


def _list_batches(request: Request, limit: int = 20, after: str | None = None) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        ordered = sorted(fake.batches.values(), key=lambda b: b.id, reverse=True)
        if after is not None:
            ordered = [b for b in ordered if b.id < after]
        page = ordered[:limit]
        for batch in page:  # time passes for listed batches as for retrieved ones
            fake.advance(batch)
        return JSONResponse(
            {"object": "list", "data": [fake.batch_json(b) for b in page], "has_more": len(ordered) > limit}
        )


def _retrieve_batch(batch_id: str, request: Request) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        batch = fake.batches.get(batch_id)
        if batch is None:
            return _error(404, "No such Batch")
        fake.advance(batch)
        return JSONResponse(fake.batch_json(batch))


def _cancel_batch(batch_id: str, request: Request) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        batch = fake.batches[batch_id]
        if batch.status not in ("in_progress", "validating", "cancelling"):
            return _error(400, f"Cannot cancel a batch with status {batch.status}")
        batch.cancel_requested = True
        return JSONResponse(fake.batch_json(batch) | {"status": "cancelling"})
