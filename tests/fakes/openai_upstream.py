"""A fake OpenAI Files + Batches API (reference/provider-apis.md sections 1 and 2), served over real HTTP.

It keeps files and batches in memory and runs each batch by the clock: `in_progress` for
`processing_seconds`, then `completed` with an output file (and an error file for every request
whose custom_id contains "fail"). A batch of model `fake-expire` expires instead with half its
requests done, a cancelled batch is `cancelling` once and then `cancelled` with half done, and
`fake-refuse` is refused at creation with a 400. `Faults` makes a share of calls answer 500, 429 with
Retry-After, or hang past the client's timeout. Usage per request is deterministic and recorded
per batch, so tests compute the expected cost from what the fake billed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.fakes.faults import Faults

API_KEY = "sk-fake-upstream"


@dataclass
class FakeBatch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str]
    created_at: float
    lines: list[dict[str, Any]]
    cancel_requested: bool = False
    cancelling_seen: bool = False
    status: str = "in_progress"
    output_file_id: str | None = None
    error_file_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    completed: int = 0
    failed: int = 0


class FakeOpenAI:
    """The fake OpenAI server; FakeAzureOpenAI (tests/fakes/azure_upstream.py) changes its paths and quirks."""

    PREFIXES: tuple[str, ...] = ("/v1",)

    def __init__(self, *, processing_seconds: float = 1.0, faults: Faults | None = None) -> None:
        self.processing_seconds = processing_seconds
        # creates the batch, then answers only after this long (once): the client's answer is lost
        self.slow_create_seconds = 0.0
        self.faults = faults or Faults()
        self.files: dict[str, tuple[str, bytes]] = {}
        self.batches: dict[str, FakeBatch] = {}
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._seq = 0
        self.app = self._build()

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {API_KEY}"

    def check_lines(self, lines: list[dict[str, Any]]) -> str | None:
        """Why this server would refuse these input lines, or None."""
        return None

    def output_line(self, index: int, custom_id: str, response: Any, error: Any) -> dict[str, Any]:
        return {"id": f"batch_req_{index}", "custom_id": custom_id, "response": response, "error": error}

    def next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self._seq:06d}"

    # --- batch life ----------------------------------------------------------------------------

    def _run(self, batch: FakeBatch, done: int, outcome: str) -> None:
        """End `batch` with its first `done` requests processed."""
        output, errors = bytearray(), bytearray()
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
            prompt, completion = 20 + index % 5, 7 + index % 3
            batch.prompt_tokens += prompt
            batch.completion_tokens += completion
            batch.completed += 1
            body: dict[str, Any] = {
                "id": f"chatcmpl-{index}",
                "object": "chat.completion",
                "created": int(batch.created_at),
                "model": line["body"]["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"answer {custom_id}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                    "prompt_tokens_details": {"cached_tokens": 0},
                },
            }
            output += orjson.dumps(
                self.output_line(
                    index, custom_id, {"status_code": 200, "request_id": f"req_{index}", "body": body}, None
                ),
                option=orjson.OPT_APPEND_NEWLINE,
            )
        self.store_results(batch, bytes(output), bytes(errors))
        batch.status = outcome

    def store_results(self, batch: FakeBatch, output: bytes, errors: bytes) -> None:
        if output:
            batch.output_file_id = self.store("batch_output", output)
        if errors:
            batch.error_file_id = self.store("batch_output", errors)

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
        if batch.lines and batch.lines[0]["body"].get("model") == "fake-expire":
            self._run(batch, half, "expired")
        else:
            self._run(batch, len(batch.lines), "completed")

    def store(self, purpose: str, content: bytes) -> str:
        file_id = self.next_id("file-fake")
        self.files[file_id] = (purpose, content)
        return file_id

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
        return _error(401, "Incorrect API key provided", code="invalid_api_key")
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


async def _create_file(request: Request) -> JSONResponse:
    fake = _fake(request)
    async with request.form() as form:
        upload = form["file"]
        assert not isinstance(upload, str)
        content = await upload.read()
        purpose = str(form["purpose"])
    with fake.lock:
        file_id = fake.store(purpose, content)
    return JSONResponse(
        {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": "input.jsonl",
            "purpose": purpose,
            "status": "processed",
        }
    )


def _file_content(file_id: str, request: Request) -> Response:
    fake = _fake(request)
    if file_id not in fake.files:
        return _error(404, "No such File", param="file_id")
    return Response(fake.files[file_id][1], media_type="application/octet-stream")


async def _create_batch(request: Request) -> JSONResponse:
    fake = _fake(request)
    body = await request.json()
    with fake.lock:
        if body["input_file_id"] not in fake.files:
            return _error(400, "No such File", param="input_file_id")
        lines = [orjson.loads(raw) for raw in fake.files[body["input_file_id"]][1].splitlines() if raw.strip()]
        problem = fake.check_lines(lines)
        if problem is not None:
            return _error(400, problem, param="input_file_id", code="invalid_request")
        if lines and lines[0]["body"].get("model") == "fake-refuse":
            return _error(400, "The model fake-refuse does not support batches.", param="model", code="model_not_found")
        batch = FakeBatch(
            id=fake.next_id("batch_fake"),
            input_file_id=body["input_file_id"],
            endpoint=body["endpoint"],
            metadata=body.get("metadata") or {},
            created_at=time.monotonic(),
            lines=lines,
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
