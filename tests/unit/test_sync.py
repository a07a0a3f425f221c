"""Sync deployments in memory: the adapter's chunking and progress, the worker's pacing, stopping and resuming.

The worker's endpoint is an httpx MockTransport and its clock a fake one that its sleeps move forward, so
the pacing is measured exactly and no test waits for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise
from typing import Any

import httpx
import orjson
import pytest

from shared.deadline import Deadline
from shared.errors import ProviderError, PublishFailed
from shared.providers.base import ResultLine, TranslationError
from shared.providers.sync import (
    CHUNK_REQUESTS,
    ChunkTask,
    SyncProvider,
    lease_key,
    part_key,
    screen,
    stop_key,
)
from shared.routing import Deployment, RoutingConfig
from shared.storage.ports import FifoMessage
from shared.sync_worker import STOP_STARTING_SECONDS, Pace, SyncWorker
from tests.fakes.journal import MemoryJournal, submit_request
from tests.fakes.memory import MemoryBlobs, MemoryFifoQueue

BATCH = "batch_sync"
START = 1_700_000_000.0


def deployment(**limits: Any) -> Deployment:
    return Deployment(name="llama", provider="openai", mode="sync", api_base="http://sync.test/v1", **limits)


def content(n: int) -> bytes:
    return b"".join(
        orjson.dumps(
            {"custom_id": f"r{i}", "body": {"model": "llama", "messages": [{"role": "user", "content": f"q{i}"}]}},
            option=orjson.OPT_APPEND_NEWLINE,
        )
        for i in range(n)
    )


class Clock:
    """Monotonic seconds that only sleeps move."""

    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def wall(self) -> float:
        return START + self.now


type Answer = Callable[[dict[str, Any]], httpx.Response]


def answered(tokens: int = 10) -> Answer:
    def answer(body: dict[str, Any]) -> httpx.Response:
        usage = {"prompt_tokens": tokens - 2, "completion_tokens": 2, "total_tokens": tokens}
        return httpx.Response(200, json={"object": "chat.completion", "choices": [], "usage": usage})

    return answer


class Endpoint(SyncProvider):
    """The sync adapter whose endpoint is `answer`, recording each request's body and its start on `clock`."""

    def __init__(self, target: Deployment, world: World) -> None:
        super().__init__(target, world.blobs, world.queue, clock=world.clock.wall)
        self.world = world

    def client(self) -> httpx.Client:
        def handle(request: httpx.Request) -> httpx.Response:
            body = orjson.loads(request.content)
            self.world.sent.append((body["messages"][-1]["content"], self.world.clock.now))
            return self.world.answer(body)

        return httpx.Client(base_url="http://sync.test/v1", transport=httpx.MockTransport(handle))


class World:
    def __init__(self, target: Deployment) -> None:
        self.blobs = MemoryBlobs()
        self.queue = MemoryFifoQueue()
        self.clock = Clock()
        self.sent: list[tuple[str, float]] = []
        self.answer: Answer = answered()
        self.adapter = Endpoint(target, self)
        self.worker = SyncWorker(
            self.blobs,
            RoutingConfig(models=[target]),
            self,
            self.queue,
            clock=self.clock.wall,
            monotonic=lambda: self.clock.now,
            sleep=self.clock.sleep,
        )

    def get(self, target: Deployment) -> SyncProvider:
        return self.adapter

    def submit(self, n: int, journal: MemoryJournal | None = None) -> MemoryJournal:
        journal = journal or MemoryJournal(BATCH)
        request = submit_request(BATCH, "llama", content(n))
        self.adapter.submit(request, journal)
        return journal

    def tasks(self) -> list[ChunkTask]:
        return [ChunkTask.parse(m.body) for m in self.queue.sent]

    def run_all(self, deadline_seconds: float = 300) -> list[str]:
        return [self.worker.run(task, Deadline.after(deadline_seconds)) for task in self.tasks()]


@pytest.fixture
def world() -> World:
    return World(deployment(max_concurrency=3))


def test_submission_writes_chunks_and_queues_one_message_each_in_the_deployment_s_slots(world: World) -> None:
    journal = world.submit(2 * CHUNK_REQUESTS + 5)
    assert dict(journal.refs) == {
        "batch_id": f"sync-{BATCH}",
        "chunks": "3",
        "requests": str(2 * CHUNK_REQUESTS + 5),
        "chunk_size": str(CHUNK_REQUESTS),
        "sent": "3",
    }
    chunks = sorted(k for k in world.blobs.objects if "/in/" in k)
    assert [world.blobs.objects[k].count(b"\n") for k in chunks] == [CHUNK_REQUESTS, CHUNK_REQUESTS, 5]
    assert [m.dedup_id for m in world.queue.sent] == [f"{BATCH}-0", f"{BATCH}-1", f"{BATCH}-2"]
    # consecutive chunks take consecutive slots: three chunks, three message groups of this deployment
    assert len({m.group for m in world.queue.sent}) == 3
    assert all(m.group.startswith(f"{world.adapter._deployment.key}#") for m in world.queue.sent)


def test_resumed_submission_queues_only_the_chunks_not_recorded_as_sent(world: World) -> None:
    class FailingOnce(MemoryFifoQueue):
        calls = 0

        def send(self, messages: Sequence[FifoMessage]) -> None:
            FailingOnce.calls += 1
            if FailingOnce.calls == 2:
                raise PublishFailed("throttled")
            super().send(messages)

    flaky = FailingOnce()
    adapter = SyncProvider(world.adapter._deployment, world.blobs, flaky)
    journal = MemoryJournal(BATCH)
    request = submit_request(BATCH, "llama", content(25 * CHUNK_REQUESTS))
    with pytest.raises(ProviderError) as caught:
        adapter.submit(request, journal)
    assert caught.value.retryable and journal.refs["sent"] == "10"
    flaky.sent.clear()  # keep only what the resumed submission sends
    adapter.submit(request, journal)
    assert [m.dedup_id for m in flaky.sent] == [f"{BATCH}-{n}" for n in range(10, 25)]
    assert journal.refs["sent"] == "25"


def test_streamed_requests_are_refused_before_submission() -> None:
    with pytest.raises(TranslationError, match="stream"):
        screen(deployment(), {"model": "llama", "stream": True, "messages": []})
    screen(deployment(), {"model": "llama", "messages": []})


@pytest.mark.parametrize(
    ("limits", "tokens", "hold"),
    [
        ({}, 1_000, 0.0),
        ({"max_concurrency": 4, "rpm": 120}, 1_000, 2.0),  # each slot starts 30 a minute
        ({"max_concurrency": 4, "tpm": 60_000}, 500, 2.0),  # each slot uses 15,000 tokens a minute
        ({"max_concurrency": 4, "rpm": 120, "tpm": 60_000}, 100, 2.0),
        ({"max_concurrency": 2, "rpm": 60, "tpm": 6_000}, 1_000, 20.0),
    ],
)
def test_pace_holds_a_slot_for_its_share_of_the_rates(limits: dict[str, int], tokens: int, hold: float) -> None:
    assert Pace.of(deployment(**limits)).hold(tokens) == pytest.approx(hold)


def test_worker_spaces_a_slot_s_requests_by_its_share_of_rpm_across_chunks() -> None:
    # two slots, 60 a minute: each slot starts a request every 2 s, the next chunk of a slot no sooner
    world = World(deployment(max_concurrency=2, rpm=60))
    world.submit(CHUNK_REQUESTS + 3)
    assert world.run_all() == ["done", "done"]
    starts = [at for _, at in world.sent]
    assert len(starts) == CHUNK_REQUESTS + 3
    assert min(b - a for a, b in pairwise(starts)) == pytest.approx(2.0)
    assert world.clock.now == pytest.approx(2.0 * (CHUNK_REQUESTS + 3))


def test_worker_waits_out_each_answer_s_tokens_under_tpm() -> None:
    # one slot, 600 tokens a minute: an answer of 50 tokens keeps the slot 5 s
    world = World(deployment(max_concurrency=1, tpm=600))
    world.answer = answered(tokens=50)
    world.submit(4)
    world.run_all()
    assert [at for _, at in world.sent] == pytest.approx([0.0, 5.0, 10.0, 15.0])


def test_worker_writes_a_part_whose_name_carries_the_counts_and_refresh_sums_them(world: World) -> None:
    journal = world.submit(CHUNK_REQUESTS + 4)
    refused = {"q1", "q5", "q21"}

    def answer(body: dict[str, Any]) -> httpx.Response:
        if body["messages"][-1]["content"] in refused:
            return httpx.Response(400, json={"error": {"message": "bad request"}})
        return answered()(body)

    world.answer = answer
    first, second = world.tasks()
    world.worker.run(first, Deadline.after(300))
    assert f"{part_key(BATCH, 0, CHUNK_REQUESTS - 2, 2)}" in world.blobs.objects
    status = world.adapter.refresh(journal.refs)
    assert status.state == "in_progress" and status.counts is not None
    assert (status.counts.total, status.counts.completed, status.counts.failed) == (24, 18, 2)
    world.worker.run(second, Deadline.after(300))
    status = world.adapter.refresh(journal.refs)
    assert status.state == "completed" and status.counts is not None and status.counts.failed == 3
    results = list(world.adapter.results(journal.refs, [f"r{i}" for i in range(24)]))
    assert sorted(r.custom_id for r in results if isinstance(r, ResultLine)) == sorted(f"r{i}" for i in range(24))
    assert sum(1 for r in results if isinstance(r, ResultLine) and r.succeeded and r.usage is not None) == 21


def test_worker_stops_before_the_next_request_once_the_batch_is_cancelled(world: World) -> None:
    journal = world.submit(CHUNK_REQUESTS)

    def answer(body: dict[str, Any]) -> httpx.Response:
        if len(world.sent) == 3:
            world.adapter.cancel(journal.refs)
        return answered()(body)

    world.answer = answer
    assert world.run_all() == ["stopped"]
    assert len(world.sent) == 3 and part_key(BATCH, 0, 3, 0) in world.blobs.objects
    assert world.adapter.refresh(journal.refs).state == "cancelled"
    assert world.run_all() == ["stopped"] and len(world.sent) == 3


def test_cancelled_batch_stays_cancelling_while_a_worker_holds_a_lease(world: World) -> None:
    journal = world.submit(3)
    world.adapter.cancel(journal.refs)
    world.blobs.put(lease_key(BATCH, 0, int(world.clock.wall()) + 60), b"")
    assert world.adapter.refresh(journal.refs).state == "cancelling"
    world.clock.sleep(61)  # a worker killed by its timeout: its lease runs out
    assert world.adapter.refresh(journal.refs).state == "cancelled"


def test_worker_sends_nothing_past_the_batch_window(world: World) -> None:
    world.submit(3)
    (task,) = world.tasks()
    late = ChunkTask(task.batch_id, task.chunk, task.deployment, task.endpoint, expires_at=int(START) - 1)
    assert world.worker.run(late, Deadline.after(300)) == "stopped" and world.sent == []


def test_chunk_cut_by_the_deadline_is_queued_again_and_resumes_without_resending(world: World) -> None:
    world.submit(6)

    def slow(body: dict[str, Any]) -> httpx.Response:
        time.sleep(0.1)
        return answered()(body)

    world.answer = slow
    (task,) = world.tasks()
    assert world.worker.run(task, Deadline.after(STOP_STARTING_SECONDS + 0.25)) == "requeued"
    done = len(world.sent)
    assert 0 < done < 6
    requeued = world.queue.sent[-1]
    assert requeued.dedup_id == f"{BATCH}-0-{done}" and requeued.group == world.queue.sent[0].group
    assert world.worker.run(ChunkTask.parse(requeued.body), Deadline.after(300)) == "done"
    assert sorted(prompt for prompt, _ in world.sent) == [f"q{i}" for i in range(6)]
    parts = [k for k in world.blobs.objects if "/out/" in k]
    assert parts == [part_key(BATCH, 0, 6, 0)]  # the earlier part was replaced, the lease removed


def test_unanswered_request_fails_alone_with_a_provider_error(world: World) -> None:
    journal = world.submit(2)

    def down(body: dict[str, Any]) -> httpx.Response:
        if body["messages"][-1]["content"] == "q0":
            raise httpx.ConnectError("connection refused")
        return answered()(body)

    world.answer = down
    assert world.run_all() == ["done"]
    lines: Iterator[Any] = world.adapter.results(journal.refs, ["r0", "r1"])
    by_id = {line.custom_id: line for line in lines if isinstance(line, ResultLine)}
    assert by_id["r0"].error is not None and by_id["r0"].error["code"] == "provider_error"
    assert by_id["r1"].succeeded


def test_cleanup_removes_everything_of_the_batch(world: World) -> None:
    journal = world.submit(3)
    world.run_all()
    world.adapter.cancel(journal.refs)
    world.adapter.cleanup(journal.refs)
    assert world.blobs.objects == {} and stop_key(BATCH) not in world.blobs.objects


def test_a_chunk_delivered_again_sends_nothing_before_or_after_cleanup(world: World) -> None:
    journal = world.submit(5)
    assert world.run_all() == ["done"] and len(world.sent) == 5
    assert world.run_all() == ["done"] and len(world.sent) == 5  # its part is full
    world.adapter.cleanup(journal.refs)
    assert world.run_all() == ["gone"] and len(world.sent) == 5 and world.blobs.objects == {}
