"""A fake Cloud Storage JSON API and Vertex AI batchPredictionJobs API (reference/provider-apis.md 5.1), over HTTP.

Objects live in memory (upload, list, get, delete). A job reads its input object when created and refuses
(400 INVALID_ARGUMENT, naming the line) any line that is not `{"request": {...}}` with non-empty contents,
roles `user` and `model` only and non-empty parts, so a translation bug fails loudly. It also refuses what
Vertex's proto parser refuses (reference/provider-apis.md section 7): JSON-Schema-only constructs (`$ref`, `$defs`, any
`$` keyword, `additionalProperties`, a list-valued `type`) in the `Schema` fields `responseSchema` and
`parameters`, with Vertex's "Invalid JSON payload received. Unknown name ..." message, while
`responseJsonSchema` (which needs `responseMimeType: application/json`) and `parametersJsonSchema` take
any JSON Schema; and labels that break Google's label rules. Like Google, it counts the distinct values
each label key has had across every job it has seen, and once a key has had more than 1,000 it drops that
key from the requests its predictions echo.

Jobs run by the clock: JOB_STATE_PENDING, then RUNNING, then SUCCEEDED with `{prefix}/prediction-model-<ts>/
predictions.jsonl` holding one line per input line in shuffled order, each echoing its request. A request
whose text contains "fail" gets a non-empty `status`; a request that declares functions with function
calling mode ANY is answered with a call to the first function it allows; a job of model `gemini-expire`
ends EXPIRED with the first half of its lines written; a cancelled job is CANCELLING once, then CANCELLED
with half written.
Usage is deterministic per line and what each job billed is recorded, so tests compute the expected
cost. `corrupt` breaks the succeeded predictions of chosen input lines and `garbage` mixes lines naming
no request into the predictions (tests/fakes/defects.py). `Faults` makes a share of calls answer 500,
429 with Retry-After, or hang past the client's timeout; `fail_next` fails the next calls to a path with
503; `lose_next_create` makes the next create make its job and lose the answer.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from tests.fakes.defects import Defect, LineFormat, result_rows
from tests.fakes.faults import Faults

TOKEN = "ya29.fake-vertex-token"
EXPIRING_MODEL = "gemini-expire"
_MODEL = re.compile(r"^publishers/google/models/(?P<model>[\w.-]+)$")
# `display_name="x"`, or `display_name:"x*"` (the `:` wildcard: names that start with x)
_DISPLAY_NAME_FILTER = re.compile(r'^display_name\s*(?:=\s*"(?P<name>[^"*]*)"|:\s*"(?P<prefix>[^"*]*)\*")$')
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"}
_STATUS |= {500: "INTERNAL", 503: "UNAVAILABLE", 412: "FAILED_PRECONDITION"}
# Google keeps this many distinct values per label key over a billing account's life, then may drop the key
LABEL_VALUES_LIMIT = 1000
_LABELS_PER_REQUEST = 64
_LABEL_TEXT_MAX = 63
# where a prediction keeps what a defect breaks: its labels name its request, its status and response say
# whether it succeeded, and its status is free text, not a code
PREDICTION_LINE = LineFormat(
    names=("request", "labels"),
    markers=(("status",), ("response",)),
    status=None,
    body=("response",),
    usage=("response", "usageMetadata", "promptTokenCount"),
)


class Unit(StrEnum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Place(BaseModel):
    city: str
    country: str | None = None


class Forecast(BaseModel):
    """A model whose JSON schema, as Pydantic makes it, holds what Vertex's `Schema` refuses: `$defs` and
    `$ref`, `anyOf` with null for optional fields, enums and arrays."""

    place: Place
    unit: Unit
    highs: list[float]
    note: str | None = None
    alternatives: list[Place] = []


def rfc3339(at: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if at is None else at, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class BilledUsage:
    """What the fake bills one request, by its line index."""

    prompt: int
    cached: int
    candidates: int
    thoughts: int

    @classmethod
    def of(cls, index: int) -> BilledUsage:
        return cls(
            prompt=12 + index % 5,
            cached=4 if index % 3 == 0 else 0,
            candidates=6 + index % 4,
            thoughts=3 if index % 2 == 0 else 0,
        )


@dataclass
class FakeJob:
    name: str
    display_name: str
    model: str
    body: dict[str, Any]
    output_prefix: str
    lines: list[dict[str, Any]]
    created: float = field(default_factory=time.monotonic)
    create_time: str = field(default_factory=rfc3339)
    state: str = "JOB_STATE_PENDING"
    end_time: str | None = None
    output_directory: str | None = None
    cancel_requested: bool = False
    cancelling_seen: bool = False
    # what it billed, over the requests that succeeded
    prompt_tokens: int = 0
    cached_tokens: int = 0
    candidates_tokens: int = 0
    thoughts_tokens: int = 0
    succeeded: int = 0
    failed: int = 0
    written: list[int] = field(default_factory=list)

    @property
    def output_tokens(self) -> int:
        return self.candidates_tokens + self.thoughts_tokens

    @property
    def ended(self) -> bool:
        return self.state in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")


def request_text(request: dict[str, Any]) -> str:
    return " ".join(
        part["text"]
        for content in request.get("contents") or ()
        for part in content.get("parts") or ()
        if isinstance(part.get("text"), str)
    )


def function_to_call(request: dict[str, Any]) -> str | None:
    """The function a request forces a call to (function calling mode ANY), or None."""
    config = (request.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if config.get("mode") != "ANY":
        return None
    declared = [d["name"] for tool in request.get("tools") or () for d in tool.get("functionDeclarations") or ()]
    allowed = config.get("allowedFunctionNames") or declared
    return str(allowed[0]) if allowed else None


def _schema_problem(schema: Any, where: str) -> str | None:
    """Why Vertex's proto parser refuses `schema` as a `Schema` message, or None."""
    if not isinstance(schema, dict):
        return None
    for key, value in schema.items():
        if key.startswith("$") or key == "additionalProperties":
            return f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': Cannot find field."
        if key == "type" and isinstance(value, list):
            return (
                f"Invalid JSON payload received. Unknown name \"type\" at '{where}': "
                "Proto field is not repeating, cannot start list."
            )
    nested: list[tuple[Any, str]] = [(schema.get("items"), f"{where}.items")]
    properties = schema.get("properties")
    if isinstance(properties, dict):
        nested += [(value, f"{where}.properties[{name!r}].value") for name, value in properties.items()]
    any_of = schema.get("anyOf")
    if isinstance(any_of, list):
        nested += [(value, f"{where}.any_of[{n}]") for n, value in enumerate(any_of)]
    return next((problem for value, path in nested if (problem := _schema_problem(value, path))), None)


def _generation_config_problem(config: Any) -> str | None:
    if not isinstance(config, dict):
        return None
    if "responseJsonSchema" in config:
        if "responseSchema" in config:
            return "responseSchema and responseJsonSchema cannot both be set"
        if config.get("responseMimeType") != "application/json":
            return "responseJsonSchema requires responseMimeType application/json"
    return _schema_problem(config.get("responseSchema"), "generation_config.response_schema")


def _tools_problem(tools: Any) -> str | None:
    for t, tool in enumerate(tools if isinstance(tools, list) else ()):
        declarations = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        for d, declaration in enumerate(declarations if isinstance(declarations, list) else ()):
            if not isinstance(declaration, dict):
                continue
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                return f"tools[{t}].function_declarations[{d}]: parameters and parametersJsonSchema are exclusive"
            where = f"tools[{t}].function_declarations[{d}].parameters"
            if problem := _schema_problem(declaration.get("parameters"), where):
                return problem
    return None


def _label_text_ok(text: str, *, key: bool) -> bool:
    """Google's label syntax: lowercase letters (international ones too), digits, `_` and `-`, at most 63
    characters; a key is not empty and starts with a lowercase letter."""
    if len(text) > _LABEL_TEXT_MAX or (key and not (text and text[0].isalpha() and not text[0].isupper())):
        return False
    return all(c in "_-" or (c.isalnum() and not c.isupper()) for c in text)


def _labels_problem(labels: Any) -> str | None:
    if labels is None:
        return None
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        return "labels must map strings to strings"
    if len(labels) > _LABELS_PER_REQUEST:
        return f"a request can have at most {_LABELS_PER_REQUEST} labels, not {len(labels)}"
    for key, value in labels.items():
        if not _label_text_ok(key, key=True):
            return f"invalid label key {key!r}"
        if not _label_text_ok(value, key=False):
            return f"invalid value {value!r} of label {key!r}"
    return None


def line_problem(line: Any) -> str | None:
    """Why Vertex would refuse this input line, or None."""
    request = line.get("request") if isinstance(line, dict) else None
    if not isinstance(request, dict) or set(line) != {"request"}:
        return 'each line must be {"request": GenerateContentRequest}'
    contents = request.get("contents")
    if not isinstance(contents, list) or not contents:
        return "contents must be a non-empty list"
    for content in contents:
        if not isinstance(content, dict) or content.get("role") not in ("user", "model"):
            return "every content needs role user or model"
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) and p for p in parts):
            return "every content needs non-empty parts"
    return (
        _generation_config_problem(request.get("generationConfig"))
        or _tools_problem(request.get("tools"))
        or _labels_problem(request.get("labels"))
    )


class FakeVertex:
    def __init__(self, *, processing_seconds: float = 0.3, faults: Faults | None = None, seed: int = 7) -> None:
        self.processing_seconds = processing_seconds
        self.model_seconds: dict[str, float] = {}  # processing time of particular models
        self.faults = faults or Faults()
        self.objects: dict[str, bytes] = {}  # "bucket/name" -> content
        self.sessions: dict[str, tuple[str, str, bytearray]] = {}  # resumable uploads: id -> bucket, name, bytes
        self.jobs: dict[str, FakeJob] = {}
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.lose_next_create: Literal["error", "hang"] | None = None
        # "METHOD /path-prefix" -> how many of the next such calls answer 503
        self.fail_next: Counter[str] = Counter()
        self.page_size = 2  # small, so clients must follow nextPageToken
        self.shard_lines: int | None = None  # write predictions in files of this many lines
        self.label_values: dict[str, set[str]] = {}  # label key -> every value the jobs' lines gave it
        self.corrupt: dict[int, Defect] = {}  # input line index -> how its succeeded prediction is broken
        self.garbage = False  # mix lines naming no request into the predictions
        self._rng = random.Random(seed)
        self._seq = 1_000_000
        self.app = self._build()

    def jobs_named(self, display_name: str) -> list[FakeJob]:
        return [job for job in self.jobs.values() if job.display_name == display_name]

    # --- job life ------------------------------------------------------------------------------

    def see_labels(self, lines: list[dict[str, Any]]) -> None:
        for line in lines:
            for key, value in (line["request"].get("labels") or {}).items():
                self.label_values.setdefault(key, set()).add(value)

    def _echoed(self, request: dict[str, Any]) -> dict[str, Any]:
        """`request` as a prediction echoes it: without the label keys that have had too many values."""
        labels = request.get("labels")
        if labels is None:
            return request
        kept = {k: v for k, v in labels.items() if len(self.label_values.get(k, ())) <= LABEL_VALUES_LIMIT}
        return {**request, "labels": kept}

    def _prediction(self, job: FakeJob, index: int) -> dict[str, Any]:
        request = job.lines[index]["request"]
        echoed = self._echoed(request)
        processed_time = rfc3339()
        if "fail" in request_text(request):
            job.failed += 1
            error = {
                "error": {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT"}
            }
            return {
                "status": f"Bad Request: {orjson.dumps(error).decode()}",
                "processed_time": processed_time,
                "request": echoed,
            }
        usage = BilledUsage.of(index)
        job.succeeded += 1
        job.prompt_tokens += usage.prompt
        job.cached_tokens += usage.cached
        job.candidates_tokens += usage.candidates
        job.thoughts_tokens += usage.thoughts
        metadata: dict[str, Any] = {
            "promptTokenCount": usage.prompt,
            "candidatesTokenCount": usage.candidates,
            "totalTokenCount": usage.prompt + usage.candidates + usage.thoughts,
            "trafficType": "ON_DEMAND",
        }
        if usage.cached:
            metadata["cachedContentTokenCount"] = usage.cached
        if usage.thoughts:
            metadata["thoughtsTokenCount"] = usage.thoughts
        function = function_to_call(request)
        answer = (
            {"functionCall": {"name": function, "args": {}}}
            if function
            else {"text": f"answer to {request_text(request)}"}
        )
        return {
            "status": "",
            "processed_time": processed_time,
            "request": echoed,
            "response": {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [answer]},
                        "finishReason": "STOP",
                        "avgLogprobs": -0.25,
                    }
                ],
                "usageMetadata": metadata,
                "modelVersion": job.model,
                "createTime": processed_time,
                "responseId": f"resp-{job.name.rsplit('/', 1)[-1]}-{index}",
            },
        }

    def _end(self, job: FakeJob, done: int, state: str) -> None:
        """End `job` with its first `done` lines processed, written in shuffled order."""
        indexes = list(range(done))
        self._rng.shuffle(indexes)
        predictions = [(i, self._prediction(job, i)) for i in indexes]
        lines = [(p, None if p["status"] else self.corrupt.get(i)) for i, p in predictions]
        rows = result_rows(lines, PREDICTION_LINE, garbage=self.garbage)
        job.written = indexes
        assert job.output_directory is not None
        shard = self.shard_lines or max(len(rows), 1)
        for number, start in enumerate(range(0, len(rows), shard)):
            name = "predictions.jsonl" if number == 0 else f"predictions_{number:05d}.jsonl"
            self.objects[f"{job.output_directory}/{name}".removeprefix("gs://")] = b"".join(rows[start : start + shard])
        job.state = state
        job.end_time = rfc3339()

    def advance(self, job: FakeJob) -> None:
        if job.ended:
            return
        if job.output_directory is None:
            stamp = rfc3339()
            job.output_directory = f"{job.output_prefix.rstrip('/')}/prediction-model-{stamp}"
        half = len(job.lines) // 2
        if job.cancel_requested:
            if not job.cancelling_seen:
                job.cancelling_seen = True
                job.state = "JOB_STATE_CANCELLING"
                return
            self._end(job, half, "JOB_STATE_CANCELLED")
            return
        elapsed = time.monotonic() - job.created
        seconds = self.model_seconds.get(job.model, self.processing_seconds)
        if elapsed < seconds / 2:
            job.state = "JOB_STATE_PENDING"
        elif elapsed < seconds:
            job.state = "JOB_STATE_RUNNING"
        elif job.model == EXPIRING_MODEL:
            self._end(job, half, "JOB_STATE_EXPIRED")
        else:
            self._end(job, len(job.lines), "JOB_STATE_SUCCEEDED")

    def job_json(self, job: FakeJob) -> dict[str, Any]:
        body: dict[str, Any] = {
            **job.body,
            "name": job.name,
            "state": job.state,
            "createTime": job.create_time,
            "updateTime": rfc3339(),
        }
        if job.state != "JOB_STATE_PENDING":
            body["startTime"] = job.create_time
            body["completionStats"] = {
                "successfulCount": str(job.succeeded),
                "failedCount": str(job.failed),
                "incompleteCount": str(len(job.lines) - job.succeeded - job.failed),
            }
            body["outputInfo"] = {"gcsOutputDirectory": job.output_directory}
        if job.end_time:
            body["endTime"] = job.end_time
        return body

    # --- HTTP ----------------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()
        app.state.fake = self
        jobs = "/v1/projects/{project}/locations/{location}/batchPredictionJobs"
        app.post("/upload/storage/v1/b/{bucket}/o")(_upload_object)
        app.put("/upload/storage/v1/b/{bucket}/o")(_upload_chunk)
        app.get("/storage/v1/b/{bucket}/o")(_list_objects)
        app.get("/storage/v1/b/{bucket}/o/{name:path}")(_get_object)
        app.delete("/storage/v1/b/{bucket}/o/{name:path}")(_delete_object)
        app.post(jobs)(_create_job)
        app.get(jobs)(_list_jobs)
        app.post(jobs + "/{job_id}:cancel")(_cancel_job)
        app.get(jobs + "/{job_id}")(_get_job)
        return app


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}}
    return JSONResponse(body, status_code=status, headers=headers)


def _fake(request: Request) -> FakeVertex:
    fake: FakeVertex = request.app.state.fake
    return fake


async def _admit(request: Request) -> Response | None:
    """The bearer-token check and the injected faults; None lets the call through (maybe late)."""
    fake = _fake(request)
    fake.calls[f"{request.method} {request.url.path}"] += 1
    if request.headers.get("authorization") != f"Bearer {TOKEN}":
        return _error(401, "Request had invalid authentication credentials. Expected OAuth 2 access token.")
    for key in fake.fail_next:
        method, prefix = key.split(" ", 1)
        if fake.fail_next[key] > 0 and request.method == method and request.url.path.startswith(prefix):
            fake.fail_next[key] -= 1
            return _error(503, "The service is currently unavailable.")
    fault = fake.faults.draw()
    if fault == "error":
        fake.calls["fault:500"] += 1
        return _error(500, "Internal error encountered.")
    if fault == "rate_limit":
        fake.calls["fault:429"] += 1
        return _error(429, "Quota exceeded for aiplatform.googleapis.com.", headers={"retry-after": "1"})
    if fault == "hang":
        fake.calls["fault:hang"] += 1
        await asyncio.sleep(fake.faults.hang_seconds)
    return None


async def _upload_object(bucket: str, request: Request) -> Response:
    """A media upload stores the body; a resumable one opens a session that PUTs fill, chunk by chunk."""
    content = await request.body()  # read first: a hung call still stores what it was sent
    if (refused := await _admit(request)) is not None:
        return refused
    name = request.query_params.get("name")
    kind = request.query_params.get("uploadType")
    if kind not in ("media", "resumable") or not name:
        return _error(400, "uploadType (media or resumable) and name are required")
    fake = _fake(request)
    with fake.lock:
        if kind == "media":
            fake.objects[f"{bucket}/{name}"] = content
            return JSONResponse({"kind": "storage#object", "bucket": bucket, "name": name, "size": str(len(content))})
        session = f"session{len(fake.sessions) + 1}"
        fake.sessions[session] = (bucket, name, bytearray())
    location = f"{request.base_url}upload/storage/v1/b/{bucket}/o?uploadType=resumable&upload_id={session}"
    return Response(status_code=200, headers={"Location": location})


async def _upload_chunk(bucket: str, request: Request) -> Response:
    """One chunk of a resumable upload, placed by its Content-Range; 308 until the last one."""
    content = await request.body()
    if (refused := await _admit(request)) is not None:
        return refused
    fake = _fake(request)
    match = re.fullmatch(r"bytes (\*|(\d+)-(\d+))/(\*|\d+)", request.headers.get("content-range", ""))
    with fake.lock:
        session = fake.sessions.get(request.query_params.get("upload_id", ""))
        if session is None or match is None:
            return _error(400, "unknown upload session or bad Content-Range")
        _, name, received = session
        if match.group(2) is not None:
            start, end = int(match.group(2)), int(match.group(3))
            if start != len(received) or end - start + 1 != len(content):
                return _error(400, "chunk out of order")
            if match.group(4) == "*" and len(content) % (256 * 1024):
                return _error(400, "chunks before the last must be multiples of 256 KiB")
            received += content
        if match.group(4) == "*":
            return Response(status_code=308, headers={"Range": f"bytes=0-{len(received) - 1}"})
        fake.objects[f"{bucket}/{name}"] = bytes(received)
    return JSONResponse({"kind": "storage#object", "bucket": bucket, "name": name, "size": str(len(received))})


async def _list_objects(bucket: str, request: Request) -> Response:
    if (refused := await _admit(request)) is not None:
        return refused
    fake = _fake(request)
    prefix = request.query_params.get("prefix", "")
    start = int(request.query_params.get("pageToken") or 0)
    size = min(int(request.query_params.get("maxResults") or fake.page_size), fake.page_size)
    with fake.lock:
        names = sorted(k.removeprefix(f"{bucket}/") for k in fake.objects if k.startswith(f"{bucket}/{prefix}"))
        items = [
            {"kind": "storage#object", "bucket": bucket, "name": n, "size": str(len(fake.objects[f"{bucket}/{n}"]))}
            for n in names[start : start + size]
        ]
    body: dict[str, Any] = {"kind": "storage#objects", "items": items}
    if start + size < len(names):
        body["nextPageToken"] = str(start + size)
    return JSONResponse(body)


async def _get_object(bucket: str, name: str, request: Request) -> Response:
    if (refused := await _admit(request)) is not None:
        return refused
    fake = _fake(request)
    content = fake.objects.get(f"{bucket}/{name}")
    if content is None:
        return _error(404, f"No such object: {bucket}/{name}")
    if request.query_params.get("alt") != "media":
        return JSONResponse({"kind": "storage#object", "bucket": bucket, "name": name, "size": str(len(content))})
    return Response(content, media_type="application/octet-stream")


async def _delete_object(bucket: str, name: str, request: Request) -> Response:
    """objects.delete: 204 with no body, 404 for an object that is not there."""
    if (refused := await _admit(request)) is not None:
        return refused
    fake = _fake(request)
    with fake.lock:
        if fake.objects.pop(f"{bucket}/{name}", None) is None:
            return _error(404, f"No such object: {bucket}/{name}")
    return Response(status_code=204)


def _job_lines(fake: FakeVertex, body: dict[str, Any]) -> list[dict[str, Any]] | str:
    """The input lines a create body points at, or why it is refused."""
    source = body.get("inputConfig") or {}
    uris = (source.get("gcsSource") or {}).get("uris") or []
    if source.get("instancesFormat") != "jsonl" or len(uris) != 1:
        return "inputConfig must name one jsonl gcsSource uri"
    content = fake.objects.get(str(uris[0]).removeprefix("gs://"))
    if content is None:
        return f"Input file {uris[0]} not found"
    lines: list[dict[str, Any]] = []
    for number, raw in enumerate(content.splitlines(), start=1):
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return f"line {number}: not JSON"
        problem = line_problem(line)
        if problem:
            return f"line {number}: {problem}"
        lines.append(line)
    return lines or "the input file is empty"


async def _create_job(project: str, location: str, request: Request) -> Response:
    if (refused := await _admit(request)) is not None:
        return refused
    fake = _fake(request)
    body = orjson.loads(await request.body())
    model = _MODEL.match(str(body.get("model")))
    destination = (body.get("outputConfig") or {}).get("gcsDestination") or {}
    prefix = destination.get("outputUriPrefix")
    if not model or not body.get("displayName") or not str(prefix).startswith("gs://"):
        return _error(400, "displayName, model publishers/google/models/* and a gcsDestination are required")
    if (body.get("outputConfig") or {}).get("predictionsFormat") != "jsonl":
        return _error(400, "predictionsFormat must be jsonl")
    with fake.lock:
        lines = _job_lines(fake, body)
        if isinstance(lines, str):
            return _error(400, lines)
        fake.see_labels(lines)
        fake._seq += 1
        job = FakeJob(
            name=f"projects/{project}/locations/{location}/batchPredictionJobs/{fake._seq}",
            display_name=body["displayName"],
            model=model["model"],
            body=body,
            output_prefix=str(prefix),
            lines=lines,
        )
        fake.jobs[job.name] = job
        answer = fake.job_json(job)
        lose, fake.lose_next_create = fake.lose_next_create, None
    if lose == "error":
        return _error(503, "The service is currently unavailable.")
    if lose == "hang":
        await asyncio.sleep(fake.faults.hang_seconds)
    return JSONResponse(answer)


async def _list_jobs(project: str, location: str, request: Request) -> Response:
    if (refused := await _admit(request)) is not None:
        return refused
    fake = _fake(request)
    wanted: str | None = None
    prefix = ""
    if request.query_params.get("filter"):
        match = _DISPLAY_NAME_FILTER.match(request.query_params["filter"])
        if not match:
            return _error(400, f"Unsupported filter {request.query_params['filter']!r}")
        wanted, prefix = match["name"], match["prefix"] or ""
    start = int(request.query_params.get("pageToken") or 0)
    size = min(int(request.query_params.get("pageSize") or fake.page_size), fake.page_size)
    parent = f"projects/{project}/locations/{location}/"
    with fake.lock:
        found = [
            job
            for job in sorted(fake.jobs.values(), key=lambda j: j.name, reverse=True)
            if job.name.startswith(parent)
            and (wanted is None or job.display_name == wanted)
            and job.display_name.startswith(prefix)
        ]
        for job in found[start : start + size]:
            fake.advance(job)
        body: dict[str, Any] = {"batchPredictionJobs": [fake.job_json(job) for job in found[start : start + size]]}
    if start + size < len(found):
        body["nextPageToken"] = str(start + size)
    return JSONResponse(body)


def _job(fake: FakeVertex, project: str, location: str, job_id: str) -> FakeJob | None:
    return fake.jobs.get(f"projects/{project}/locations/{location}/batchPredictionJobs/{job_id}")


async def _get_job(project: str, location: str, job_id: str, request: Request) -> Response:
    if (refused := await _admit(request)) is not None:
        return refused
    fake = _fake(request)
    with fake.lock:
        job = _job(fake, project, location, job_id)
        if job is None:
            return _error(404, f"BatchPredictionJob {job_id} not found")
        fake.advance(job)
        return JSONResponse(fake.job_json(job))


async def _cancel_job(project: str, location: str, job_id: str, request: Request) -> Response:
    if (refused := await _admit(request)) is not None:
        return refused
    fake = _fake(request)
    with fake.lock:
        job = _job(fake, project, location, job_id)
        if job is None:
            return _error(404, f"BatchPredictionJob {job_id} not found")
        if job.ended:
            return _error(400, f"BatchPredictionJob {job_id} is in state {job.state} and cannot be cancelled")
        job.cancel_requested = True
    return JSONResponse({})
