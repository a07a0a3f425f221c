"""The `mock` provider: runs batches in-process, offline, deterministically.

It behaves like a provider that processes requests in input order over `delay` seconds: a refresh
reports the share done so far, a cancel or an expiry (`expire_after`) freezes it, and results hold
exactly the requests done by then. A `failure_rate` share of requests (chosen by a hash of their
custom_id) fails with a 500, and progress counts them as the results will. A request's `n` choices (a
completion's `best_of` generated) each stop at its output limit and are all billed; an `n` above OpenAI's
128 or a `best_of` above its 20 is refused with its 400. Its state lives in the bucket under
`providers/mock/`, so every Lambda and every process of the dev stack sees the same batches.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from shared.errors import ProviderError
from shared.jsonl import answers, choices, iter_lines, output_limit
from shared.lifecycle import BatchStatus
from shared.providers.base import Journal, ProviderStatus, ResultLine, SubmitRequest, Unreadable
from shared.providers.registry import ProviderDeps
from shared.records import Counts
from shared.results import usage_from_openai
from shared.routing import Deployment
from shared.storage.ports import Blobs

PREFIX = "providers/mock"
MAX_CHOICES = 128  # the most `n` OpenAI takes
MAX_BEST_OF = 20  # the most `best_of` OpenAI's completions take


def _fraction(custom_id: str) -> float:
    """A stable number in [0, 1) for a custom_id."""
    return int.from_bytes(hashlib.blake2b(custom_id.encode(), digest_size=8).digest()) / 2**64


def _above_max(param: str, maximum: int) -> tuple[int, dict[str, Any]]:
    return 400, {
        "message": f"Invalid '{param}': integer above maximum value. Expected a value <= {maximum}.",
        "type": "invalid_request_error",
        "param": param,
        "code": "integer_above_max_value",
    }


def _refusal(
    custom_id: str, endpoint: str, request: dict[str, Any], failure_rate: float
) -> tuple[int, dict[str, Any]] | None:
    """The status and OpenAI error the mock answers a request with instead of a reply; None for a reply."""
    if failure_rate and _fraction(custom_id) < failure_rate:
        return 500, {"message": "mock provider failure", "type": "server_error", "param": None, "code": "mock_failure"}
    if choices(request) > MAX_CHOICES:
        return _above_max("n", MAX_CHOICES)
    best_of = request.get("best_of") if endpoint == "/v1/completions" else None
    if isinstance(best_of, int) and not isinstance(best_of, bool) and best_of > MAX_BEST_OF:
        return _above_max("best_of", MAX_BEST_OF)
    return None


def _tokens(value: Any) -> int:
    return max(1, math.ceil(len(orjson.dumps(value)) / 4))


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    prompt = body.get("prompt") or body.get("input")
    return prompt if isinstance(prompt, str) else ""


def build(deployment: Deployment, deps: ProviderDeps) -> MockProvider:
    return MockProvider(deployment, deps.blobs, deps.clock)


def screen(deployment: Deployment, body: dict[str, Any]) -> None:
    """The mock takes any request."""


class MockProvider:
    def __init__(self, deployment: Deployment, blobs: Blobs, clock: Callable[[], float] = time.time) -> None:
        self._deployment = deployment
        self._blobs = blobs
        self._clock = clock

    # --- state ----------------------------------------------------------------------------------

    def _state_key(self, batch_id: str) -> str:
        return f"{PREFIX}/{batch_id}/state.json"

    def _state(self, refs: Mapping[str, str]) -> dict[str, Any]:
        raw = self._blobs.get(self._state_key(refs["batch_id"]))
        if raw is None:
            raise ProviderError(f"mock batch {refs['batch_id']} not found", retryable=False, code="not_found")
        state: dict[str, Any] = orjson.loads(raw)
        return state

    def _save(self, state: dict[str, Any]) -> None:
        self._blobs.put(self._state_key(state["id"]), orjson.dumps(state), "application/json")

    def _progress(self, state: dict[str, Any]) -> tuple[BatchStatus, float]:
        """(OpenAI state, share of requests done) at this moment."""
        now, created, delay = self._clock(), state["created_at"], state["delay"]
        finish = created + delay
        stops: dict[BatchStatus, float | None] = {"cancelled": state.get("cancelled_at"), "expired": None}
        if state.get("expire_after") is not None:
            stops["expired"] = created + state["expire_after"]
        ended = [(at, why) for why, at in stops.items() if at is not None and at < finish and at <= now]
        if ended:
            at, why = min(ended)
            return why, (at - created) / delay
        if now >= finish:
            return "completed", 1.0
        return "in_progress", max(0.0, (now - created) / delay)

    # --- the interface --------------------------------------------------------------------------

    def submit(self, request: SubmitRequest, journal: Journal) -> None:
        if "batch_id" in journal.refs:
            return
        batch_id = f"mockbatch_{request.batch_id}"
        rate = self._deployment.failure_rate
        failures: list[int] = []  # the positions of the requests refused, so progress counts them as results do
        with self._blobs.writer(f"{PREFIX}/{batch_id}/input.jsonl", "application/jsonl") as out:
            for position, (custom_id, body) in enumerate(request.open_lines()):
                out.write(orjson.dumps({"custom_id": custom_id, "body": body}, option=orjson.OPT_APPEND_NEWLINE))
                if _refusal(custom_id, request.endpoint, body, rate) is not None:
                    failures.append(position)
        self._save(
            {
                "id": batch_id,
                "created_at": self._clock(),
                "total": request.line_count,
                "endpoint": request.endpoint,
                "model": request.model,
                "delay": self._deployment.delay,
                "failure_rate": rate,
                "failures": failures,
                "expire_after": self._deployment.expire_after,
            }
        )
        journal.record(batch_id=batch_id)

    def refresh(self, refs: Mapping[str, str]) -> ProviderStatus:
        state = self._state(refs)
        status, share = self._progress(state)
        done = math.floor(state["total"] * share)
        failed = bisect.bisect_left(state.get("failures", ()), done)  # of the first `done`, those that fail
        return ProviderStatus(status, Counts(total=state["total"], completed=done - failed, failed=failed))

    def cancel(self, refs: Mapping[str, str]) -> None:
        state = self._state(refs)
        if "cancelled_at" not in state:
            state["cancelled_at"] = self._clock()
            self._save(state)

    def results(self, refs: Mapping[str, str], custom_ids: Sequence[str]) -> Iterator[ResultLine | Unreadable]:
        state = self._state(refs)
        _, share = self._progress(state)
        done = math.floor(state["total"] * share)
        lines = iter_lines(self._blobs.read(f"{PREFIX}/{state['id']}/input.jsonl"))
        for index, raw in enumerate(lines):
            if index >= done:
                break
            if not raw.strip():
                continue
            yield self._result(orjson.loads(raw), state)

    def cleanup(self, refs: Mapping[str, str]) -> None:
        """Remove the mock's copy of the input and its state."""
        batch_id = refs.get("batch_id")
        if batch_id is not None:
            self._blobs.delete(f"{PREFIX}/{batch_id}/input.jsonl", self._state_key(batch_id))

    def close(self) -> None:
        """The mock holds no connections."""

    def _result(self, line: dict[str, Any], state: dict[str, Any]) -> ResultLine:
        custom_id = line["custom_id"]
        request_id = f"req_mock_{hashlib.blake2b(custom_id.encode(), digest_size=8).hexdigest()}"
        request = line.get("body") or {}
        refusal = _refusal(custom_id, state["endpoint"], request, state["failure_rate"])
        if refusal is not None:
            status, error = refusal
            return ResultLine(custom_id, {"status_code": status, "request_id": request_id, "body": {"error": error}})
        body = self._body(request, state, custom_id)
        return ResultLine(
            custom_id,
            {"status_code": 200, "request_id": request_id, "body": body},
            usage=usage_from_openai(body),
        )

    def _body(self, request: dict[str, Any], state: dict[str, Any], custom_id: str) -> dict[str, Any]:
        model = state["model"]
        created = int(state["created_at"])
        digest = hashlib.blake2b(custom_id.encode(), digest_size=12).hexdigest()
        endpoint = state["endpoint"]
        prompt_tokens = _tokens(request.get("messages") or request.get("input") or request.get("prompt") or "")
        if endpoint == "/v1/embeddings":
            seed = hashlib.sha256(orjson.dumps(request.get("input"))).digest()
            vector = [round((b - 127.5) / 127.5, 6) for b in seed[:8]]
            return {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": vector}],
                "model": model,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            }
        text = f"Mock reply to: {_last_user_text(request)[:60]}"
        reply_tokens = _tokens(text)
        cut = False
        generated = answers(endpoint, request)
        limit = output_limit(endpoint, request)  # for all the answers generated
        if limit is not None and reply_tokens > limit // generated:  # as a model does, each stops at the limit
            reply_tokens = limit // generated
            text, cut = text[: reply_tokens * 4], True
        finish_reason = "length" if cut else "stop"
        completion_tokens = reply_tokens * generated
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        if endpoint == "/v1/responses":
            return {
                "id": f"resp_mock_{digest}",
                "object": "response",
                "created_at": created,
                "model": model,
                "status": "incomplete" if cut else "completed",
                "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
                "output": [
                    {
                        "type": "message",
                        "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                ],
                "usage": {
                    "input_tokens": prompt_tokens,
                    "output_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "input_tokens_details": {"cached_tokens": 0},
                    "output_tokens_details": {"reasoning_tokens": 0},
                },
            }
        if endpoint == "/v1/completions":
            return {
                "id": f"cmpl-mock-{digest}",
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": i, "text": text, "finish_reason": finish_reason, "logprobs": None}
                    for i in range(choices(request))
                ],
                "usage": usage,
            }
        return {
            "id": f"chatcmpl-mock-{digest}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
                for i in range(generated)
            ],
            "usage": usage,
        }
