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

    def share(self, fraction: float) -> Deadline:
        """A deadline `fraction` of the way from now to this one: a step's bounded part of what is left."""
        return Deadline.after(fraction * self.remaining())


_current: ContextVar[Deadline | None] = ContextVar("deadline", default=None)


@contextmanager
def within(deadline: Deadline) -> Iterator[None]:
    """Run the block under `deadline`, with the threads it hands work to through a `shared.threads.Pool`."""
    token = _current.set(deadline)
    try:
        yield
    finally:
        _current.reset(token)


def remaining() -> float | None:
    """Seconds left under the current deadline; None when there is none."""
    deadline = _current.get()
    return None if deadline is None else deadline.remaining()
