"""The `bedrock` provider: Bedrock batch inference (CreateModelInvocationJob), input and output in S3.

Submission writes the translated records to `s3://{s3_bucket}/batchgw/{batch_id}/input.jsonl`, recorded
in the journal, then creates the job with our batch id as `clientRequestToken`, which makes Bedrock's
create idempotent: a retry after a lost answer gets the same job back. Bedrock reads and writes the
bucket with the configured `role_arn`. Results are the `.jsonl.out` files Bedrock writes under
`{output}/{job id}/`: a job whose records all ran is `Completed`, records that failed included (they are
error records); `PartiallyCompleted` means some records were not processed in time, so the batch is
`expired`, its finished records kept. A record that cannot be read becomes an Unreadable, never an error
out of `results`; cleanup deletes everything under the batch's prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final

import orjson
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import ProviderError
from shared.jsonl import LineTooLong, iter_lines
from shared.lifecycle import BatchStatus
from shared.providers import anthropic_results, bedrock_format
from shared.providers.base import Journal, ProviderStatus, ResultLine, SubmitRequest, Unreadable, guarded
from shared.providers.http import create_once
from shared.providers.listing import Page, listed_objects, statuses_in_order
from shared.providers.registry import ProviderDeps
from shared.records import Counts, ErrorEntry
from shared.results import request_id
from shared.routing import Deployment
from shared.storage.blobs import BlobWriter, S3Blobs

if TYPE_CHECKING:
    from boto3.session import Session
    from mypy_boto3_bedrock import BedrockClient
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

# Bedrock's statuses in OpenAI's: `PartiallyCompleted` is "not all of your records could be processed in
# time" (botocore's service model), OpenAI's `expired` with partial results
_STATES: Final[dict[str, BatchStatus]] = {
    "Submitted": "validating",
    "Validating": "validating",
    "Scheduled": "in_progress",
    "InProgress": "in_progress",
    "Completed": "completed",
    "PartiallyCompleted": "expired",
    "Failed": "failed",
    "Stopping": "cancelling",
    "Stopped": "cancelled",
    "Expired": "expired",
}
JOB_NAME_PREFIX: Final = "batchgw"  # every job batchgw creates is named `batchgw-{batch id}`
_LIST_PAGE: Final = 1000  # the most a ListModelInvocationJobs page holds

_RETRYABLE: Final = frozenset(
    {"ThrottlingException", "ServiceUnavailableException", "InternalServerException", "ServiceQuotaExceededException"}
)


def build(deployment: Deployment, deps: ProviderDeps) -> BedrockProvider:
    return BedrockProvider(deployment, deps.session)


def screen(deployment: Deployment, body: dict[str, Any]) -> None:
    """Raise TranslationError for a request Bedrock cannot take."""
    model_input(deployment, body)


def model_input(deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
    """A record's modelInput: an Anthropic model's native Messages body, else a Converse request."""
    if bedrock_format.is_anthropic(deployment.provider_model):
        return bedrock_format.to_claude(body, deployment.provider_model, max_tokens=deployment.output_bound)
    return bedrock_format.to_converse(body, max_tokens=deployment.output_bound)


def _provider_error(exc: ClientError | BotoCoreError, what: str) -> ProviderError:
    if isinstance(exc, ClientError):
        code = exc.response["Error"]["Code"]
        message = exc.response["Error"].get("Message", "")
        return ProviderError(f"{what}: {code}: {message}", retryable=code in _RETRYABLE)
    return ProviderError(f"{what}: {exc}", retryable=True)


def _job_id(job_arn: str) -> str:
    return job_arn.rsplit("/", 1)[-1]


class BedrockProvider:
    def __init__(self, deployment: Deployment, session: Session) -> None:
        self._deployment = deployment
        self._session = session
        assert deployment.s3_bucket and deployment.role_arn  # the routing file requires them for bedrock
        self._bucket = deployment.s3_bucket
        self._converse = not bedrock_format.is_anthropic(deployment.provider_model)

    @cached_property
    def _config(self) -> Config:
        return Config(
            region_name=self._deployment.region,
            retries={"mode": "standard", "max_attempts": self._deployment.max_retries + 1},
            read_timeout=self._deployment.timeout,
        )

    @cached_property
    def _bedrock(self) -> BedrockClient:
        # api_base, when set, is the control plane's endpoint (a VPC endpoint, or a test double)
        return self._session.client("bedrock", config=self._config, endpoint_url=self._deployment.api_base)

    @cached_property
    def _s3(self) -> S3Client:
        return self._session.client("s3", config=self._config)

    # --- submit ---------------------------------------------------------------------------------

    def _write_input(self, request: SubmitRequest, key: str) -> None:
        with BlobWriter(self._s3, self._bucket, key, "application/jsonl") as out:
            for index, line in enumerate(request.open_lines()):
                record = {
                    "recordId": bedrock_format.record_id(index),
                    "modelInput": model_input(self._deployment, line.body),
                }
                out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))

    def submit(self, request: SubmitRequest, journal: Journal) -> None:
        fewest = self._deployment.request_limits[0]
        if request.line_count < fewest:
            # the file had enough requests at creation, but not once those Bedrock cannot take were set aside
            raise ProviderError(
                f"Bedrock runs jobs of at least {fewest:,} records for {self._deployment.provider_model}; "
                f"{request.line_count:,} requests of this batch can be sent to it.",
                retryable=False,
                code="batch_size_out_of_range",
            )
        prefix = f"batchgw/{request.batch_id}"
        if "input_uri" not in journal.refs:
            try:
                self._write_input(request, f"{prefix}/input.jsonl")
            except (ClientError, BotoCoreError) as exc:
                raise _provider_error(exc, "write the batch input to S3") from exc
            journal.record(input_uri=f"s3://{self._bucket}/{prefix}/input.jsonl", output_prefix=f"{prefix}/output/")
        if "batch_id" in journal.refs:
            return
        token = request.batch_id.replace("_", "-")
        arguments: dict[str, Any] = {
            "jobName": f"{JOB_NAME_PREFIX}-{token}"[:63],
            "roleArn": self._deployment.role_arn,
            "clientRequestToken": token,
            "modelId": self._deployment.provider_model,
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": journal.refs["input_uri"], "s3InputFormat": "JSONL"}},
            "outputDataConfig": {
                "s3OutputDataConfig": {"s3Uri": f"s3://{self._bucket}/{journal.refs['output_prefix']}"}
            },
        }
        if self._converse:
            arguments["modelInvocationType"] = "Converse"

        def create() -> str:
            try:
                return str(self._bedrock.create_model_invocation_job(**arguments)["jobArn"])
            except (ClientError, BotoCoreError) as exc:
                raise _provider_error(exc, "create the batch inference job") from exc

        # `create_started` is recorded first, so a create whose answer is lost is never moved to another
        # deployment (where it would run twice); sent again here, the client token gives back the same job
        create_once(journal, find=lambda: None, create=create, retries=0)

    # --- after submit ---------------------------------------------------------------------------

    def _job(self, refs: Mapping[str, str]) -> dict[str, Any]:
        try:
            job: dict[str, Any] = dict(self._bedrock.get_model_invocation_job(jobIdentifier=refs["batch_id"]))
        except (ClientError, BotoCoreError) as exc:
            raise _provider_error(exc, "get the batch inference job") from exc
        return job

    def list_statuses(self, refs: Sequence[Mapping[str, str]]) -> dict[str, ProviderStatus]:
        """Read from ListModelInvocationJobs pages (1,000 a page, newest first, only jobs named as batchgw names
        them), one after another: a `nextToken` cannot be made from a job of ours to enter the list there."""

        def fetch(token: str | None) -> Page:
            arguments: dict[str, Any] = {
                "maxResults": _LIST_PAGE,
                "sortBy": "CreationTime",
                "sortOrder": "Descending",
                "nameContains": JOB_NAME_PREFIX,
                **({"nextToken": token} if token else {}),
            }
            try:
                page = self._bedrock.list_model_invocation_jobs(**arguments)
            except (ClientError, BotoCoreError) as exc:
                raise _provider_error(exc, "list the batch inference jobs") from exc
            jobs = listed_objects(page.get("invocationJobSummaries"), "jobArn")
            shown = [(str(job["jobArn"]), _status(job)) for job in jobs]
            return shown, page.get("nextToken") or None

        return statuses_in_order([r["batch_id"] for r in refs], fetch)

    def refresh(self, refs: Mapping[str, str]) -> ProviderStatus:
        job = self._job(refs)
        status = _status(job)
        if status is None:
            raise ProviderError(f"unknown Bedrock job status {job.get('status')!r}", retryable=True)
        return status

    def cancel(self, refs: Mapping[str, str]) -> None:
        try:
            self._bedrock.stop_model_invocation_job(jobIdentifier=refs["batch_id"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] in _RETRYABLE:
                raise _provider_error(exc, "stop the batch inference job") from exc
            # a job that already ended cannot be stopped; the next refresh reports how it ended
        except BotoCoreError as exc:
            raise _provider_error(exc, "stop the batch inference job") from exc

    def _output_keys(self, refs: Mapping[str, str]) -> list[str]:
        """The result files Bedrock wrote: `{output prefix}{job id}/{input name}.out`."""
        prefix = f"{refs['output_prefix']}{_job_id(refs['batch_id'])}/"
        keys: list[str] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".jsonl.out"))
        return keys

    def results(self, refs: Mapping[str, str], custom_ids: Sequence[str]) -> Iterator[ResultLine | Unreadable]:
        blobs = S3Blobs(self._s3, self._bucket)
        job_arn = refs["batch_id"]
        seen: set[int] = set()
        try:
            for key in self._output_keys(refs):
                for raw in iter_lines(blobs.read(key), max_bytes=bedrock_format.MAX_RECORD_BYTES):
                    line = self._result(raw, custom_ids, job_arn, seen)
                    if line is not None:
                        yield line
        except (ClientError, BotoCoreError) as exc:
            raise _provider_error(exc, "read the batch inference output") from exc

    def cleanup(self, refs: Mapping[str, str]) -> None:
        """Delete the input and output records batchgw and Bedrock wrote in `s3_bucket`."""
        prefix = refs.get("output_prefix", "").removesuffix("output/")
        if not prefix:
            return
        try:
            keys = [
                o["Key"]
                for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket, Prefix=prefix)
                for o in page.get("Contents", [])
            ]
            S3Blobs(self._s3, self._bucket).delete(*keys)
        except (ClientError, BotoCoreError) as exc:
            raise _provider_error(exc, "delete the batch's objects in S3") from exc

    def _result(
        self, raw: bytes, custom_ids: Sequence[str], job_arn: str, seen: set[int]
    ) -> ResultLine | Unreadable | None:
        """One output record as a result line; None for a blank line or a record already read (the first wins)."""
        if isinstance(raw, LineTooLong):
            return self._unparsed(raw, f"a record is longer than {len(raw):,} bytes", custom_ids, job_arn, seen)
        if not raw.strip():
            return None
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._unparsed(raw, "a record is not valid JSON", custom_ids, job_arn, seen)
        if not isinstance(record, dict):
            return Unreadable(None, "a record is not a JSON object")
        index = bedrock_format.index_of(str(record.get("recordId", "")))
        if index is None or index >= len(custom_ids):
            return Unreadable(None, f"record {str(record.get('recordId'))[:40]!r} maps to no request")
        if not self._first(index, seen, job_arn):
            return None
        custom_id = custom_ids[index]
        return guarded(custom_id, self._translated, record, custom_id, request_id(job_arn, custom_id))

    def _unparsed(
        self, raw: bytes, reason: str, custom_ids: Sequence[str], job_arn: str, seen: set[int]
    ) -> Unreadable | None:
        """A record that cannot be parsed (cut off, or too long): unreadable for the request its start names,
        if it shows one; None when that request's record was read already (the first wins)."""
        index = bedrock_format.index_in_line(raw)
        if index is None or index >= len(custom_ids):
            return Unreadable(None, reason)
        return Unreadable(custom_ids[index], reason) if self._first(index, seen, job_arn) else None

    @staticmethod
    def _first(index: int, seen: set[int], job_arn: str) -> bool:
        if index in seen:
            logger.warning("Bedrock wrote a record twice; the first is kept", extra={"job": job_arn})
            return False
        seen.add(index)
        return True

    def _translated(self, record: dict[str, Any], custom_id: str, rid: str) -> ResultLine:
        if record.get("error") is not None:
            return ResultLine(custom_id, bedrock_format.error_response(record["error"], rid))
        if "modelOutput" not in record:
            raise bedrock_format.MalformedOutput("the record has neither a modelOutput nor an error")
        output = record["modelOutput"]
        if self._converse:
            body, usage = bedrock_format.from_converse(output, model=self._deployment.provider_model, completion_id=rid)
        else:
            # checked first: to_chat_completion reads absent or broken token counts as zero
            body, usage = anthropic_results.to_chat_completion(anthropic_results.checked_message(output), custom_id)
        return ResultLine(custom_id, {"status_code": 200, "request_id": rid, "body": body}, usage=usage)

    def close(self) -> None:
        """boto3 clients hold no connections worth closing early."""


def _status(job: Mapping[str, Any]) -> ProviderStatus | None:
    """A job's status as GetModelInvocationJob or a ListModelInvocationJobs summary shows it; None when Bedrock
    answers a status batchgw does not know."""
    state = _STATES.get(str(job.get("status")))
    if state is None:
        return None
    counts = None
    if "totalRecordCount" in job:
        counts = Counts(
            total=int(job["totalRecordCount"]),
            completed=int(job.get("successRecordCount") or 0),
            failed=int(job.get("errorRecordCount") or 0),
        )
    errors: tuple[ErrorEntry, ...] = ()
    if state == "failed" and job.get("message"):
        errors = (ErrorEntry(code="bedrock_job_failed", message=str(job["message"])),)
    return ProviderStatus(state, counts, errors)
