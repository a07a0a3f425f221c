"""Worker threads that run in the context of the thread that hands them work.

A new thread starts with empty context variables, so what an invocation sets in its context (the deadline
its provider calls work under, shared/deadline.py; in `batchgw dev`, the function its log lines name) would
not reach the threads it starts. `Pool` runs each task in a copy of its submitter's context, as asyncio does
for the threads it hands work to.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class Pool(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose tasks (`map`'s too) run in a copy of their submitter's context."""

    def submit[**P, T](self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        context = contextvars.copy_context()
        return super().submit(lambda: context.run(fn, *args, **kwargs))
