"""The unit layer's world: every use case composed over the in-memory ports and a scripted provider.

No socket, no moto: a test here runs in milliseconds, so the races (duplicate deliveries, concurrent
pollers, a cancel during completion) are tested by calling the use cases as the functions would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import pytest

from shared.auth import MASTER, Principal
from shared.batches import Batches
from shared.completion import Completion
from shared.errors import ProviderError
from shared.files import Files
from shared.keys import Keys
from shared.polling import Poller
from shared.providers.base import (
    BatchProvider,
    InputLine,
    Journal,
    LineUsage,
    ProviderStatus,
    ResultLine,
    SubmitRequest,
    Unreadable,
    Verbatim,
)
from shared.records import Counts, KeyRecord
from shared.routing import Deployment, RoutingConfig, parse_routing
from shared.settings import Settings
from shared.submission import Submission
from shared.uploads import Uploads
from shared.wire import CreateBatchRequest
from tests.fakes.memory import (
    MemoryBatchStore,
    MemoryBlobs,
    MemoryBus,
    MemoryClaimStore,
    MemoryDb,
    MemoryFileStore,
    MemoryKeyStore,
    MemoryUploadStore,
    MemoryWorkQueue,
)

ROUTING = """
models:
  - {name: gpt-4o-mini, provider: openai, api_key: x}
  - {name: two-ways, provider: openai, model: gpt-4o-mini, id: first, api_key: x}
  - {name: two-ways, provider: openai, model: gpt-4o-mini, id: second, api_key: x}
  - {name: claude-sonnet-4-5, provider: anthropic, api_key: x}
"""


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class ScriptedRun:
    """One provider batch of the scripted provider."""

    lines: list[InputLine]
    state: str = "in_progress"
    results: Sequence[ResultLine | Verbatim | Unreadable] | None = None
    cancelled: bool = False


@dataclass
class ScriptedProvider:
    """A provider whose answers the test writes: it keeps what it was sent and answers `state` until told."""

    runs: dict[str, ScriptedRun] = field(default_factory=dict)
    fail_submit: ProviderError | None = None
    fail_refresh: ProviderError | None = None
    fail_cleanup: ProviderError | None = None
    cleaned: list[str] = field(default_factory=list)
    submits: int = 0
    refreshes: int = 0
    lists: int = 0
    unlisted: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, request: SubmitRequest, journal: Journal) -> None:
        with self.lock:
            self.submits += 1
        if self.fail_submit is not None:
            raise self.fail_submit
        if "batch_id" in journal.refs:
            return
        provider_id = f"prov_{request.batch_id}"
        self.runs[provider_id] = ScriptedRun(list(request.open_lines()))
        journal.record(batch_id=provider_id)

    def refresh(self, refs: Mapping[str, str]) -> ProviderStatus:
        if self.fail_refresh is not None:
            raise self.fail_refresh
        with self.lock:
            self.refreshes += 1
        return self._status(refs["batch_id"])

    def _status(self, provider_batch_id: str) -> ProviderStatus:
        run = self.runs[provider_batch_id]
        done = len(run.results or []) if run.state == "in_progress" else len(run.lines)
        return ProviderStatus(run.state, Counts(total=len(run.lines), completed=done))  # type: ignore[arg-type]

    def cancel(self, refs: Mapping[str, str]) -> None:
        self.runs[refs["batch_id"]].cancelled = True

    def results(
        self, refs: Mapping[str, str], custom_ids: Sequence[str]
    ) -> Iterator[ResultLine | Verbatim | Unreadable]:
        run = self.runs[refs["batch_id"]]
        if run.results is not None:
            yield from run.results
            return
        for line in run.lines:
            yield ok_line(line.custom_id)

    def cleanup(self, refs: Mapping[str, str]) -> None:
        if self.fail_cleanup is not None:
            raise self.fail_cleanup
        self.cleaned.append(refs["batch_id"])

    def close(self) -> None:
        """Nothing to close."""

    def list_statuses(self, refs: Sequence[Mapping[str, str]]) -> dict[str, ProviderStatus]:
        """What a list page shows: every run but those `unlisted`; counted in `lists`."""
        self.lists += 1
        wanted = {r["batch_id"] for r in refs}
        return {pid: self._status(pid) for pid in self.runs if pid in wanted and pid not in self.unlisted}

    def finish(
        self, state: str = "completed", results: Sequence[ResultLine | Verbatim | Unreadable] | None = None
    ) -> None:
        """End every run with `state` (and these results, else one success per request)."""
        for run in self.runs.values():
            run.state = state
            if results is not None:
                run.results = results


def ok_line(custom_id: str, prompt: int = 10, completion: int = 5) -> ResultLine:
    body = {
        "id": f"chatcmpl-{custom_id}",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }
    return ResultLine(
        custom_id,
        {"status_code": 200, "request_id": "r", "body": body},
        usage=LineUsage(input_tokens=prompt, output_tokens=completion),
    )


class OneProvider:
    def __init__(self, provider: BatchProvider) -> None:
        self.provider = provider

    def get(self, deployment: Deployment) -> BatchProvider:
        return self.provider


@dataclass
class World:
    """The stores, the clock, the provider and every use case over them."""

    db: MemoryDb
    blobs: MemoryBlobs
    bus: MemoryBus
    clock: Clock
    provider: ScriptedProvider
    routing: RoutingConfig
    settings: Settings
    queue: MemoryWorkQueue = field(default_factory=MemoryWorkQueue)
    _delivered: int = field(default=0, init=False)

    @property
    def batch_store(self) -> MemoryBatchStore:
        return MemoryBatchStore(self.db)

    @property
    def key_store(self) -> MemoryKeyStore:
        return MemoryKeyStore(self.db)

    @property
    def files(self) -> Files:
        return Files(MemoryFileStore(self.db), self.blobs, clock=self.clock)

    @property
    def batches(self) -> Batches:
        return Batches(
            self.batch_store,
            self.key_store,
            MemoryClaimStore(self.db),
            self.files,
            self.bus,
            self.routing,
            clock=self.clock,
        )

    @property
    def uploads(self) -> Uploads:
        return Uploads(MemoryUploadStore(self.db), MemoryFileStore(self.db), self.blobs, self.files, clock=self.clock)

    @property
    def keys(self) -> Keys:
        return Keys(self.key_store, clock=self.clock)

    @property
    def submission(self) -> Submission:
        providers = OneProvider(self.provider)
        claims = MemoryClaimStore(self.db)
        return Submission(
            self.batch_store, claims, self.blobs, self.bus, providers, self.routing, self.settings, self.clock
        )

    @property
    def poller(self) -> Poller:
        providers = OneProvider(self.provider)
        return Poller(
            self.batch_store, self.files, self.bus, providers, self.routing, self.settings, self.queue, self.clock
        )

    @property
    def completion(self) -> Completion:
        return Completion(self.batch_store, self.blobs, self.bus, OneProvider(self.provider), self.routing, self.clock)

    def upload(self, content: bytes, owner: str = MASTER.owner) -> str:
        file = self.files.store(owner, purpose="batch", filename="in.jsonl", chunks=[content], expires_after=None)
        return file.id

    def create(self, content: bytes, principal: Principal = MASTER, **fields: Any) -> str:
        request = CreateBatchRequest(
            input_file_id=self.upload(content, principal.owner),
            endpoint="/v1/chat/completions",
            completion_window="24h",
            **fields,
        )
        return self.batches.create(principal, request).id

    def key(self, *, max_budget: Decimal | None = None) -> Principal:
        created = self.keys.create(MASTER, name="k", models=None, max_budget=None)
        if max_budget is not None:
            self.db.keys[created.record.id] = created.record.model_copy(update={"max_budget": max_budget})
        return Principal(owner=created.record.id, max_budget=max_budget)

    def key_record(self, principal: Principal) -> KeyRecord:
        return self.db.keys[principal.owner]

    def deliver_ended(self) -> None:
        """Run completion for every "Batch Ended" published so far that was not delivered yet."""
        for detail in self.bus.of("Batch Ended")[self._delivered :]:
            self.completion.complete(detail["batch_id"], without_results=detail["without_results"])
            self._delivered += 1


def chat_lines(custom_ids: Sequence[str], model: str = "gpt-4o-mini", **body: Any) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "custom_id": custom_id,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": model, "messages": [{"role": "user", "content": "hi"}], **body},
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        for custom_id in custom_ids
    )


@pytest.fixture
def world() -> World:
    settings = Settings(
        table_name="t",
        bucket_name="b",
        event_bus_name="e",
        config_source="memory",
        master_key_ref="sk-test",
        submit_stuck_seconds=60,
        finalize_stuck_seconds=60,
        max_redrives=3,
    )
    return World(
        db=MemoryDb(),
        blobs=MemoryBlobs(),
        bus=MemoryBus(),
        clock=Clock(),
        provider=ScriptedProvider(),
        routing=parse_routing(ROUTING, source="unit"),
        settings=settings,
    )
