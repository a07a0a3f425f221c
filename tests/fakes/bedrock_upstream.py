"""A fake Bedrock batch inference control plane (reference/provider-apis.md sections 6 and 7), over real HTTP.

It speaks the REST-JSON protocol botocore's `bedrock` client sends (CreateModelInvocationJob,
GetModelInvocationJob, ListModelInvocationJobs, StopModelInvocationJob) and does the work in S3 as
Bedrock does: it reads the job's input JSONL (`{recordId, modelInput}`) from the input URI and writes
`{output}/{jobId}/{input name}.out` (`{recordId, modelInput, modelOutput}` or `{..., error}`) and
`manifest.json.out`, in no particular order. S3 is whatever boto3 reaches from the test (moto).

As on Bedrock:
- creating a job for fewer records than the model's minimum (`min_records`, a per-model quota) is
  refused with a ValidationException;
- each record is checked as its model checks it: a Converse record against the `bedrock-runtime` service
  model's Converse request, a Claude record as Bedrock's Messages schema (`anthropic_version`, no
  `model`, images only as base64 sources). A record that fails, or whose text contains FAIL_MARKER, is an
  error record (`{errorCode: 400, errorMessage}`) counted in `errorRecordCount`;
- a job whose records were all processed ends `Completed`, error records or not. Records whose text
  contains OUT_OF_TIME_MARKER are never processed in time: the job ends `PartiallyCompleted`, without them;
- a stopped job writes the first half of its records and ends `Stopped`;
- `clientRequestToken` makes creation idempotent.

Jobs run by the clock: Submitted, InProgress, then their end. Usage is deterministic (`tokens_for`) and
recorded per job. `corrupt` breaks the succeeded output records of chosen input records and `garbage`
mixes lines naming no record into the output (tests/fakes/defects.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote

import boto3
import botocore.session
import orjson
from botocore.validate import ParamValidator
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.fakes.defects import Defect, LineFormat, result_rows

REGION: Final = "us-east-1"
ACCOUNT: Final = "123456789012"
ANTHROPIC_VERSION: Final = "bedrock-2023-05-31"
FAIL_MARKER: Final = "fail"
OUT_OF_TIME_MARKER: Final = "out of time"
ENDED: Final = frozenset({"Completed", "PartiallyCompleted", "Stopped", "Failed", "Expired"})
_CONVERSE_REQUEST = botocore.session.get_session().get_service_model("bedrock-runtime").shape_for("ConverseRequest")


def _record_format(usage: str) -> LineFormat:
    """Where an output record keeps what a defect breaks, its usage's input count named `usage`."""
    return LineFormat(
        names=("recordId",),
        markers=(("modelOutput",), ("error",)),
        status=None,
        body=("modelOutput",),
        usage=("modelOutput", "usage", usage),
    )


CLAUDE_RECORD: Final = _record_format("input_tokens")
CONVERSE_RECORD: Final = _record_format("inputTokens")


def tokens_for(index: int) -> tuple[int, int]:
    """The input and output tokens the fake bills the record at `index` of a job's input."""
    return 30 + index % 7, 10 + index % 4


@dataclass
class FakeJob:
    arn: str
    name: str
    model_id: str
    role_arn: str
    input_uri: str
    output_uri: str
    invocation_type: str
    client_token: str | None
    submitted: float
    submitted_at: float
    status: str = "Submitted"
    ended_at: float | None = None
    stop_requested: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)
    output_keys: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    succeeded: int = 0
    failed: int = 0


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def _text_of(model_input: dict[str, Any]) -> str:
    parts = []
    for message in model_input.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return " ".join(parts)


def _claude_problem(model_input: dict[str, Any]) -> str | None:
    """What Bedrock's Messages schema refuses in a Claude record's body, in its words, or None."""
    if model_input.get("anthropic_version") != ANTHROPIC_VERSION:
        return "#: required key [anthropic_version] not found"
    if "model" in model_input:
        return "#: extraneous key [model] is not permitted"
    if not isinstance(model_input.get("max_tokens"), int):
        return "#: required key [max_tokens] not found"
    for message in model_input.get("messages", []):
        for block in message.get("content") if isinstance(message.get("content"), list) else []:
            if block.get("type") == "image" and block.get("source", {}).get("type") != "base64":
                return "#/messages/content/source: only base64 image sources are supported"
    return None


def _converse_problem(model_input: dict[str, Any], model_id: str) -> str | None:
    """What the Converse request shape refuses in a Converse record, in botocore's words, or None."""
    report = ParamValidator().validate({**model_input, "modelId": model_id}, _CONVERSE_REQUEST)
    return report.generate_report() if report.has_errors() else None


class FakeBedrock:
    def __init__(self, *, processing_seconds: float = 0.3, min_records: int = 100) -> None:
        self.processing_seconds = processing_seconds
        self.lose_create_answers = 0  # creates whose answer is lost after the job is made
        self.min_records = min_records
        self.jobs: dict[str, FakeJob] = {}
        self.tokens: dict[str, str] = {}
        self.calls: dict[str, int] = {}
        self.corrupt: dict[int, Defect] = {}  # input record index -> how its succeeded output record is broken
        self.garbage = False  # mix lines naming no record into the output
        self.lock = threading.Lock()
        self.app = self._build()

    # --- the work ------------------------------------------------------------------------------

    @staticmethod
    def read_records(input_uri: str) -> list[dict[str, Any]]:
        bucket, key = _split(input_uri)
        body = boto3.client("s3", region_name=REGION).get_object(Bucket=bucket, Key=key)["Body"].read()
        return [orjson.loads(line) for line in body.splitlines() if line.strip()]

    def _problem(self, job: FakeJob, model_input: dict[str, Any]) -> str | None:
        if FAIL_MARKER in _text_of(model_input):
            return "The model could not process this record."
        if job.invocation_type == "Converse":
            return _converse_problem(model_input, job.model_id)
        return _claude_problem(model_input)

    def _output(self, job: FakeJob, record: dict[str, Any], index: int) -> dict[str, Any]:
        model_input = record["modelInput"]
        problem = self._problem(job, model_input)
        if problem is not None:
            job.failed += 1
            return {**record, "error": {"errorCode": 400, "errorMessage": f"Malformed input request: {problem}"}}
        prompt, completion = tokens_for(index)
        job.input_tokens += prompt
        job.output_tokens += completion
        job.succeeded += 1
        if job.invocation_type == "Converse":
            output: dict[str, Any] = {
                "output": {"message": {"role": "assistant", "content": [{"text": f"converse answer {index}"}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": prompt, "outputTokens": completion, "totalTokens": prompt + completion},
                "metrics": {"latencyMs": 120},
            }
        else:
            output = {
                "id": f"msg_bdrk_{index:04d}",
                "type": "message",
                "role": "assistant",
                "model": job.model_id,
                "content": [{"type": "text", "text": f"claude answer {index}"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": completion},
            }
        return {**record, "modelOutput": output}

    def _finish(self, job: FakeJob, *, stopped: bool) -> None:
        records = self.read_records(job.input_uri)
        runnable = records[: len(records) // 2] if stopped else records
        processed = [(i, r) for i, r in enumerate(runnable) if OUT_OF_TIME_MARKER not in _text_of(r["modelInput"])]
        written = [(i, self._output(job, record, i)) for i, record in processed]
        out_bucket, out_prefix = _split(job.output_uri.rstrip("/"))
        job_id = job.arn.rsplit("/", 1)[-1]
        input_name = job.input_uri.rsplit("/", 1)[-1]
        s3 = boto3.client("s3", region_name=REGION)
        lines = [(line, None if "error" in line else self.corrupt.get(i)) for i, line in reversed(written)]
        form = CONVERSE_RECORD if job.invocation_type == "Converse" else CLAUDE_RECORD
        body = b"".join(result_rows(lines, form, garbage=self.garbage))
        manifest = {
            "totalRecordCount": len(records),
            "processedRecordCount": len(written),
            "successRecordCount": job.succeeded,
            "errorRecordCount": job.failed,
            "inputTokenCount": job.input_tokens,
            "outputTokenCount": job.output_tokens,
        }
        for name, content in ((f"{input_name}.out", body), ("manifest.json.out", orjson.dumps(manifest))):
            key = f"{out_prefix}/{job_id}/{name}"
            s3.put_object(Bucket=out_bucket, Key=key, Body=content)
            job.output_keys.append(key)
        job.records = records
        job.ended_at = time.time()
        if stopped:
            job.status = "Stopped"
        else:
            job.status = "Completed" if len(processed) == len(records) else "PartiallyCompleted"

    def advance(self, job: FakeJob) -> None:
        if job.status in ENDED:
            return
        if job.stop_requested:
            if job.status != "Stopping":
                job.status = "Stopping"
                return
            self._finish(job, stopped=True)
            return
        elapsed = time.monotonic() - job.submitted
        if elapsed < self.processing_seconds:
            job.status = "InProgress" if elapsed > self.processing_seconds / 3 else "Submitted"
            return
        self._finish(job, stopped=False)

    def job_json(self, job: FakeJob) -> dict[str, Any]:
        body: dict[str, Any] = {
            "jobArn": job.arn,
            "jobName": job.name,
            "modelId": job.model_id,
            "roleArn": job.role_arn,
            "status": job.status,
            "submitTime": _iso(job.submitted_at),
            "lastModifiedTime": _iso(job.ended_at or time.time()),
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": job.input_uri, "s3InputFormat": "JSONL"}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": job.output_uri}},
            "timeoutDurationInHours": 24,
            "jobExpirationTime": _iso(job.submitted_at + 24 * 3600),
            "modelInvocationType": job.invocation_type,
        }
        if job.client_token:
            body["clientRequestToken"] = job.client_token
        if job.ended_at is not None:
            body["endTime"] = _iso(job.ended_at)
        if job.records:
            body |= {
                "totalRecordCount": len(job.records),
                "processedRecordCount": job.succeeded + job.failed,
                "successRecordCount": job.succeeded,
                "errorRecordCount": job.failed,
            }
        return body

    def list_json(
        self,
        *,
        max_results: int = 1000,
        next_token: str | None = None,
        sort_order: str = "Descending",
        name_contains: str | None = None,
        status_equals: str | None = None,
    ) -> dict[str, Any]:
        """A ListModelInvocationJobs page: its jobs as GetModelInvocationJob shows them (the summary shape
        has the same fields), by creation time, `max_results` at most, an opaque `nextToken` when more follow."""
        for job in self.jobs.values():
            self.advance(job)
        jobs = sorted(self.jobs.values(), key=lambda j: j.submitted, reverse=sort_order == "Descending")
        jobs = [
            j
            for j in jobs
            if (name_contains is None or name_contains in j.name) and (status_equals in (None, j.status))
        ]
        start = int(next_token.removeprefix("page-after-")) if next_token else 0
        page = jobs[start : start + max_results]
        answer: dict[str, Any] = {"invocationJobSummaries": [self.job_json(j) for j in page]}
        if start + max_results < len(jobs):
            answer["nextToken"] = f"page-after-{start + max_results}"
        return answer

    def create(self, body: dict[str, Any]) -> JSONResponse:
        token = body.get("clientRequestToken")
        if token and token in self.tokens:
            return JSONResponse({"jobArn": self.tokens[token]})
        input_uri = body["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
        count = len(self.read_records(input_uri))
        if count < self.min_records:
            message = (
                f"The input holds {count} records; batch inference jobs for {body['modelId']} take at least "
                f"{self.min_records} (quota: Minimum number of records per batch inference job)."
            )
            return _error(400, "ValidationException", message)
        # job ids are 12 lowercase letters and digits (the jobArn pattern of botocore's service model)
        arn = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-invocation-job/job{len(self.jobs) + 1:09d}"
        self.jobs[arn] = FakeJob(
            arn=arn,
            name=body["jobName"],
            model_id=body["modelId"],
            role_arn=body["roleArn"],
            input_uri=input_uri,
            output_uri=body["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"],
            invocation_type=body.get("modelInvocationType", "InvokeModel"),
            client_token=token,
            submitted=time.monotonic(),
            submitted_at=time.time(),
        )
        if token:
            self.tokens[token] = arn
        return JSONResponse({"jobArn": arn})

    # --- HTTP ----------------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()
        fake = self

        @app.middleware("http")
        async def signed(request: Request, call_next: Any) -> Any:
            key = f"{request.method} {request.url.path.split('/')[1]}"
            fake.calls[key] = fake.calls.get(key, 0) + 1
            if not request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256"):
                return JSONResponse({"message": "Missing Authentication Token"}, status_code=403)
            return await call_next(request)

        @app.post("/model-invocation-job")
        async def create(request: Request) -> JSONResponse:
            body = await request.json()
            with fake.lock:
                answer = fake.create(body)
                if fake.lose_create_answers > 0 and answer.status_code == 200:
                    fake.lose_create_answers -= 1  # the job is made; its answer never reaches the caller
                    return _error(500, "InternalServerException", "Internal server error")
                return answer

        def find(identifier: str) -> FakeJob | None:
            identifier = unquote(identifier)
            return next((j for a, j in fake.jobs.items() if identifier in (a, a.rsplit("/", 1)[-1])), None)

        @app.get("/model-invocation-job/{identifier:path}")
        def get(identifier: str) -> JSONResponse:
            with fake.lock:
                job = find(identifier)
                if job is None:
                    return _error(404, "ResourceNotFoundException", "Job not found")
                fake.advance(job)
                return JSONResponse(fake.job_json(job))

        @app.post("/model-invocation-job/{identifier:path}/stop")
        def stop(identifier: str) -> JSONResponse:
            with fake.lock:
                job = find(identifier)
                if job is None or job.status in ENDED:
                    return _error(400, "ValidationException", "Job cannot be stopped")
                job.stop_requested = True
                return JSONResponse({})

        @app.get("/model-invocation-jobs")
        def list_jobs(
            maxResults: int = 1000,
            nextToken: str | None = None,
            sortOrder: str = "Descending",
            nameContains: str | None = None,
            statusEquals: str | None = None,
        ) -> JSONResponse:
            if not 1 <= maxResults <= 1000:
                return _error(400, "ValidationException", "maxResults: must be between 1 and 1000")
            with fake.lock:
                return JSONResponse(
                    fake.list_json(
                        max_results=maxResults,
                        next_token=nextToken,
                        sort_order=sortOrder,
                        name_contains=nameContains,
                        status_equals=statusEquals,
                    )
                )

        return app


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status, headers={"x-amzn-errortype": kind})
