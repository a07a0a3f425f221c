"""The dev stack's delivery workers, as an idle `batchgw dev` runs them: what they ask the emulator, how often."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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


def _queue(answers: Iterator[list[dict[str, Any]]], deleted: list[str]) -> type:
    class Queue:
        def __init__(self, sqs: Any, url: str) -> None:
            self.fifo = url.endswith(".fifo")

        def receive(self, count: int) -> list[dict[str, Any]]:
            return next(answers)

        def delete(self, message: dict[str, Any]) -> None:
            deleted.append(message["MessageId"])

    return Queue


def test_an_idle_fifo_worker_asks_ever_less_often_and_promptly_again_after_a_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # each of up to 16 workers of the sync queue asked five times a second: an idle dev stack used 60% of a core
    message = {"MessageId": "m-1", "ReceiptHandle": "r-1", "Body": "{}", "Attributes": {}}
    answers = iter([[], [], [], [], [], [], [], [message], [], []])
    deleted: list[str] = []
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(devstack, "DevQueue", _queue(answers, deleted))
    monkeypatch.setattr(devstack, "invoke", lambda function, event: None)
    stack = devstack.DevStack(config="dev")
    stop = _Stop(after=10)
    stack._stop = stop  # type: ignore[assignment]
    worker = next(f for f in template.functions() if f.logical_id == "SyncWorkerFunction")

    stack._deliver(worker, "http://127.0.0.1/000000000000/sync.fifo", 1)

    assert stop.waits == [0.2, 0.4, 0.8, 1.6, 3.2, 5, 5, 0.2, 0.4]
    assert deleted == ["m-1"]
