"""A fake Azure OpenAI batch API (reference/provider-apis.md section 4), with Azure's quirks.

Both URL styles: `/openai/v1/...` and the legacy `/openai/...?api-version=` (which 404s without the
version, as Azure does). Auth by `api-key` header or an Entra bearer token. Answers as Azure's examples
do: capitalised statuses, ISO 8601 timestamps, null request counts until the batch ends, `endpoint: null`,
empty-string file ids, output lines without `id`, and an empty error file on success. Each line's
`body.model` must be the batch deployment's name.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import Request

from tests.fakes.openai_upstream import FakeBatch, FakeOpenAI

AZURE_KEY = "azure-test-key"
AZURE_AD_TOKEN = "entra-test-token"
DEPLOYMENT = "gpt-4o-mini-batch"
EXPIRING_DEPLOYMENT = "fake-expire"  # the base fake expires batches of this model

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


class FakeAzureOpenAI(FakeOpenAI):
    PREFIXES = ("/openai/v1", "/openai")

    def authorized(self, request: Request) -> bool:
        if not request.url.path.startswith("/openai/v1/") and "api-version" not in request.query_params:
            return False
        return request.headers.get("api-key") == AZURE_KEY or (
            request.headers.get("authorization") == f"Bearer {AZURE_AD_TOKEN}"
        )

    def check_lines(self, lines: list[dict[str, Any]]) -> str | None:
        for line in lines:
            if line["body"].get("model") not in (DEPLOYMENT, EXPIRING_DEPLOYMENT):
                return f"body.model must be a batch deployment of this resource, got {line['body'].get('model')!r}"
            if line["url"] not in ("/chat/completions", "/v1/chat/completions", "/responses", "/v1/responses"):
                return f"unsupported url {line['url']!r}"
        return None

    def output_line(self, index: int, custom_id: str, response: Any, error: Any) -> dict[str, Any]:
        return {"custom_id": custom_id, "response": response, "error": error}

    def store_results(self, batch: FakeBatch, output: bytes, errors: bytes) -> None:
        batch.output_file_id = self.store("batch_output", output) if output else None
        batch.error_file_id = self.store("batch_output", errors)  # empty on success, as Azure does

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
        return body
