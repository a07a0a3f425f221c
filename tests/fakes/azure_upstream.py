"""A fake Azure OpenAI batch API (reference/provider-apis.md sections 4 and 7), with Azure's quirks and traps.

Both URL styles: `/openai/v1/...` and the legacy `/openai/...?api-version=` (which 404s without the
version, as Azure does). Auth by `api-key` header or an Entra bearer token; `issue_token` makes tokens that
expire, as Entra's do after about an hour. Answers as Azure's examples do: capitalised statuses, ISO 8601
timestamps, null request counts until the batch ends, `endpoint: null`, empty-string file ids, output lines
without `id` whose chat bodies carry content filter results, and an empty error file on success. Each
line's `body.model` must be the batch deployment's name.

The traps of section 7: an upload is `pending` for `file_processing_seconds` and a create on it is refused
with Azure's 400; a create beyond a deployment's `enqueued_token_quota` is refused with 400
`token_limit_exceeded` until running batches finish, or, with `fail_fast` off (Azure's regions without "fail
fast"), is accepted and then fails in validation with that error and no request run; uploads beyond
`file_cap_without_expiry` (500 on Azure) or `file_cap_with_expiry` (10,000) live files are refused with 400
`quotaExceeded`, result files counting too; `expires_after` must be 14 to 30 days.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from tests.fakes.openai_upstream import FakeBatch, FakeFile, FakeOpenAI, prompt_tokens

AZURE_KEY = "azure-test-key"
AZURE_AD_TOKEN = "entra-test-token"
DEPLOYMENT = "gpt-4o-mini-batch"
EXPIRING_DEPLOYMENT = "fake-expire"  # the base fake expires batches of this model
# Azure's content filter annotations, on every choice and prompt of a chat body
FILTERED = {name: {"filtered": False, "severity": "safe"} for name in ("hate", "self_harm", "sexual", "violence")}

_STATUS = {
    "validating": "Validating",
    "in_progress": "InProgress",
    "finalizing": "Finalizing",
    "completed": "Completed",
    "failed": "Failed",
    "expired": "Expired",
    "cancelling": "Cancelling",
    "cancelled": "Cancelled",
}


def _iso(monotonic_at: float, offset: float) -> str:
    return datetime.fromtimestamp(monotonic_at + offset, UTC).isoformat().replace("+00:00", "Z")


def enqueued_tokens(requests: int) -> int:
    """The tokens a batch of `requests` holds of its deployment's quota until it ends (what it will bill)."""
    return sum(prompt_tokens(index) for index in range(requests))


def _azure_error(status: int, code: str, message: str) -> JSONResponse:
    """An error as Azure words it: `code` and `message` only."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class FakeAzureOpenAI(FakeOpenAI):
    PREFIXES = ("/openai/v1", "/openai")
    PROCESSING_STATUS = "pending"
    EXPIRY_SECONDS = (1_209_600, 2_592_000)

    def __init__(self, *, processing_seconds: float = 1.0) -> None:
        super().__init__(processing_seconds=processing_seconds)
        self.api_keys = {AZURE_KEY}
        self.tokens: dict[str, float] = {AZURE_AD_TOKEN: math.inf}  # Entra token -> when it expires (monotonic)
        self.enqueued_token_quota: dict[str, int] = {}  # deployment -> the most tokens its running batches hold
        self.fail_fast = True  # the quota is checked at create (a 400), else in validation (the batch fails)
        self.validated: set[str] = set()  # batches past validation
        self.refused: dict[str, str] = {}  # batch -> why validation failed it (token_limit_exceeded)
        self.file_cap_without_expiry = 500
        self.file_cap_with_expiry = 10_000

    def issue_token(self, lifetime: float) -> str:
        """A new Entra token, refused `lifetime` seconds from now."""
        token = self.next_id("entra-")
        self.tokens[token] = time.monotonic() + lifetime
        return token

    def expire_tokens(self) -> None:
        """As if their hour had passed: every Entra token issued so far is refused from now on."""
        self.tokens = dict.fromkeys(self.tokens, 0.0)

    def authorized(self, request: Request) -> bool:
        if not request.url.path.startswith("/openai/v1/") and "api-version" not in request.query_params:
            return False
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme == "Bearer":
            return time.monotonic() < self.tokens.get(token, 0.0)
        return request.headers.get("api-key") in self.api_keys

    def unauthorized(self, request: Request) -> JSONResponse:
        if "authorization" in request.headers:
            message = (
                "Unauthorized. Access token is missing, invalid, audience is incorrect "
                "(https://cognitiveservices.azure.com), or have expired."
            )
        else:
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
                "valid key for an active subscription and use a correct regional API endpoint for your resource."
            )
        return _azure_error(401, "401", message)

    def check_lines(self, lines: list[dict[str, Any]]) -> str | None:
        for line in lines:
            if line["body"].get("model") not in (DEPLOYMENT, EXPIRING_DEPLOYMENT):
                return f"body.model must be a batch deployment of this resource, got {line['body'].get('model')!r}"
            if line["url"] not in ("/chat/completions", "/v1/chat/completions", "/responses", "/v1/responses"):
                return f"unsupported url {line['url']!r}"
        return None

    def live_files(self, *, expiring: bool) -> int:
        return sum((f.expires_at is not None) == expiring for f in self.files.values())

    def upload_refusal(self, expires: bool) -> JSONResponse | None:
        cap = self.file_cap_with_expiry if expires else self.file_cap_without_expiry
        if self.live_files(expiring=expires) < cap:
            return None
        kind = "with" if expires else "without"
        self.calls["refused:quotaExceeded"] += 1
        message = f"The quota for files {kind} expiry is reached. The maximum is {cap}."
        return _azure_error(400, "quotaExceeded", message)

    def create_refusal(self, file: FakeFile, lines: list[dict[str, Any]]) -> JSONResponse | None:
        status, _ = self.file_status(file)
        if status != "processed":
            # Azure's words (Microsoft Q&A 2203029); its code for this refusal is not documented
            message = (
                f"The input file {file.id} is in '{status}' state. Only files with status 'Processed' are accepted."
            )
            self.calls[f"refused:{status}"] += 1
            return JSONResponse({"error": {"code": None, "message": message}}, status_code=400)
        for batch in self.batches.values():
            if batch.input_file_id == file.id:
                self.advance(batch)
                # a second live batch of one input: its requests would run twice
                self.calls["overlapping_create"] += batch.active
        deployment = str(lines[0]["body"].get("model")) if lines else ""
        if not self.fail_fast or deployment not in self.enqueued_token_quota:
            return None
        for batch in self.batches.values():
            self.advance(batch)
        why = self.quota_refusal(deployment, len(lines), [b for b in self.batches.values() if b.active])
        if why is None:
            return None
        self.calls["refused:token_limit_exceeded"] += 1
        error = {"code": "token_limit_exceeded", "message": why, "param": None, "type": "invalid_request_error"}
        return JSONResponse({"error": error}, status_code=400)

    def quota_refusal(self, deployment: str, requests: int, running: list[FakeBatch]) -> str | None:
        """Azure's message when a batch of `requests` does not fit the deployment's quota beside `running`."""
        quota = self.enqueued_token_quota.get(deployment)
        held = sum(enqueued_tokens(len(b.lines)) for b in running if b.model == deployment)
        if quota is None or held + enqueued_tokens(requests) <= quota:
            return None
        return (
            f"The number of enqueued tokens has surpassed the configured limit of {quota} for the deployment "
            f"'{deployment}'. Please either increase the limit or try again once the current jobs have finished."
        )

    def advance(self, batch: FakeBatch) -> None:
        """Without fail fast, batches are validated in the order they were created, before they run."""
        if not self.fail_fast and batch.id not in self.validated:
            for earlier in sorted(self.batches.values(), key=lambda b: b.id):
                if earlier.id <= batch.id and earlier.id not in self.validated:
                    self.validate(earlier)
        super().advance(batch)

    def validate(self, batch: FakeBatch) -> None:
        running = [b for b in self.batches.values() if b.active and b.id in self.validated]
        self.validated.add(batch.id)
        message = self.quota_refusal(batch.model, len(batch.lines), running)
        if message is not None:
            self.calls["failed:token_limit_exceeded"] += 1
            self.refused[batch.id] = message
            batch.status = "failed"

    def response_body(self, line: dict[str, Any], index: int, created: int) -> tuple[dict[str, Any], int, int]:
        body, prompt, completion = super().response_body(line, index, created)
        if body.get("object") == "chat.completion":
            body["choices"] = [choice | {"content_filter_results": FILTERED} for choice in body["choices"]]
            body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": FILTERED}]
        return body, prompt, completion

    def output_line(self, index: int, custom_id: str, response: Any, error: Any) -> dict[str, Any]:
        return {"custom_id": custom_id, "response": response, "error": error}

    def store_results(self, batch: FakeBatch, output: bytes, errors: bytes) -> None:
        expires = batch.output_expires_after
        batch.output_file_id = self.store("batch_output", output, expires_after=expires) if output else None
        # an error file even when empty, as Azure makes one
        batch.error_file_id = self.store("batch_output", errors, expires_after=expires)

    def batch_json(self, batch: FakeBatch) -> dict[str, Any]:
        body = super().batch_json(batch)
        offset = time.time() - time.monotonic()
        body |= {
            "status": _STATUS[batch.status],
            "endpoint": None,
            "created_at": _iso(batch.created_at, offset),
            "in_progress_at": _iso(batch.created_at, offset),
            "output_file_id": batch.output_file_id or "",
            "error_file_id": batch.error_file_id or "",
        }
        if batch.status in ("validating", "in_progress"):
            body["request_counts"] = {"total": None, "completed": None, "failed": None}
        if batch.id in self.refused:
            error = {"code": "token_limit_exceeded", "message": self.refused[batch.id], "param": None, "line": None}
            body |= {
                "errors": {"object": "list", "data": [error]},
                "failed_at": _iso(batch.created_at, offset),
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
            }
        return body
