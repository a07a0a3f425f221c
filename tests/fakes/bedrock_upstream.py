"""A fake Bedrock batch inference control plane (reference/provider-apis.md section 6), over real HTTP.

It speaks the REST-JSON protocol botocore's `bedrock` client sends (CreateModelInvocationJob,
GetModelInvocationJob, ListModelInvocationJobs, StopModelInvocationJob) and does the work in S3 as
Bedrock does: it reads the job's input JSONL (`{recordId, modelInput}`) from the input URI and writes
`{output}/{jobId}/{input name}.out` (`{recordId, modelInput, modelOutput}` or `{..., error}`) and
`manifest.json.out`. S3 is whatever boto3 reaches from the test (moto). Jobs run by the clock:
Submitted, InProgress, then Completed, or PartiallyCompleted when some records fail (records whose text
contains "fail"), or Stopped with half the records written after a stop. `clientRequestToken` makes
creation idempotent, as on Bedrock. Usage is deterministic and recorded per job.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import boto3
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

REGION = "us-east-1"
ACCOUNT = "123456789012"


@dataclass
class FakeJob:
    arn: str
    name: str
    model_id: str
    role_arn: str
    input_uri: str
    output_uri: str
    invocation_type: str
    submitted: float
    status: str = "Submitted"
    stop_requested: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)
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


class FakeBedrock:
    def __init__(self, *, processing_seconds: float = 0.3) -> None:
        self.processing_seconds = processing_seconds
        self.jobs: dict[str, FakeJob] = {}
        self.tokens: dict[str, str] = {}
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        self.app = self._build()

    # --- the work ------------------------------------------------------------------------------

    def _read_records(self, job: FakeJob) -> list[dict[str, Any]]:
        bucket, key = _split(job.input_uri)
        body = boto3.client("s3", region_name=REGION).get_object(Bucket=bucket, Key=key)["Body"].read()
        return [orjson.loads(line) for line in body.splitlines() if line.strip()]

    def _output(self, job: FakeJob, record: dict[str, Any], index: int) -> dict[str, Any]:
        model_input = record["modelInput"]
        if "fail" in _text_of(model_input):
            job.failed += 1
            return {**record, "error": {"errorCode": 400, "errorMessage": "Malformed input request, please try again."}}
        prompt, completion = 30 + index % 7, 10 + index % 4
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
            assert model_input.get("anthropic_version") == "bedrock-2023-05-31", model_input
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

    def _finish(self, job: FakeJob, done: int, status: str) -> None:
        records = self._read_records(job)
        written = [self._output(job, record, i) for i, record in enumerate(records) if i < done]
        out_bucket, out_prefix = _split(job.output_uri.rstrip("/"))
        job_id = job.arn.rsplit("/", 1)[-1]
        input_name = job.input_uri.rsplit("/", 1)[-1]
        s3 = boto3.client("s3", region_name=REGION)
        body = b"".join(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE) for line in reversed(written))
        s3.put_object(Bucket=out_bucket, Key=f"{out_prefix}/{job_id}/{input_name}.out", Body=body)
        manifest = {
            "totalRecordCount": len(records),
            "processedRecordCount": len(written),
            "successRecordCount": job.succeeded,
            "errorRecordCount": job.failed,
            "inputTokenCount": job.input_tokens,
            "outputTokenCount": job.output_tokens,
        }
        s3.put_object(Bucket=out_bucket, Key=f"{out_prefix}/{job_id}/manifest.json.out", Body=orjson.dumps(manifest))
        job.records = records
        job.status = "PartiallyCompleted" if status == "Completed" and job.failed else status

    def advance(self, job: FakeJob) -> None:
        if job.status in ("Completed", "PartiallyCompleted", "Stopped", "Failed", "Expired"):
            return
        if job.stop_requested:
            if job.status != "Stopping":
                job.status = "Stopping"
                return
            total = len(self._read_records(job))
            self._finish(job, total // 2, "Stopped")
            return
        elapsed = time.monotonic() - job.submitted
        if elapsed < self.processing_seconds:
            job.status = "InProgress" if elapsed > self.processing_seconds / 3 else "Submitted"
            return
        self._finish(job, len(self._read_records(job)), "Completed")

    def job_json(self, job: FakeJob) -> dict[str, Any]:
        body: dict[str, Any] = {
            "jobArn": job.arn,
            "jobName": job.name,
            "modelId": job.model_id,
            "roleArn": job.role_arn,
            "status": job.status,
            "submitTime": _iso(time.time()),
            "lastModifiedTime": _iso(time.time()),
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": job.input_uri, "s3InputFormat": "JSONL"}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": job.output_uri}},
            "modelInvocationType": job.invocation_type,
        }
        if job.records:
            body |= {
                "totalRecordCount": len(job.records),
                "processedRecordCount": job.succeeded + job.failed,
                "successRecordCount": job.succeeded,
                "errorRecordCount": job.failed,
            }
        return body

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
                token = body.get("clientRequestToken")
                if token and token in fake.tokens:
                    return JSONResponse({"jobArn": fake.tokens[token]})
                job_id = f"job{len(fake.jobs) + 1:08d}"
                arn = f"arn:aws:bedrock:{REGION}:{ACCOUNT}:model-invocation-job/{job_id}"
                fake.jobs[arn] = FakeJob(
                    arn=arn,
                    name=body["jobName"],
                    model_id=body["modelId"],
                    role_arn=body["roleArn"],
                    input_uri=body["inputDataConfig"]["s3InputDataConfig"]["s3Uri"],
                    output_uri=body["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"],
                    invocation_type=body.get("modelInvocationType", "InvokeModel"),
                    submitted=time.monotonic(),
                )
                if token:
                    fake.tokens[token] = arn
                return JSONResponse({"jobArn": arn})

        def find(identifier: str) -> FakeJob | None:
            identifier = unquote(identifier)
            return next((j for a, j in fake.jobs.items() if identifier in (a, a.rsplit("/", 1)[-1])), None)

        @app.get("/model-invocation-job/{identifier:path}")
        def get(identifier: str) -> JSONResponse:
            with fake.lock:
                job = find(identifier)
                if job is None:
                    return JSONResponse(
                        {"message": "Job not found"},
                        status_code=404,
                        headers={"x-amzn-errortype": "ResourceNotFoundException"},
                    )
                fake.advance(job)
                return JSONResponse(fake.job_json(job))

        @app.post("/model-invocation-job/{identifier:path}/stop")
        def stop(identifier: str) -> JSONResponse:
            with fake.lock:
                job = find(identifier)
                if job is None or job.status in ("Completed", "PartiallyCompleted", "Stopped", "Failed"):
                    return JSONResponse(
                        {"message": "Job cannot be stopped"},
                        status_code=400,
                        headers={"x-amzn-errortype": "ValidationException"},
                    )
                job.stop_requested = True
                return JSONResponse({})

        @app.get("/model-invocation-jobs")
        def list_jobs() -> JSONResponse:
            with fake.lock:
                summaries = [
                    {
                        "jobArn": j.arn,
                        "jobName": j.name,
                        "modelId": j.model_id,
                        "status": j.status,
                        "submitTime": _iso(time.time()),
                    }
                    for j in fake.jobs.values()
                ]
                return JSONResponse({"invocationJobSummaries": summaries})

        return app
