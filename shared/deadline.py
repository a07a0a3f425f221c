"""Deadlines: how long the current invocation may still run, so no provider call outlives its Lambda.

A use case runs its work `within(deadline)`; the provider HTTP clients (shared/providers/http.py) cap each
attempt's timeout by what is left and stop retrying when it is gone. The poller also stops starting new
work near the end and leaves the rest to the next tick.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol


class _LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Deadline:
    """A moment on the monotonic clock by which the work must be done."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    @classmethod
    def of_invocation(cls, context: _LambdaContext, *, reserve: float) -> Deadline:
        """The invocation's own deadline, less `reserve` seconds kept for finishing up."""
        return cls.after(context.get_remaining_time_in_millis() / 1000 - reserve)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return self.remaining() <= 0


_current: ContextVar[Deadline | None] = ContextVar("deadline", default=None)


@contextmanager
def within(deadline: Deadline) -> Iterator[None]:
    """Run the block under `deadline` (per thread: each worker thread enters it itself)."""
    token = _current.set(deadline)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> Deadline | None:
    """The deadline the current block runs under, to hand to the threads it starts."""
    return _current.get()


def remaining() -> float | None:
    """Seconds left under the current deadline; None when there is none."""
    deadline = _current.get()
    return None if deadline is None else deadline.remaining()
