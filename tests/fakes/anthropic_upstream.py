"""A fake Anthropic Message Batches API (reference/provider-apis.md section 3), served over real HTTP.

It checks `x-api-key` and `anthropic-version`. Like Anthropic (reference/provider-apis.md section 7), a
create checks only the envelope: at least one request, each a custom_id matching `^[a-zA-Z0-9_-]{1,64}$`,
unique in the batch, and an object of params; anything else is a 400. Each request's params are checked
only when the batch processes it, as the Messages API would (unknown params, a missing `max_tokens`,
`temperature` outside 0-1 or together with `top_p`, stop sequences that are only whitespace, roles that
do not alternate, ...): a request they fail comes back `errored` with an `invalid_request_error` worded as
Anthropic words it, while the rest of the batch succeeds. It runs each batch by the clock: `in_progress`
(only `processing` counted) for `processing_seconds`, or its model's entry in `model_seconds`, then
`ended` with a `results_url` on itself.

A request whose custom_id contains "fail" comes back `errored` too; a batch of model `claude-expire` ends
with its second half `expired`; a cancelled batch is `canceling` once, then ends with its second half
`canceled`. Usage per request is deterministic and what each batch billed is recorded, so tests
compute the expected cost on their own. `corrupt` breaks chosen requests' succeeded result lines and
`garbage` mixes lines naming no request into the results (tests/fakes/defects.py).

`Faults` makes a share of calls answer 500, 529 overloaded, 429 with retry-after, or hang past the
client's timeout; `slow_create_seconds` makes the next create answer only after that long, once the
batch exists, so the client's answer is lost.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.fakes.defects import Defect, LineFormat, result_rows
from tests.fakes.faults import Faults

API_KEY = "sk-ant-fake-upstream"
ANTHROPIC_VERSION = "2023-06-01"
EXPIRING_MODEL = "claude-expire"

_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_PARAMS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "service_tier",
    }
)
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# where a result line keeps what a defect breaks; its `type` stands for a status
RESULT_LINE = LineFormat(
    names=("custom_id",),
    markers=(("result", "type"),),
    status=("result", "type"),
    body=("result", "message"),
    usage=("result", "message", "usage", "input_tokens"),
)


class Invalid(Exception):
    """A create body, or a request's params, that Anthropic would refuse; the text is its message."""


@dataclass
class Billed:
    """Token usage the fake charged for one batch's succeeded requests."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    succeeded: int = 0


@dataclass
class FakeMessageBatch:
    id: str
    seq: int
    created_at: datetime
    started: float
    requests: list[dict[str, Any]]
    cancel_initiated_at: datetime | None = None
    canceling_seen: bool = False
    ended_at: datetime | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    billed: Billed = field(default_factory=Billed)

    @property
    def custom_ids(self) -> list[str]:
        return [r["custom_id"] for r in self.requests]


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def usage_for(index: int) -> dict[str, int]:
    """The usage the fake bills for the request at `index`: every kind of token, cache reads and writes too."""
    return {
        "input_tokens": 20 + index % 7,
        "output_tokens": 5 + index % 4,
        "cache_read_input_tokens": 100 if index % 2 == 0 else 0,
        "cache_creation_input_tokens": 40 if index % 3 == 0 else 0,
    }


class FakeAnthropic:
    def __init__(self, *, processing_seconds: float = 1.0, faults: Faults | None = None) -> None:
        self.processing_seconds = processing_seconds
        # per model (params.model of a batch's first request), instead of processing_seconds
        self.model_seconds: dict[str, float] = {}
        self.slow_create_seconds = 0.0
        self.faults = faults or Faults(seed=11)
        self.corrupt: dict[str, Defect] = {}  # custom_id (as sent) -> how its succeeded result line is broken
        self.garbage = False  # mix lines naming no request into the results
        self.batches: dict[str, FakeMessageBatch] = {}
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._seq = 0
        self.app = self._build()

    def batch_with(self, custom_id: str) -> FakeMessageBatch:
        """The one batch that holds a request with `custom_id` (as sent)."""
        (found,) = [b for b in self.batches.values() if custom_id in b.custom_ids]
        return found

    # --- batch life ----------------------------------------------------------------------------

    def _message(self, batch: FakeMessageBatch, index: int, request: dict[str, Any]) -> dict[str, Any]:
        params = request["params"]
        usage = usage_for(index)
        choice = params.get("tool_choice") or {}
        if params.get("tools") and choice.get("type") in ("tool", "any"):
            name = choice.get("name") or params["tools"][0]["name"]
            tool_input = {"custom_id": request["custom_id"]}
            content: list[dict[str, Any]] = [
                {"type": "tool_use", "id": f"toolu_{batch.seq:04d}{index:06d}", "name": name, "input": tool_input}
            ]
            stop_reason = "tool_use"
        else:
            content = [{"type": "text", "text": f"answer {request['custom_id']}"}]
            stop_reason = "max_tokens" if params["max_tokens"] <= usage["output_tokens"] else "end_turn"
        cache_write = usage["cache_creation_input_tokens"]
        return {
            "id": f"msg_{batch.seq:04d}{index:06d}",
            "type": "message",
            "role": "assistant",
            "model": params["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                **usage,
                "cache_creation": {"ephemeral_5m_input_tokens": cache_write, "ephemeral_1h_input_tokens": 0},
                "service_tier": "batch",
            },
        }

    def _process(self, batch: FakeMessageBatch, index: int, request: dict[str, Any]) -> dict[str, Any]:
        """The result of running one request: its params are checked only now, as Anthropic does."""
        custom_id = request["custom_id"]
        problem = _params_problem(request["params"])
        if problem is None and "fail" in custom_id:
            problem = f"fake: request {custom_id} is invalid"
        if problem is not None:
            error = {"type": "invalid_request_error", "message": problem}
            request_id = f"req_fake{batch.seq:04d}{index:06d}"
            return {"type": "errored", "error": {"type": "error", "error": error, "request_id": request_id}}
        message = self._message(batch, index, request)
        usage = message["usage"]
        billed = batch.billed
        billed.input_tokens += usage["input_tokens"]
        billed.output_tokens += usage["output_tokens"]
        billed.cache_read_input_tokens += usage["cache_read_input_tokens"]
        billed.cache_creation_input_tokens += usage["cache_creation_input_tokens"]
        billed.succeeded += 1
        return {"type": "succeeded", "message": message}

    def _end(self, batch: FakeMessageBatch, done: int, unfinished: str) -> None:
        """End `batch` with its first `done` requests processed and the rest `unfinished`."""
        for index, request in enumerate(batch.requests):
            result = self._process(batch, index, request) if index < done else {"type": unfinished}
            batch.results.append({"custom_id": request["custom_id"], "result": result})
        random.Random(batch.seq).shuffle(batch.results)  # Anthropic's results come in no particular order
        batch.ended_at = datetime.now(UTC)

    def advance(self, batch: FakeMessageBatch) -> None:
        if batch.ended_at is not None:
            return
        half = len(batch.requests) // 2
        if batch.cancel_initiated_at is not None:
            if not batch.canceling_seen:
                batch.canceling_seen = True
                return
            self._end(batch, half, "canceled")
            return
        model = batch.requests[0]["params"].get("model")
        if time.monotonic() - batch.started < self.model_seconds.get(model, self.processing_seconds):
            return
        if model == EXPIRING_MODEL:
            self._end(batch, half, "expired")
        else:
            self._end(batch, len(batch.requests), "expired")

    def results_content(self, batch: FakeMessageBatch) -> bytes:
        """The results JSONL of an ended batch, broken as `corrupt` and `garbage` say."""
        lines = [
            (line, self.corrupt.get(line["custom_id"]) if line["result"]["type"] == "succeeded" else None)
            for line in batch.results
        ]
        return b"".join(result_rows(lines, RESULT_LINE, garbage=self.garbage))

    def batch_json(self, batch: FakeMessageBatch, base_url: str) -> dict[str, Any]:
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if batch.ended_at is None:
            counts["processing"] = len(batch.requests)
        else:
            counts.update(Counter(r["result"]["type"] for r in batch.results))
        if batch.ended_at is not None:
            status = "ended"
        elif batch.cancel_initiated_at is not None:
            status = "canceling"
        else:
            status = "in_progress"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": rfc3339(batch.ended_at) if batch.ended_at else None,
            "created_at": rfc3339(batch.created_at),
            "expires_at": rfc3339(batch.created_at + timedelta(hours=24)),
            "cancel_initiated_at": rfc3339(batch.cancel_initiated_at) if batch.cancel_initiated_at else None,
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if batch.ended_at else None,
        }

    def create(self, requests: list[dict[str, Any]]) -> FakeMessageBatch:
        self._seq += 1
        batch = FakeMessageBatch(
            id=f"msgbatch_fake{self._seq:06d}",
            seq=self._seq,
            created_at=datetime.now(UTC),
            started=time.monotonic(),
            requests=requests,
        )
        self.batches[batch.id] = batch
        return batch

    # --- HTTP ----------------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()
        app.state.fake = self
        app.middleware("http")(_faults_and_auth)
        app.post("/v1/messages/batches")(_create_batch)
        app.get("/v1/messages/batches")(_list_batches)
        app.get("/v1/messages/batches/{batch_id}")(_retrieve_batch)
        app.post("/v1/messages/batches/{batch_id}/cancel")(_cancel_batch)
        app.get("/v1/messages/batches/{batch_id}/results")(_batch_results)
        app.delete("/v1/messages/batches/{batch_id}")(_delete_batch)
        return app


# --- params checks, as the Messages API would make them ------------------------------------------


def _params_problem(params: dict[str, Any]) -> str | None:
    """Anthropic's message for the first thing the Messages API would refuse in `params`, or None."""
    try:
        _check_params(params)
    except Invalid as exc:
        return str(exc)
    return None


def _check_params(params: dict[str, Any]) -> None:
    """Raise Invalid naming the first thing the Messages API would refuse in `params`."""
    extra = sorted(set(params) - _PARAMS)
    if extra:
        raise Invalid(f"{extra[0]}: Extra inputs are not permitted")
    if not isinstance(params.get("model"), str) or not params["model"]:
        raise Invalid("model: Field required")
    if "max_tokens" not in params:
        raise Invalid("max_tokens: Field required")
    max_tokens = params["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise Invalid("max_tokens: Input should be an integer greater than or equal to 1")
    system = params.get("system")
    if system is not None and not isinstance(system, str) and not _all_text_blocks(system):
        raise Invalid("system: Input should be a valid string or a list of text blocks")
    tool_names = _check_tools(params.get("tools"))
    _check_tool_choice(params.get("tool_choice"), tool_names)
    _check_stop_sequences(params.get("stop_sequences"))
    metadata = params.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or set(metadata) - {"user_id"}):
        raise Invalid("metadata: Extra inputs are not permitted")
    _check_sampling(params)
    _check_messages(params.get("messages"))


def _check_stop_sequences(stops: Any) -> None:
    if stops is None:
        return
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise Invalid("stop_sequences: Input should be a valid list of strings")
    if any(not s.strip() for s in stops):
        raise Invalid("stop_sequences: each stop sequence must contain non-whitespace")


def _check_sampling(params: dict[str, Any]) -> None:
    for name in ("temperature", "top_p"):
        if name not in params:
            continue
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"{name}: Input should be a valid number")
        if not 0 <= value <= 1:
            raise Invalid(f"{name}: range: 0..1")
    if "temperature" in params and "top_p" in params:
        raise Invalid("`temperature` and `top_p` cannot both be specified for this model.")


def _all_text_blocks(blocks: Any) -> bool:
    return isinstance(blocks, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str) for b in blocks
    )


def _check_tools(tools: Any) -> set[str]:
    if tools is None:
        return set()
    if not isinstance(tools, list):
        raise Invalid("tools: Input should be a list")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools.{i}"
        if not isinstance(tool, dict) or set(tool) - {"name", "description", "input_schema", "cache_control"}:
            raise Invalid(f"{where}: a custom tool takes name, description and input_schema only")
        if not isinstance(tool.get("name"), str) or not _TOOL_NAME.fullmatch(tool["name"]):
            raise Invalid(f"{where}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise Invalid(f"{where}.input_schema: the schema's type must be 'object'")
        if tool["name"] in names:
            raise Invalid(f"{where}.name: tool names must be unique")
        names.add(tool["name"])
    return names


def _check_tool_choice(choice: Any, tool_names: set[str]) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "none", "tool"):
        raise Invalid("tool_choice: Input tag does not match any of 'auto', 'any', 'tool', 'none'")
    if set(choice) - {"type", "name", "disable_parallel_tool_use"}:
        raise Invalid("tool_choice: Extra inputs are not permitted")
    if choice["type"] == "tool" and choice.get("name") not in tool_names:
        raise Invalid("tool_choice.name: the named tool is not in tools")
    if choice["type"] != "none" and not tool_names:
        raise Invalid("tool_choice: tool_choice may only be specified while providing tools")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise Invalid("messages: at least one message is required")
    previous: dict[str, Any] | None = None
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise Invalid(f"{where}: a message takes role and content only")
        role = message["role"]
        if role not in ("user", "assistant"):
            raise Invalid(f"{where}.role: Input should be 'user' or 'assistant'")
        if previous is not None and previous["role"] == role:
            raise Invalid(f"{where}: roles must alternate between 'user' and 'assistant'")
        content = message["content"]
        if isinstance(content, str):
            if not content and role == "user":
                raise Invalid(f"{where}.content: text content must be non-empty")
        elif isinstance(content, list) and content:
            for j, block in enumerate(content):
                _check_block(block, role, previous, f"{where}.content.{j}")
        else:
            raise Invalid(f"{where}.content: Input should be a string or a non-empty list of content blocks")
        previous = message


def _tool_use_ids(message: dict[str, Any] | None) -> set[str]:
    if message is None or not isinstance(message["content"], list):
        return set()
    return {b["id"] for b in message["content"] if b.get("type") == "tool_use"}


def _check_block(block: Any, role: str, previous: dict[str, Any] | None, where: str) -> None:
    kind = block.get("type") if isinstance(block, dict) else None
    match kind:
        case "text":
            if not isinstance(block.get("text"), str) or not block["text"]:
                raise Invalid(f"{where}.text: text content blocks must be non-empty")
        case "image" | "document" if role == "user":
            _check_source(block.get("source"), kind, where)
        case "tool_use" if role == "assistant":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise Invalid(f"{where}: tool_use needs an id and a name")
            if not isinstance(block.get("input"), dict):
                raise Invalid(f"{where}.input: Input should be an object")
        case "tool_result" if role == "user":
            if block.get("tool_use_id") not in _tool_use_ids(previous):
                raise Invalid(f"{where}: tool_result block(s) must answer a tool_use block of the previous message")
            if not isinstance(block.get("content", ""), str) and not _all_text_blocks(block["content"]):
                raise Invalid(f"{where}.content: Input should be a string or a list of text blocks")
        case _:
            raise Invalid(f"{where}: a {kind!r} block is not allowed in a {role} message")


def _check_source(source: Any, kind: str, where: str) -> None:
    if not isinstance(source, dict):
        raise Invalid(f"{where}.source: Field required")
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return
    media = _IMAGE_TYPES if kind == "image" else {"application/pdf"}
    if source.get("type") != "base64" or source.get("media_type") not in media or not source.get("data"):
        raise Invalid(f"{where}.source: a base64 source needs media_type (one of {sorted(media)}) and data")


def check_create(body: Any) -> list[dict[str, Any]]:
    """The create body's requests, or Invalid naming the first problem with its envelope.

    The params inside are not checked here: Anthropic checks them as it processes each request.
    """
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not 1 <= len(requests) <= 100_000:
        raise Invalid("requests: between 1 and 100000 requests are required")
    seen: set[str] = set()
    for i, request in enumerate(requests):
        if not isinstance(request, dict) or set(request) != {"custom_id", "params"}:
            raise Invalid(f"requests.{i}: a request takes custom_id and params only")
        custom_id = request["custom_id"]
        if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
            raise Invalid(f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if custom_id in seen:
            raise Invalid(f"requests.{i}.custom_id: custom_id {custom_id!r} is not unique")
        seen.add(custom_id)
        if not isinstance(request["params"], dict):
            raise Invalid(f"requests.{i}.params: Input should be a valid dictionary")
    return requests


# --- routes ------------------------------------------------------------------------------------------


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_fake_{time.time_ns()}"}
    return JSONResponse(body, status_code=status, headers=headers)


def _fake(request: Request) -> FakeAnthropic:
    fake: FakeAnthropic = request.app.state.fake
    return fake


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _faults_and_auth(request: Request, call_next: Any) -> Response:
    fake = _fake(request)
    fake.calls[f"{request.method} {request.url.path}"] += 1
    if request.headers.get("x-api-key") != API_KEY:
        return _error(401, "authentication_error", "invalid x-api-key")
    if request.headers.get("anthropic-version") != ANTHROPIC_VERSION:
        return _error(400, "invalid_request_error", "anthropic-version: header is required")
    fault = fake.faults.draw()
    if fault == "error":
        fake.calls["fault:500"] += 1
        return _error(500, "api_error", "Internal server error")
    if fault == "overloaded":
        fake.calls["fault:529"] += 1
        return _error(529, "overloaded_error", "Overloaded")
    if fault == "rate_limit":
        fake.calls["fault:429"] += 1
        return _error(429, "rate_limit_error", "Number of requests has exceeded your rate limit", {"retry-after": "1"})
    if fault == "hang":
        fake.calls["fault:hang"] += 1
        await asyncio.sleep(fake.faults.hang_seconds)
    response: Response = await call_next(request)
    return response


async def _create_batch(request: Request) -> JSONResponse:
    fake = _fake(request)
    try:
        requests = check_create(orjson.loads(await request.body()))
    except orjson.JSONDecodeError:
        return _error(400, "invalid_request_error", "The request body is not valid JSON")
    except Invalid as exc:
        return _error(400, "invalid_request_error", str(exc))
    with fake.lock:
        batch = fake.create(requests)
        answer = fake.batch_json(batch, _base(request))
        delay, fake.slow_create_seconds = fake.slow_create_seconds, 0.0
    if delay:
        await asyncio.sleep(delay)
    return JSONResponse(answer)


def _list_batches(
    request: Request, limit: int = 20, after_id: str | None = None, before_id: str | None = None
) -> JSONResponse:
    fake = _fake(request)
    if not 1 <= limit <= 1000:
        return _error(400, "invalid_request_error", "limit: Input should be between 1 and 1000")
    with fake.lock:
        ordered = sorted(fake.batches.values(), key=lambda b: b.seq, reverse=True)
        ids = [b.id for b in ordered]
        if after_id is not None:
            ordered = ordered[ids.index(after_id) + 1 :] if after_id in ids else []
        if before_id is not None:
            ordered = ordered[: ids.index(before_id)] if before_id in ids else []
            page = ordered[-limit:]
            has_more = len(ordered) > limit
        else:
            page = ordered[:limit]
            has_more = len(ordered) > limit
        for batch in page:
            fake.advance(batch)
        data = [fake.batch_json(b, _base(request)) for b in page]
    return JSONResponse(
        {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


def _retrieve_batch(batch_id: str, request: Request) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        batch = fake.batches.get(batch_id)
        if batch is None:
            return _error(404, "not_found_error", f"No message batch with id {batch_id}")
        fake.advance(batch)
        return JSONResponse(fake.batch_json(batch, _base(request)))


def _cancel_batch(batch_id: str, request: Request) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        batch = fake.batches.get(batch_id)
        if batch is None:
            return _error(404, "not_found_error", f"No message batch with id {batch_id}")
        fake.advance(batch)
        if batch.ended_at is not None:
            return _error(400, "invalid_request_error", "This batch has already ended and cannot be canceled")
        if batch.cancel_initiated_at is None:
            batch.cancel_initiated_at = datetime.now(UTC)
        return JSONResponse(fake.batch_json(batch, _base(request)))


def _batch_results(batch_id: str, request: Request) -> Response:
    fake = _fake(request)
    with fake.lock:
        batch = fake.batches.get(batch_id)
        if batch is None:
            return _error(404, "not_found_error", f"No message batch with id {batch_id}")
        fake.advance(batch)
        if batch.ended_at is None:
            return _error(400, "invalid_request_error", "Results are not available until the batch has ended")
        content = fake.results_content(batch)
    return Response(content, media_type="application/binary")


def _delete_batch(batch_id: str, request: Request) -> JSONResponse:
    fake = _fake(request)
    with fake.lock:
        batch = fake.batches.get(batch_id)
        if batch is None:
            return _error(404, "not_found_error", f"No message batch with id {batch_id}")
        if batch.ended_at is None:
            return _error(400, "invalid_request_error", "A batch must end before it can be deleted; cancel it first")
        del fake.batches[batch_id]
    return JSONResponse({"id": batch_id, "type": "message_batch_deleted"})
