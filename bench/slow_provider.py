"""A fake OpenAI-compatible batch API for the benchmarks, in its own process: every call answers after a set
latency (100 ms unless told otherwise), and every call is counted by route.

Run as `python -m bench.slow_provider PORT [LATENCY_SECONDS]`. Each benchmark deployment has its own space,
`api_base: http://127.0.0.1:PORT/{space}/v1`, with the routes batchgw's openai adapter calls: files (upload,
retrieve, content, delete) and batches (create, retrieve, and list: newest first, `after` cursors, `limit`
at most 100, as OpenAI's).

Batches move only when told, so a benchmark decides how many change between two polls:
- `POST /{space}/seed?count=N&total=T&steps=S`: N running batches at once (the first is the oldest), each of
  T requests taking S steps; answers their ids, oldest first.
- `POST /{space}/advance?every=K`: moves one batch in K one step forward, a different one each call (so
  each batch moves on every K-th call). A batch's completed count grows with its steps; at its last step
  it is `completed`, with an output file of one chat completion per request (created batches: 30 steps).
- `GET /calls`: the calls answered so far, by route (the control routes above are neither delayed nor
  counted), and `uploaded_bytes`: the bytes of the files uploaded to it.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from bench.common import chat_output

CREATED_STEPS = 30  # a created batch completes on the 30th advance: a 30-minute batch polled every minute
MAX_PAGE = 100
OUTPUT_PAD = 400  # characters of answer per request: about 100 tokens
_CONTROL = ("/calls", "/seed", "/advance", "/health")


@dataclass
class Batch:
    id: str
    total: int
    steps: int
    created_at: int
    input_file_id: str = "file-seeded"
    model: str = "gpt-4o-mini"
    step: int = 0
    output_file_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        done = self.total * self.step // self.steps
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": "completed" if self.output_file_id else "in_progress",
            "output_file_id": self.output_file_id,
            "error_file_id": None,
            "created_at": self.created_at,
            "in_progress_at": self.created_at,
            "request_counts": {"total": self.total, "completed": done, "failed": 0},
            "metadata": self.metadata,
        }


@dataclass
class Space:
    """One deployment's batches (oldest first, as `order`) and files."""

    batches: dict[str, Batch] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    lines: dict[str, tuple[int, str]] = field(default_factory=dict)  # input file -> (requests, model)
    advances: int = 0

    def add(self, batch: Batch) -> None:
        self.batches[batch.id] = batch
        self.position[batch.id] = len(self.order)
        self.order.append(batch.id)


app = FastAPI()
calls: Counter[str] = Counter()
spaces: dict[str, Space] = {}
_ids = itertools.count(1)
latency_seconds = 0.1


def _space(name: str) -> Space:
    return spaces.setdefault(name, Space())


def _not_found(what: str) -> JSONResponse:
    return JSONResponse({"error": {"message": f"No such {what}", "type": "invalid_request_error"}}, status_code=404)


@app.middleware("http")
async def delayed(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    if not request.url.path.endswith(_CONTROL):
        await asyncio.sleep(latency_seconds)
    return await call_next(request)


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@app.get("/calls")
async def counted() -> dict[str, int]:
    return dict(calls)


@app.post("/{space}/seed")
async def seed(space: str, count: int, total: int, steps: int) -> list[str]:
    target, now = _space(space), int(time.time())
    made = [Batch(id=f"batch_{space}_{next(_ids):07d}", total=total, steps=steps, created_at=now) for _ in range(count)]
    for batch in made:
        target.add(batch)
    return [b.id for b in made]


@app.post("/{space}/advance")
async def advance(space: str, every: int = 1) -> dict[str, int]:
    target = _space(space)
    turn, moved = target.advances % every, 0
    target.advances += 1
    for index in range(turn, len(target.order), every):
        batch = target.batches[target.order[index]]
        if batch.output_file_id is None:
            batch.step += 1
            moved += 1
            if batch.step >= batch.steps:
                _finish(target, batch)
    return {"moved": moved}


def _finish(space: Space, batch: Batch) -> None:
    output = b"".join(chat_output(i, batch.model, OUTPUT_PAD) for i in range(batch.total))
    batch.output_file_id = f"file-{next(_ids):07d}"
    space.files[batch.output_file_id] = output


@app.post("/{space}/v1/files")
async def upload(space: str, request: Request) -> dict[str, Any]:
    calls["upload"] += 1
    async with request.form() as form:
        file = form["file"]
        assert isinstance(file, UploadFile)
        content = await file.read()
    calls["uploaded_bytes"] += len(content)
    lines = content.splitlines()
    model = str(orjson.loads(lines[0])["body"]["model"]) if lines else ""
    file_id = f"file-{next(_ids):07d}"
    _space(space).lines[file_id] = (len(lines), model)
    return {"id": file_id, "object": "file", "bytes": len(content), "purpose": "batch", "status": "processed"}


@app.get("/{space}/v1/files/{file_id}")
async def retrieve_file(space: str, file_id: str) -> Response:
    calls["file"] += 1
    target = _space(space)
    if file_id not in target.lines and file_id not in target.files:
        return _not_found("File")
    return JSONResponse({"id": file_id, "object": "file", "purpose": "batch", "status": "processed"})


@app.get("/{space}/v1/files/{file_id}/content")
async def content(space: str, file_id: str) -> Response:
    calls["content"] += 1
    data = _space(space).files.get(file_id)
    return _not_found("File") if data is None else Response(data, media_type="application/octet-stream")


@app.delete("/{space}/v1/files/{file_id}")
async def delete_file(space: str, file_id: str) -> Response:
    calls["delete"] += 1
    target = _space(space)
    if target.files.pop(file_id, None) is None and target.lines.pop(file_id, None) is None:
        return _not_found("File")
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


@app.post("/{space}/v1/batches")
async def create(space: str, request: Request) -> Response:
    calls["create"] += 1
    body = await request.json()
    target = _space(space)
    if body["input_file_id"] not in target.lines:
        return _not_found("File")
    total, model = target.lines[body["input_file_id"]]
    batch = Batch(
        id=f"batch_{space}_{next(_ids):07d}",
        total=total,
        steps=CREATED_STEPS,
        created_at=int(time.time()),
        input_file_id=body["input_file_id"],
        model=model,
        metadata=body.get("metadata") or {},
    )
    target.add(batch)
    return JSONResponse(batch.as_json() | {"status": "validating"})


@app.get("/{space}/v1/batches")
async def list_batches(space: str, limit: int = 20, after: str | None = None) -> Response:
    calls["list"] += 1
    target, limit = _space(space), min(limit, MAX_PAGE)
    # newest first: the page after `after` starts with the batch made just before it
    start = target.position.get(after, 0) if after else len(target.order)
    shown = [target.batches[target.order[i]].as_json() for i in range(start - 1, max(start - 1 - limit, -1), -1)]
    return JSONResponse({"object": "list", "data": shown, "has_more": start - limit > 0})


@app.get("/{space}/v1/batches/{batch_id}")
async def retrieve(space: str, batch_id: str) -> Response:
    calls["retrieve"] += 1
    batch = _space(space).batches.get(batch_id)
    return _not_found("Batch") if batch is None else JSONResponse(batch.as_json())


if __name__ == "__main__":
    if len(sys.argv) > 2:
        latency_seconds = float(sys.argv[2])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", backlog=4096)
