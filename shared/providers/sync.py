"""`mode: sync`: batches for an OpenAI-compatible endpoint without a batch API, which batchgw runs itself.

Submission cuts the requests into chunks of CHUNK_REQUESTS, writes each chunk to the bucket, and queues one
message per chunk on a FIFO queue (SQS) that feeds the sync worker (shared/sync_worker.py), which sends the
chunk's requests one by one to the endpoint's `/chat/completions` or `/embeddings` and writes their results
back as one part per chunk.

The concurrency cap is SQS's own guarantee: a chunk's message goes to message group `{deployment}#{slot}`,
one of `max_concurrency` slots, and a FIFO queue never hands out a message of a group while an earlier one
of that group is in flight. So across every batch and every worker, a deployment has at most
`max_concurrency` chunks, hence requests, under way. A batch's chunks start at a slot drawn from its id, so
small batches spread over the slots instead of queueing on the first.

Everything of a batch lives under `providers/sync/{batch id}/`:

    in/{chunk}.jsonl                        the chunk's requests, as {custom_id, body} lines
    out/{chunk}.{completed}.{failed}.jsonl  the chunk's results so far, as OpenAI output lines
    out/{chunk}.lease.{until}               a worker is sending the chunk's requests (until a Unix time)
    out/stop                                cancelled, or expired: no worker starts another request

so a refresh is one LIST of `out/`: the parts' names carry the counts. A cancel writes `stop`; the batch is
`cancelled` once no lease is live, i.e. no worker can still add a result (a worker takes its lease before
it looks for `stop`, so one that missed it shows in the LIST). Chunks still queued then are dropped by the
worker when they come up, without a request.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import orjson
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import ProviderError, PublishFailed
from shared.jsonl import iter_line_blocks
from shared.providers.base import (
    Journal,
    ProviderStatus,
    ResultLine,
    SubmitRequest,
    TranslationError,
    Unreadable,
    Verbatim,
)
from shared.providers.http import LazyClients, build_client
from shared.providers.openai_results import result_lines
from shared.providers.registry import ProviderDeps
from shared.records import Counts
from shared.routing import Deployment
from shared.secret_refs import resolve_secret
from shared.storage.ports import Blobs, FifoMessage, FifoQueue
from shared.threads import Pool

PREFIX: Final = "providers/sync"
# requests per chunk: one queue message, one worker invocation, one result part
CHUNK_REQUESTS: Final = 20
# chunk objects written at once while submitting
_WRITERS: Final = 8
# the most messages one SendMessageBatch takes; progress is recorded after each call
_SEND_PER_CALL: Final = 10
_PART = re.compile(r"/out/(\d+)\.(\d+)\.(\d+)\.jsonl$")
_LEASE = re.compile(r"/out/(\d+)\.lease\.(\d+)$")


def build(deployment: Deployment, deps: ProviderDeps) -> SyncProvider:
    return SyncProvider(deployment, deps.blobs, deps.sync_queue, clock=deps.clock)


def screen(deployment: Deployment, body: dict[str, Any]) -> None:
    """A sync endpoint takes any OpenAI request but a streamed one: a batch result is one answer."""
    if body.get("stream"):
        raise TranslationError("a streamed request (stream: true) cannot run in a batch")


# --- the layout, shared with the worker ---------------------------------------------------------------


def batch_prefix(batch_id: str) -> str:
    return f"{PREFIX}/{batch_id}"


def input_key(batch_id: str, chunk: int) -> str:
    return f"{batch_prefix(batch_id)}/in/{chunk:06d}.jsonl"


def part_key(batch_id: str, chunk: int, completed: int, failed: int) -> str:
    return f"{batch_prefix(batch_id)}/out/{chunk:06d}.{completed}.{failed}.jsonl"


def lease_key(batch_id: str, chunk: int, until: int) -> str:
    return f"{batch_prefix(batch_id)}/out/{chunk:06d}.lease.{until}"


def stop_key(batch_id: str) -> str:
    return f"{batch_prefix(batch_id)}/out/stop"


@dataclass(frozen=True, slots=True)
class Part:
    key: str
    completed: int
    failed: int

    @property
    def done(self) -> int:
        return self.completed + self.failed


@dataclass(slots=True)
class Progress:
    """What one LIST of a batch's `out/` (or of one chunk's keys in it) shows."""

    parts: dict[int, Part] = field(default_factory=dict)  # each chunk's fullest part
    stale_parts: list[str] = field(default_factory=list)  # a chunk's older parts, until its worker deletes them
    leases: dict[int, int] = field(default_factory=dict)  # chunk -> the latest lease's end (Unix seconds)
    stopped: bool = False

    def running(self, now: float) -> bool:
        return any(until > now for until in self.leases.values())


def progress(blobs: Blobs, batch_id: str, chunk: int | None = None) -> Progress:
    """The batch's parts, leases and stop marker, or those of one `chunk`."""
    found = Progress()
    out = f"{batch_prefix(batch_id)}/out/"
    for key in blobs.keys(out if chunk is None else f"{out}{chunk:06d}."):
        if key == stop_key(batch_id):
            found.stopped = True
        elif part := _PART.search(key):
            n, new = int(part[1]), Part(key, int(part[2]), int(part[3]))
            old = found.parts.get(n)
            if old is not None and old.done >= new.done:
                found.stale_parts.append(new.key)
                continue
            if old is not None:
                found.stale_parts.append(old.key)
            found.parts[n] = new
        elif lease := _LEASE.search(key):
            n = int(lease[1])
            found.leases[n] = max(found.leases.get(n, 0), int(lease[2]))
    return found


@dataclass(frozen=True, slots=True)
class ChunkTask:
    """A queue message: one chunk of one batch, for the sync worker."""

    batch_id: str
    chunk: int
    deployment: str
    endpoint: str
    expires_at: int

    def body(self) -> str:
        return orjson.dumps(
            {
                "batch_id": self.batch_id,
                "chunk": self.chunk,
                "deployment": self.deployment,
                "endpoint": self.endpoint,
                "expires_at": self.expires_at,
            }
        ).decode()

    @classmethod
    def parse(cls, body: str) -> ChunkTask:
        fields = orjson.loads(body)
        return cls(
            batch_id=str(fields["batch_id"]),
            chunk=int(fields["chunk"]),
            deployment=str(fields["deployment"]),
            endpoint=str(fields["endpoint"]),
            expires_at=int(fields["expires_at"]),
        )

    def message(self, deployment: Deployment, *, dedup_id: str) -> FifoMessage:
        """The chunk's message, in its deployment's slot: the chunks of a slot run one after another."""
        offset = int.from_bytes(hashlib.blake2b(self.batch_id.encode(), digest_size=4).digest())
        slot = (self.chunk + offset) % deployment.max_concurrency
        return FifoMessage(group=f"{deployment.key}#{slot}", dedup_id=dedup_id, body=self.body())


def chunk_size(refs: Mapping[str, str], chunk: int) -> int:
    """How many requests `chunk` holds."""
    size, requests = int(refs["chunk_size"]), int(refs["requests"])
    return min(size, requests - chunk * size)


def _batch_of(refs: Mapping[str, str]) -> str:
    return refs["batch_id"].removeprefix("sync-")


@contextmanager
def _aws(what: str) -> Iterator[None]:
    """The bucket or the queue failing is a retryable provider error: the core retries the step."""
    try:
        yield
    except (ClientError, BotoCoreError, PublishFailed) as exc:
        raise ProviderError(f"{what}: {exc}", retryable=True) from exc


class SyncProvider:
    """Batches of a sync deployment, run by the sync worker through its FIFO queue."""

    def __init__(
        self, deployment: Deployment, blobs: Blobs, queue: FifoQueue | None, clock: Callable[[], float] = time.time
    ) -> None:
        self._deployment = deployment
        self._blobs = blobs
        self._queue = queue
        self._clock = clock
        self._clients = LazyClients()

    def client(self) -> httpx.Client:
        """The endpoint's client, for the worker: it retries 408/429/5xx answers and timeouts with backoff,
        honouring Retry-After, within the current deadline."""

        def build() -> httpx.Client:
            api_key = resolve_secret(self._deployment.api_key) if self._deployment.api_key else None
            return build_client(
                base_url=(self._deployment.api_base or "").rstrip("/"),
                headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
                timeout=self._deployment.timeout,
                max_retries=self._deployment.max_retries,
            )

        return self._clients.get("endpoint", build)

    def close(self) -> None:
        self._clients.close()

    # --- submit ---------------------------------------------------------------------------------

    def submit(self, request: SubmitRequest, journal: Journal) -> None:
        """Record the run's id, write the chunks, then queue them ten at a time, recording how many are sent,
        so a resumed submission sends each chunk once (SQS's deduplication id covers a send whose record was
        lost, within its five minutes; a chunk sent twice anyway runs once, as its part is already full)."""
        if self._queue is None:
            raise ProviderError("this stack has no sync queue (BATCHGW_SYNC_QUEUE)", retryable=False)
        if "batch_id" not in journal.refs:
            journal.record(batch_id=f"sync-{request.batch_id}")
        if "chunks" not in journal.refs:
            with _aws("write the batch's chunks"):
                chunks, requests = self._write_chunks(request)
            journal.record(chunks=str(chunks), requests=str(requests), chunk_size=str(CHUNK_REQUESTS))
        chunks, sent = int(journal.refs["chunks"]), int(journal.refs.get("sent", "0"))
        for start in range(sent, chunks, _SEND_PER_CALL):
            end = min(start + _SEND_PER_CALL, chunks)
            tasks = [
                ChunkTask(request.batch_id, n, self._deployment.key, request.endpoint, request.expires_at)
                for n in range(start, end)
            ]
            with _aws("queue the batch's chunks"):
                self._queue.send([t.message(self._deployment, dedup_id=f"{t.batch_id}-{t.chunk}") for t in tasks])
            journal.record(sent=str(end))

    def _write_chunks(self, request: SubmitRequest) -> tuple[int, int]:
        """Write the requests as chunks, a few at once; returns (chunks, requests)."""
        chunks = requests = 0
        pending: list[Future[None]] = []
        with Pool(max_workers=_WRITERS, thread_name_prefix="sync-chunks") as pool:
            buffer = bytearray()
            for custom_id, body in request.open_lines():
                buffer += orjson.dumps({"custom_id": custom_id, "body": body}, option=orjson.OPT_APPEND_NEWLINE)
                requests += 1
                if requests % CHUNK_REQUESTS == 0:
                    pending.append(pool.submit(self._put, input_key(request.batch_id, chunks), bytes(buffer)))
                    chunks, buffer = chunks + 1, bytearray()
                    if len(pending) >= 2 * _WRITERS:  # keep a bounded number of chunks in memory
                        pending.pop(0).result()
            if buffer:
                pending.append(pool.submit(self._put, input_key(request.batch_id, chunks), bytes(buffer)))
                chunks += 1
            for future in pending:
                future.result()
        return chunks, requests

    def _put(self, key: str, data: bytes) -> None:
        self._blobs.put(key, data, "application/jsonl")

    # --- after submit ---------------------------------------------------------------------------

    def refresh(self, refs: Mapping[str, str]) -> ProviderStatus:
        with _aws("list the batch's results"):
            found = progress(self._blobs, _batch_of(refs))
        completed = sum(p.completed for p in found.parts.values())
        failed = sum(p.failed for p in found.parts.values())
        counts = Counts(total=int(refs["requests"]), completed=completed, failed=failed) if "requests" in refs else None
        if "chunks" in refs and all(
            n in found.parts and found.parts[n].done >= chunk_size(refs, n) for n in range(int(refs["chunks"]))
        ):
            return ProviderStatus("completed", counts)
        if found.stopped:
            return ProviderStatus("cancelling" if found.running(self._clock()) else "cancelled", counts)
        return ProviderStatus("in_progress", counts)

    def cancel(self, refs: Mapping[str, str]) -> None:
        """Stop dispatching: each worker looks for the marker before each request it sends."""
        with _aws("stop the batch"):
            self._blobs.put(stop_key(_batch_of(refs)), b"")

    def results(
        self, refs: Mapping[str, str], custom_ids: Sequence[str]
    ) -> Iterator[ResultLine | Verbatim | Unreadable]:
        batch_id = _batch_of(refs)
        with _aws("list the batch's results"):
            parts = sorted(progress(self._blobs, batch_id).parts.items())
        for _, part in parts:
            with _aws("read the batch's results"):
                raw = self._blobs.get(part.key)
            yield from result_lines(iter_line_blocks((raw or b"",)))

    def cleanup(self, refs: Mapping[str, str]) -> None:
        """Remove the batch's chunks, then its parts, leases and stop marker: a worker that still finds its
        chunk (a late duplicate message) finds the batch's part and marker too, and sends nothing again."""
        if "batch_id" not in refs:
            return
        prefix = batch_prefix(_batch_of(refs))
        with _aws("remove the batch's objects"):
            self._blobs.delete(*self._blobs.keys(f"{prefix}/in/"))
            self._blobs.delete(*self._blobs.keys(f"{prefix}/"))
