"""A fake Together AI batch API (reference/provider-apis.md section 8), on the fake OpenAI's batch engine.

Together's own routes and quirks over the base fake's way of running a batch (tests/fakes/openai_upstream.py):

- Uploads take three calls, as Together's SDKs make them: `POST /v1/files` with form fields
  (`purpose` must be `batch-api`) answers 302 to a presigned URL with `X-Together-File-Id`; the `PUT` to
  that URL is refused, as S3 refuses it, when it carries an Authorization header or no Content-Length;
  `POST /v1/files/{id}/preprocess` makes the file usable, and a create on a file not preprocessed is a 400.
- Input lines are `{custom_id, body}` with the model in the body; a custom_id over 64 characters is a 400.
- Create answers 201 `{"job": {...}}`; a batch has upper-case statuses (`CANCELING` while cancelling),
  RFC 3339 times, a `progress` percentage and no request counts; the list is a bare array.

Results, broken lines (`corrupt`, `garbage`), failures ("fail" in a custom_id), expiry (model
`fake-expire`), cancellation, faults and lost creates (`slow_create_seconds`) are the base fake's.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.fakes.faults import Faults
from tests.fakes.openai_upstream import FakeBatch, FakeOpenAI

API_KEY = "together-fake-key"
PURPOSE = "batch-api"
_STATUS = {
    "validating": "VALIDATING",
    "in_progress": "IN_PROGRESS",
    "finalizing": "IN_PROGRESS",
    "completed": "COMPLETED",
    "failed": "FAILED",
    "expired": "EXPIRED",
    "cancelling": "CANCELING",
    "cancelled": "CANCELLED",
}


def _rfc3339(monotonic_at: float) -> str:
    return datetime.fromtimestamp(monotonic_at + time.time() - time.monotonic(), UTC).isoformat()


class FakeTogether(FakeOpenAI):
    # Together's routes are its own (see _build); the base fake gives the batch engine, faults and auth
    PREFIXES = ()

    def __init__(self, *, processing_seconds: float = 1.0, faults: Faults | None = None) -> None:
        super().__init__(processing_seconds=processing_seconds, faults=faults)
        self.processed: set[str] = set()

    def authorized(self, request: Request) -> bool:
        if request.url.path.startswith("/presigned/"):
            return True  # signed by its URL: the route itself refuses a second auth mechanism
        return request.headers.get("authorization") == f"Bearer {API_KEY}"

    def response_body(self, line: dict[str, Any], index: int, created: int) -> tuple[dict[str, Any], int, int]:
        # Together's lines name no url: every one is a chat completion (its only batch endpoint)
        return super().response_body({**line, "url": "/v1/chat/completions"}, index, created)

    def batch_json(self, batch: FakeBatch) -> dict[str, Any]:
        ended = batch.status not in ("validating", "in_progress", "cancelling")
        elapsed = (time.monotonic() - batch.created_at) / max(self.processing_seconds, 0.001)
        return {
            "id": batch.id,
            "user_id": "user_fake",
            "input_file_id": batch.input_file_id,
            "file_size_bytes": len(self.files[batch.input_file_id].content) if batch.input_file_id in self.files else 0,
            "status": _STATUS[batch.status],
            "job_deadline": _rfc3339(batch.created_at + 24 * 3600),
            "created_at": _rfc3339(batch.created_at),
            "endpoint": batch.endpoint,
            "progress": 100.0 if ended else round(min(99.0, 100 * elapsed), 1),
            "model_id": batch.lines[0]["body"]["model"] if batch.lines else None,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "error": None,
            "completed_at": _rfc3339(time.monotonic()) if ended else None,
        }

    def _build(self) -> FastAPI:
        app = super()._build()
        app.post("/v1/files")(_start_upload)
        app.put("/presigned/{file_id}")(_presigned_put)
        app.post("/v1/files/{file_id}/preprocess")(_preprocess)
        app.get("/v1/files/{file_id}/content")(_file_content)
        app.delete("/v1/files/{file_id}")(_delete_file)
        app.post("/v1/batches")(_create_batch)
        app.get("/v1/batches")(_list_batches)
        app.get("/v1/batches/{batch_id}")(_retrieve_batch)
        app.post("/v1/batches/{batch_id}/cancel")(_cancel_batch)
        return app


def _fake(request: Request) -> FakeTogether:
    fake: FakeTogether = request.app.state.fake
    return fake


def _error(status: int, message: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return JSONResponse(body, status_code=status)


async def _start_upload(request: Request) -> Response:
    fake = _fake(request)
    async with request.form() as form:
        purpose, name = form.get("purpose"), form.get("file_name")
    if purpose != PURPOSE or not name:
        return _error(400, f"purpose must be {PURPOSE} and file_name is required, got purpose {purpose!r}")
    with fake.lock:
        file_id = fake.store(PURPOSE, b"")
    location = f"{request.base_url}presigned/{file_id}?X-Amz-Signature=fake"
    return Response(status_code=302, headers={"location": location, "x-together-file-id": file_id})


async def _presigned_put(file_id: str, request: Request) -> Response:
    fake = _fake(request)
    if "authorization" in request.headers:
        return Response(b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message>", 400)
    if "content-length" not in request.headers:
        return Response(b"<Error><Code>MissingContentLength</Code></Error>", 411)
    content = await request.body()
    with fake.lock:
        if file_id not in fake.files:
            return Response(b"<Error><Code>NoSuchUpload</Code></Error>", 404)
        fake.files[file_id].content = content
    return Response(status_code=200)


def _preprocess(file_id: str, request: Request) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        if file_id not in fake.files or not fake.files[file_id].content:
            return _error(400, f"File {file_id} has no content to process")
        fake.processed.add(file_id)
        content = fake.files[file_id].content
    return JSONResponse(
        {
            "id": file_id,
            "object": "file",
            "created_at": int(time.time()),
            "type": "jsonl",
            "purpose": PURPOSE,
            "filename": f"{file_id}.jsonl",
            "bytes": len(content),
            "LineCount": content.count(b"\n"),
            "Processed": True,
        }
    )


def _file_content(file_id: str, request: Request) -> Response:
    fake = _fake(request)
    if file_id not in fake.files:
        return _error(404, "File not found")
    return Response(fake.files[file_id].content, media_type="application/octet-stream")


def _delete_file(file_id: str, request: Request) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        if fake.files.pop(file_id, None) is None:
            return _error(404, "File not found")
        fake.processed.discard(file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


def _check_lines(lines: list[dict[str, Any]]) -> str | None:
    for n, line in enumerate(lines, 1):
        custom_id, body = line.get("custom_id"), line.get("body")
        if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 64:
            return f"line {n}: custom_id must be a string of at most 64 characters"
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return f"line {n}: body must be an object naming a model"
    return None


async def _create_batch(request: Request) -> JSONResponse:
    fake = _fake(request)
    body = await request.json()
    with fake.lock:
        file_id = body.get("input_file_id")
        if file_id not in fake.processed:
            return _error(400, f"File {file_id} is not a processed batch-api file")
        if body.get("endpoint") != "/v1/chat/completions":
            return _error(400, f"Unsupported endpoint {body.get('endpoint')!r}")
        lines = [orjson.loads(raw) for raw in fake.files[file_id].content.splitlines() if raw.strip()]
        problem = _check_lines(lines)
        if problem is not None:
            return _error(400, problem)
        batch = FakeBatch(
            id=fake.next_id("batch-"),
            input_file_id=file_id,
            endpoint=body["endpoint"],
            metadata={},
            created_at=time.monotonic(),
            lines=lines,
        )
        fake.batches[batch.id] = batch
        delay, fake.slow_create_seconds = fake.slow_create_seconds, 0.0
    if delay:
        await asyncio.sleep(delay)
    job = fake.batch_json(batch) | {"status": "VALIDATING", "progress": 0.0}
    return JSONResponse({"job": job, "warning": None}, status_code=201)


def _list_batches(request: Request) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        for batch in fake.batches.values():  # time passes for listed batches as for retrieved ones
            fake.advance(batch)
        return JSONResponse([fake.batch_json(b) for b in fake.batches.values()])


def _retrieve_batch(batch_id: str, request: Request) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        batch = fake.batches.get(batch_id)
        if batch is None:
            return _error(404, "Batch not found")
        fake.advance(batch)
        return JSONResponse(fake.batch_json(batch))


def _cancel_batch(batch_id: str, request: Request) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        batch = fake.batches.get(batch_id)
        if batch is None:
            return _error(404, "Batch not found")
        if batch.status not in ("validating", "in_progress", "cancelling"):
            return _error(400, f"Cannot cancel a batch with status {_STATUS[batch.status]}")
        batch.cancel_requested = True
        return JSONResponse(fake.batch_json(batch) | {"status": "CANCELING"})
