"""Vertex AI Gemini batch prediction output, and batch prediction jobs, in OpenAI's terms. No I/O.

An output line (`{"status", "processed_time", "request", "response"}`) becomes an OpenAI output line: a
non-empty `status`, Vertex's free-text error for that request, is an HTTP-style error response whose status
code says whether the text blames the request or the service; a response that cannot be read (its usage,
above all, which is billed) becomes a `provider_error` line saying what was wrong. Which custom_id a line
answers is read from its labels by shared/providers/vertex_format.py. A candidate's `logprobsResult` becomes
its choice's `logprobs`. A job's state, request counts and error map to a ProviderStatus.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import orjson

from shared.errors import ProviderError
from shared.lifecycle import BatchStatus
from shared.providers.base import LineUsage, ProviderStatus, ResultLine
from shared.providers.vertex_format import INT32_MAX
from shared.records import Counts, ErrorEntry

_STATES: Final[dict[str, BatchStatus]] = {
    "JOB_STATE_QUEUED": "validating",
    "JOB_STATE_PENDING": "validating",
    "JOB_STATE_RUNNING": "in_progress",
    "JOB_STATE_UPDATING": "in_progress",
    "JOB_STATE_PAUSED": "in_progress",
    "JOB_STATE_SUCCEEDED": "completed",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "completed",
    "JOB_STATE_FAILED": "failed",
    "JOB_STATE_CANCELLING": "cancelling",
    "JOB_STATE_CANCELLED": "cancelled",
    "JOB_STATE_EXPIRED": "expired",
}

# google.genai.types.FinishReason: every reason for blocked or filtered output is a content filter; the
# rest (MALFORMED_FUNCTION_CALL, OTHER, ...) say nothing OpenAI has a word for
_FINISH_REASONS: Final = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "CONTINUATION": "length",  # the per-request token limit, the answer not yet whole
    **dict.fromkeys(
        (
            "SAFETY",
            "RECITATION",
            "LANGUAGE",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
            "IMAGE_SAFETY",
            "IMAGE_PROHIBITED_CONTENT",
            "IMAGE_RECITATION",
            "ESCALATION",
            "PUP_LIMITED_DISABLED",
            "MODEL_ARMOR",
        ),
        "content_filter",
    ),
}

# google.rpc.Code of a failed job, as a whole-batch error code in OpenAI's style
_RPC_CODES: Final = {
    3: "invalid_request",
    5: "not_found",
    7: "permission_denied",
    8: "quota_exceeded",
    9: "failed_precondition",
    16: "unauthenticated",
}
# a per-request status is free text: an HTTP code it states (Google's error JSON) says whose fault it is; else
# these words say whether it blames the service or the request
_STATED_CODE: Final = re.compile(r'"code"\s*:\s*([1-5]\d\d)\b')
_SERVER_ERROR: Final = re.compile(
    r"\b(429|5\d\d)\b|internal|unavailable|deadline|timed? ?out|resource.exhausted|quota|overloaded|try again",
    re.IGNORECASE,
)
_CLIENT_ERROR: Final = re.compile(
    r"\b4\d\d\b|invalid|unsupported|not supported|bad request|not found|permission|too (large|long)|exceed|"
    r"malformed|must be|required|unauthenticated|failed.precondition",
    re.IGNORECASE,
)


# --- results ----------------------------------------------------------------------------------------


class _MalformedPrediction(ValueError):
    """What is wrong with a prediction's response, in words for the error line."""


class _UnreadableLogprobs(ValueError):
    """A candidate's logprobsResult not shaped as Google's LogprobsResult."""


def _int(value: Any) -> int:
    """An int64 field, which Google's JSON sends as a string."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return 0


def _as_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # not JSON (an integer past 64 bits, say): nothing Vertex's JSON could hold
        return repr(value)


def _shown(value: Any) -> str:
    return _as_text(value)[:80]


def _token_count(metadata: Mapping[str, Any], name: str) -> int:
    """A usageMetadata count (an int32), a JSON number or a string; 0 when absent."""
    value = metadata.get(name)
    if value is None:
        return 0
    count = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= len(str(INT32_MAX)):
        count = int(value)
    if count is None or not 0 <= count <= INT32_MAX:
        raise _MalformedPrediction(f"response.usageMetadata.{name} is not a token count: {_shown(value)}")
    return count


def _timestamp(value: Any) -> int:
    if not isinstance(value, str):
        return 0
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except (ValueError, OverflowError, OSError):
        return 0


def _candidates(candidates: Any) -> list[dict[str, Any]]:
    """A response's candidates, checked down to their parts."""
    if candidates is None:
        return []
    if not isinstance(candidates, list):
        raise _MalformedPrediction(f"response.candidates is not a list: {_shown(candidates)}")
    for position, candidate in enumerate(candidates):
        where = f"response.candidates[{position}]"
        if not isinstance(candidate, dict):
            raise _MalformedPrediction(f"{where} is not an object: {_shown(candidate)}")
        content = candidate.get("content")
        if content is not None and not isinstance(content, dict):
            raise _MalformedPrediction(f"{where}.content is not an object: {_shown(content)}")
        parts = content.get("parts") if content else None
        if parts is not None and not (isinstance(parts, list) and all(isinstance(p, dict) for p in parts)):
            raise _MalformedPrediction(f"{where}.content.parts is not a list of objects: {_shown(parts)}")
    return candidates


def _choice(candidate: Mapping[str, Any], position: int, line_key: str) -> dict[str, Any]:
    parts = (candidate.get("content") or {}).get("parts") or ()
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for part in parts:
        if part.get("thought"):
            continue  # thought summaries are not the answer
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        call = part.get("functionCall")
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                call_id = f"call_{line_key[:16]}_{position}_{len(tool_calls)}"
            arguments = _as_text(call.get("args") or {})
            tool_calls.append(
                {"id": call_id, "type": "function", "function": {"name": call["name"], "arguments": arguments}}
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    finish = _FINISH_REASONS.get(str(candidate.get("finishReason")), "stop")
    if tool_calls and finish == "stop":
        finish = "tool_calls"
    index = candidate.get("index")
    return {
        "index": index if isinstance(index, int) and not isinstance(index, bool) else position,
        "message": message,
        "logprobs": _logprobs(candidate.get("logprobsResult")),
        "finish_reason": finish,
    }


def _logprobs(result: Any) -> dict[str, Any] | None:
    """A LogprobsResult as OpenAI's choice logprobs: each chosen token with the top candidates of its step.
    None when there is none, or it cannot be read: the answer is kept without it."""
    if not isinstance(result, dict):
        return None
    chosen, steps = result.get("chosenCandidates") or [], result.get("topCandidates") or []
    if not isinstance(chosen, list) or not isinstance(steps, list):
        return None
    try:
        content = [
            {**_token_logprob(token), "top_logprobs": [_token_logprob(top) for top in _top_candidates(steps, step)]}
            for step, token in enumerate(chosen)
        ]
    except _UnreadableLogprobs:
        return None
    return {"content": content, "refusal": None}


def _top_candidates(steps: list[Any], step: int) -> list[Any]:
    """The top candidates of generation step `step`; none when Vertex sent no step for it."""
    top = steps[step] if step < len(steps) else {}
    if not isinstance(top, dict) or not isinstance(top.get("candidates"), list | None):
        raise _UnreadableLogprobs
    return top.get("candidates") or []


def _token_logprob(candidate: Any) -> dict[str, Any]:
    """A LogprobsResultCandidate as OpenAI's token logprob; proto3 JSON leaves out an empty token and a 0.0."""
    if not isinstance(candidate, dict):
        raise _UnreadableLogprobs
    token, logprob = candidate.get("token", ""), candidate.get("logProbability", 0.0)
    if not isinstance(token, str) or isinstance(logprob, bool) or not isinstance(logprob, int | float):
        raise _UnreadableLogprobs
    return {"token": token, "logprob": float(logprob), "bytes": list(token.encode())}


def _usage(metadata: Any) -> tuple[dict[str, Any], LineUsage]:
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise _MalformedPrediction(f"response.usageMetadata is not an object: {_shown(metadata)}")
    prompt = _token_count(metadata, "promptTokenCount")
    cached = _token_count(metadata, "cachedContentTokenCount")
    thoughts = _token_count(metadata, "thoughtsTokenCount")
    if cached > prompt:
        raise _MalformedPrediction(f"response.usageMetadata has {cached} cached tokens of {prompt} prompt tokens")
    # Gemini bills thinking as output, and counts it apart from the candidates
    completion = _token_count(metadata, "candidatesTokenCount") + thoughts
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }
    line_usage = LineUsage(
        input_tokens=prompt, cached_tokens=cached, output_tokens=completion, reasoning_tokens=thoughts
    )
    return usage, line_usage


def error_status_code(message: str) -> int:
    """400 for a per-request status that blames the request, else 500."""
    if stated := _STATED_CODE.search(message):
        code = int(stated[1])
        return 400 if 400 <= code < 500 and code not in (408, 429) else 500
    if _SERVER_ERROR.search(message):
        return 500
    return 400 if _CLIENT_ERROR.search(message) else 500


def _error_line(custom_id: str, message: str) -> ResultLine:
    status_code = error_status_code(message)
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status_code == 400 else "server_error",
            "param": None,
            "code": None,
        }
    }
    return ResultLine(custom_id=custom_id, response={"status_code": status_code, "request_id": "", "body": body})


def _malformed_line(custom_id: str, problem: str) -> ResultLine:
    message = f"Vertex AI returned a prediction batchgw cannot read: {problem}."
    return ResultLine(custom_id=custom_id, response=None, error={"code": "provider_error", "message": message})


def result_line(prediction: Mapping[str, Any], custom_id: str, model: str) -> ResultLine:
    """One Vertex prediction line as an OpenAI output line for `custom_id`; `model` if it names none.

    A non-empty `status` is Vertex's error for the request, kept as an HTTP-style error response; a
    response this cannot read becomes a `provider_error` line saying what was wrong. Never raises."""
    status = prediction.get("status")
    if status:
        return _error_line(custom_id, status if isinstance(status, str) else _as_text(status))
    response = prediction.get("response")
    if not isinstance(response, dict):
        return _malformed_line(custom_id, f"it has no status and its response is not an object: {_shown(response)}")
    processed_time = str(prediction.get("processed_time") or "")
    line_key = hashlib.blake2b(f"{custom_id}\0{processed_time}".encode(), digest_size=12).hexdigest()
    try:
        candidates = _candidates(response.get("candidates"))
        usage, line_usage = _usage(response.get("usageMetadata"))
    except _MalformedPrediction as exc:
        return _malformed_line(custom_id, str(exc))
    choices = [_choice(candidate, position, line_key) for position, candidate in enumerate(candidates)]
    if not choices:  # the prompt itself was blocked
        choices = [_choice({"finishReason": "PROHIBITED_CONTENT"}, 0, line_key)]
    response_id = response.get("responseId")
    response_id = response_id if isinstance(response_id, str) else ""
    model_version = response.get("modelVersion")
    body = {
        "id": f"chatcmpl-{response_id or line_key}",
        "object": "chat.completion",
        "created": _timestamp(processed_time) or _timestamp(response.get("createTime")),
        "model": model_version if isinstance(model_version, str) and model_version else model,
        "choices": choices,
        "usage": usage,
        "system_fingerprint": None,
    }
    return ResultLine(
        custom_id=custom_id,
        response={"status_code": 200, "request_id": response_id, "body": body},
        usage=line_usage,
    )


# --- jobs -------------------------------------------------------------------------------------------


def openai_state(state: Any) -> BatchStatus:
    """A Vertex JobState in OpenAI's batch vocabulary."""
    mapped = _STATES.get(str(state))
    if mapped is None:
        raise ProviderError(f"unknown batch prediction job state {state!r}", retryable=True)
    return mapped


def job_counts(job: Mapping[str, Any], total: int | None) -> Counts | None:
    """Request counts from a job's completionStats; `total` is our own line count, when known."""
    stats = job.get("completionStats")
    if not isinstance(stats, dict):
        return None
    succeeded, failed = _int(stats.get("successfulCount")), _int(stats.get("failedCount"))
    incomplete = max(_int(stats.get("incompleteCount")), 0)  # -1 means unknown
    return Counts(total=total or succeeded + failed + incomplete, completed=succeeded, failed=failed)


def job_status(job: Mapping[str, Any], total: int | None = None) -> ProviderStatus:
    """A batchPredictionJob as a ProviderStatus, with its error as a whole-batch error."""
    state = openai_state(job.get("state"))
    error = job.get("error")
    errors: tuple[ErrorEntry, ...] = ()
    if isinstance(error, dict) and (error.get("message") or error.get("code")):
        code = _RPC_CODES.get(_int(error.get("code")), "provider_error")
        errors = (ErrorEntry(code=code, message=str(error.get("message") or "The batch prediction job failed.")),)
    return ProviderStatus(state, job_counts(job, total), errors)
