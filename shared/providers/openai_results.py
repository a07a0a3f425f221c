"""What an OpenAI-compatible batch API answers, read in batchgw's terms. Pure: no I/O.

A batch object's status (in OpenAI's or Azure's older spelling), request counts and errors; and each line of
its output and error files as a ResultLine, or an Unreadable for a line that cannot be read or priced. The
adapters built on the openai one (azure, together), mistral's and `mode: sync` batches read with these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.errors import ProviderError
from shared.lifecycle import BatchStatus
from shared.providers.base import ResultLine, Unreadable
from shared.records import Counts, ErrorEntry
from shared.results import BadUsage, parsed_line, usage_from_openai

_STATES: dict[str, BatchStatus] = {
    "validating": "validating",
    "inprogress": "in_progress",
    "finalizing": "finalizing",
    "completed": "completed",
    "failed": "failed",
    "expired": "expired",
    "cancelling": "cancelling",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "canceling": "cancelling",
}


def openai_state(status: object) -> BatchStatus:
    """An OpenAI-compatible status in OpenAI's spelling; Azure's older API answers `Validating`, `InProgress`."""
    state = _STATES.get(str(status).lower().replace("_", ""))
    if state is None:
        raise ProviderError(f"unknown batch status {status!r}", retryable=True)
    return state


def counts_of(batch: Mapping[str, Any]) -> Counts | None:
    counts = batch.get("request_counts")
    if not isinstance(counts, dict):
        return None
    return Counts(
        total=counts.get("total") or 0,
        completed=counts.get("completed") or 0,
        failed=counts.get("failed") or 0,
    )


def errors_of(batch: Mapping[str, Any]) -> tuple[ErrorEntry, ...]:
    errors = batch.get("errors")
    data = errors.get("data") if isinstance(errors, dict) else None
    return tuple(
        ErrorEntry(
            code=str(e.get("code") or "provider_error"),
            message=str(e.get("message") or ""),
            param=e.get("param"),
            line=e.get("line"),
        )
        for e in data or ()
        if isinstance(e, dict)
    )


def result_line(raw: bytes) -> ResultLine | Unreadable | None:
    """An OpenAI output or error line as a ResultLine; Unreadable for a line that cannot be read or priced
    (with its custom_id when that much can be read); None for a blank line."""
    line = parsed_line(raw)
    if not isinstance(line, dict):
        return line
    custom_id: str = line["custom_id"]
    response, error = line.get("response"), line.get("error")
    if response is not None and not isinstance(response, dict):
        return Unreadable(custom_id, "the line's response is not a JSON object")
    if error is not None and not isinstance(error, dict):
        return Unreadable(custom_id, "the line's error is not a JSON object")
    usage = None
    if response is not None and response.get("status_code") == 200:
        try:
            usage = usage_from_openai(response.get("body"))
        except BadUsage as exc:
            return Unreadable(custom_id, str(exc))
    request_id = line.get("id")
    return ResultLine(
        custom_id=custom_id,
        response=response,
        error=error,
        usage=usage,
        id=request_id if isinstance(request_id, str) and request_id else None,
    )
