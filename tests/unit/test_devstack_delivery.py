"""The dev stack's delivery workers, as an idle `batchgw dev` runs them: what they ask the emulator, how often."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from batchgw import devstack, template


class _Stop:
    """The stack's stop event, recording each wait instead of sleeping; set once `after` waits or receives."""

    def __init__(self, after: int) -> None:
        self.waits: list[float] = []
        self._left = after

    def is_set(self) -> bool:
        self._left -= 1
        return self._left < 0

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return False


class _Queue:
    """A delivery worker's queue whose receives answer `answers` in turn."""

    def __init__(self, url: str, answers: Iterator[list[dict[str, Any]]], deleted: list[str]) -> None:
        self.url, self.fifo = url, url.endswith(".fifo")
        self._answers, self._deleted = answers, deleted

    def receive(self, count: int) -> list[dict[str, Any]]:
        return next(self._answers)

    def delete(self, message: dict[str, Any]) -> None:
        self._deleted.append(message["MessageId"])


def test_an_idle_fifo_worker_asks_ever_less_often_and_promptly_again_after_a_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # each of up to 16 workers of the sync queue asked five times a second: an idle dev stack used 60% of a core
    message = {"MessageId": "m-1", "ReceiptHandle": "r-1", "Body": "{}", "Attributes": {}}
    answers = iter([[], [], [], [], [], [], [], [message], [], []])
    deleted: list[str] = []
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(devstack, "deliver", lambda function, event, then="": True)
    stack = devstack.DevStack(config="dev")
    stop = _Stop(after=10)
    stack._stop = stop  # type: ignore[assignment]
    worker = next(f for f in template.functions() if f.logical_id == "SyncWorkerFunction")

    queue = _Queue("http://127.0.0.1/000000000000/sync.fifo", answers, deleted)
    stack._deliver(worker, queue, 1)  # type: ignore[arg-type]  # a DevQueue's shape

    assert stop.waits == [0.2, 0.4, 0.8, 1.6, 3.2, 5, 5, 0.2, 0.4]
    assert deleted == ["m-1"]


def test_the_delivery_workers_start_from_one_boto3_session(monkeypatch: pytest.MonkeyPatch) -> None:
    # each of the 30 workers made its own session, which loads every model and rule set again: `batchgw dev`
    # took 7.3 s and 306 MB to start, against 3.8 s and 121 MB with one session
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    sessions: list[object] = []
    made = boto3.session.Session.__init__

    def counted(self: boto3.session.Session, *args: Any, **kwargs: Any) -> None:
        sessions.append(self)
        made(self, *args, **kwargs)

    monkeypatch.setattr(boto3.session.Session, "__init__", counted)
    stack = devstack.DevStack(config="dev")
    stack._stop.set()  # each worker returns as soon as it starts
    queues = {f.logical_id: f"http://127.0.0.1/000000000000/{f.logical_id}" for f in template.functions()}
    queues.update(
        {f"{f.logical_id}:SQS": f"http://127.0.0.1/000000000000/{f.logical_id}.fifo" for f in template.functions()}
    )

    stack.start_workers(queues)
    stack.stop()

    assert len(stack._threads) >= 16
    assert len(sessions) == 1
