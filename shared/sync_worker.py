"""The sync worker: runs one chunk of a sync deployment's batch (shared/providers/sync.py) against its endpoint.

Each request of the chunk is sent on its own to `{api_base}/chat/completions` or `/embeddings`, by a client
that retries 408/429/5xx answers and timeouts with backoff, honouring Retry-After, within the invocation's
deadline (shared/providers/http.py). Before each request the worker looks for the batch's stop marker (a
cancel, or an expiry, which the core turns into a cancel) and past the batch's window, and stops there.

Results go to the chunk's one part, replaced as it grows (at the end, and every SAVE_SECONDS on the way,
so `request_counts` moves as requests finish); a redelivered chunk resumes from its part and never resends
a request that has a result. A chunk the invocation's deadline cuts short is queued again, in its slot.

Rates hold without a shared scheduler. The chunks of one slot run one after another (FIFO message groups),
so each slot paces itself: a request keeps its slot for at least `60 * max_concurrency / rpm` seconds from
its start, and, once answered, for `60 * max_concurrency / tpm` seconds per token it used; the worker waits
that out before the next request, and before letting go of the chunk, so the next chunk of the slot, on any
worker, starts no sooner. Each of the `max_concurrency` slots then starts at most `rpm / max_concurrency`
requests and uses about `tpm / max_concurrency` tokens a minute, and the deployment stays within both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import httpx
import orjson

from shared import deadline as deadlines
from shared.deadline import Deadline, within
from shared.providers.http import OutOfTime
from shared.providers.registry import ProviderSource
from shared.providers.sync import (
    ChunkTask,
    Part,
    SyncProvider,
    input_key,
    lease_key,
    part_key,
    progress,
    stop_key,
)
from shared.results import BadUsage, usage_from_openai
from shared.routing import Deployment, RoutingConfig
from shared.storage.ports import Blobs, FifoQueue

logger = logging.getLogger(__name__)

# how often a chunk's part is rewritten while its requests are being sent
SAVE_SECONDS: Final = 10.0
# no request is started with less of the invocation left than this
STOP_STARTING_SECONDS: Final = 5.0
# how long a lease outlives the invocation's deadline (a worker killed by its timeout leaves one behind)
LEASE_MARGIN_SECONDS: Final = 30


@dataclass(frozen=True, slots=True)
class Pace:
    """How long each request keeps its slot, so that a deployment stays within its rpm and tpm."""

    request_seconds: float = 0.0
    token_seconds: float = 0.0

    @classmethod
    def of(cls, deployment: Deployment) -> Pace:
        slots = deployment.max_concurrency
        return cls(
            request_seconds=60 * slots / deployment.rpm if deployment.rpm else 0.0,
            token_seconds=60 * slots / deployment.tpm if deployment.tpm else 0.0,
        )

    def hold(self, tokens: int) -> float:
        """Seconds from a request's start before its slot starts another, given the tokens it used."""
        return max(self.request_seconds, tokens * self.token_seconds)


@dataclass(slots=True)
class _Result:
    line: bytes
    succeeded: bool


class SyncWorker:
    """Runs chunks of sync deployments' batches; one per queue message."""

    def __init__(
        self,
        blobs: Blobs,
        routing: RoutingConfig,
        providers: ProviderSource,
        queue: FifoQueue,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._blobs = blobs
        self._routing = routing
        self._providers = providers
        self._queue = queue
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep

    def run(self, task: ChunkTask, deadline: Deadline) -> str:
        """Send the chunk's requests that have no result yet; returns what became of the chunk: `done`,
        `stopped` (cancelled or expired), `requeued` (out of time) or `gone` (its batch or deployment is)."""
        deployment = self._routing.deployment(task.deployment)
        provider = self._providers.get(deployment) if deployment is not None else None
        if deployment is None or not isinstance(provider, SyncProvider):
            logger.warning("a chunk whose deployment is gone; dropped", extra={"batch_id": task.batch_id})
            return "gone"
        # The lease is taken before anything is read: a refresh that sees no lease knows that every worker still
        # to come will see the stop marker. The input is read last: cleanup removes the inputs before the rest,
        # so a worker that finds its input has seen the batch's part and marker as they were.
        lease = lease_key(task.batch_id, task.chunk, int(self._clock() + deadline.remaining()) + LEASE_MARGIN_SECONDS)
        self._blobs.put(lease, b"")
        try:
            with within(deadline):
                return self._run(task, deployment, provider.client(), deadline)
        finally:
            self._blobs.delete(lease)

    def _stopped(self, task: ChunkTask) -> bool:
        return self._blobs.get(stop_key(task.batch_id)) is not None

    def _run(self, task: ChunkTask, deployment: Deployment, client: httpx.Client, deadline: Deadline) -> str:
        if self._stopped(task):
            return "stopped"
        found = progress(self._blobs, task.batch_id, task.chunk)
        saved = found.parts.get(task.chunk)
        results = self._read_part(saved)
        raw = self._blobs.get(input_key(task.batch_id, task.chunk))
        if raw is None:
            logger.warning("a chunk whose batch is gone; dropped", extra={"batch_id": task.batch_id})
            return "gone"
        requests = [orjson.loads(line) for line in raw.split(b"\n") if line.strip()]
        pace, ready_at, saved_at = Pace.of(deployment), 0.0, self._monotonic()
        outcome = "done"
        for request in requests:
            custom_id = request["custom_id"]
            if custom_id in results:
                continue
            self._wait(ready_at, deadline)
            if 0 < task.expires_at <= self._clock() or self._stopped(task):
                outcome = "stopped"
                break
            if deadline.remaining() < STOP_STARTING_SECONDS:
                outcome = "requeued"
                break
            started = self._monotonic()
            answered = self._send(client, deployment, task.endpoint, custom_id, request["body"])
            if answered is None:  # cut by the invocation's deadline: sent again by the requeued chunk
                outcome = "requeued"
                break
            results[custom_id], tokens = answered
            ready_at = started + pace.hold(tokens)
            if self._monotonic() - saved_at >= SAVE_SECONDS:
                saved, saved_at = self._save(task, results, saved, found.stale_parts), self._monotonic()
        self._save(task, results, saved, found.stale_parts)
        if outcome != "stopped":
            self._wait(ready_at, deadline)  # the slot's next chunk starts no sooner than this one's pace allows
        if outcome == "requeued":
            self._queue.send([task.message(deployment, dedup_id=f"{task.batch_id}-{task.chunk}-{len(results)}")])
        return outcome

    def _wait(self, ready_at: float, deadline: Deadline) -> None:
        """Sleep until `ready_at` (monotonic), but not into the time kept for finishing up."""
        wait = min(ready_at - self._monotonic(), deadline.remaining() - STOP_STARTING_SECONDS)
        if wait > 0:
            self._sleep(wait)

    def _read_part(self, part: Part | None) -> dict[str, _Result]:
        if part is None:
            return {}
        results = {}
        for line in (self._blobs.get(part.key) or b"").split(b"\n"):
            if line.strip():
                parsed = orjson.loads(line)
                response = parsed.get("response")
                succeeded = isinstance(response, dict) and 200 <= response.get("status_code", 0) < 300
                results[parsed["custom_id"]] = _Result(line + b"\n", succeeded)
        return results

    def _save(self, task: ChunkTask, results: dict[str, _Result], saved: Part | None, stale: list[str]) -> Part | None:
        """Write the chunk's results as its part (its name carries the counts) and remove the one it replaces."""
        completed = sum(1 for r in results.values() if r.succeeded)
        failed = len(results) - completed
        part = Part(part_key(task.batch_id, task.chunk, completed, failed), completed, failed)
        if not results or (saved is not None and saved.key == part.key):
            return saved
        self._blobs.put(part.key, b"".join(r.line for r in results.values()), "application/jsonl")
        old = [saved.key] if saved is not None else []
        self._blobs.delete(*old, *stale)
        stale.clear()
        return part

    def _send(
        self, client: httpx.Client, deployment: Deployment, endpoint: str, custom_id: str, body: dict[str, Any]
    ) -> tuple[_Result, int] | None:
        """One request's output line and the tokens it used; None when the deadline cut it."""
        try:
            response = client.post(endpoint.removeprefix("/v1"), json={**body, "model": deployment.provider_model})
        except httpx.TransportError as exc:
            left = deadlines.remaining()
            if isinstance(exc, OutOfTime) or (left is not None and left <= 0):
                return None
            error = {"code": "provider_error", "message": f"The endpoint did not answer: {type(exc).__name__}: {exc}"}
            failed: dict[str, Any] = {"custom_id": custom_id, "response": None, "error": error}
            return _Result(orjson.dumps(failed, option=orjson.OPT_APPEND_NEWLINE), False), 0
        try:
            answer: Any = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            answer = response.text
        request_id = response.headers.get("x-request-id") or ""
        line = {
            "custom_id": custom_id,
            "response": {"status_code": response.status_code, "request_id": request_id, "body": answer},
            "error": None,
        }
        tokens = 0
        if response.is_success:
            try:
                usage = usage_from_openai(answer)
            except BadUsage:
                usage = None  # the line becomes a provider_error at completion; it paces as if it used no tokens
            tokens = usage.input_tokens + usage.output_tokens if usage is not None else 0
        return _Result(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE), response.is_success), tokens
