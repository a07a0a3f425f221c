"""Traces: Powertools' Tracer around each handler when tracing is on (the template's EnableTracing), and
nothing of it when tracing is off.

Powertools' Tracer builds its X-Ray provider even when it is disabled, and importing the X-Ray SDK sets up
the SDK's sampler and its botocore session: 56 ms of the submitter's 890 ms of imports from its built
artifact, in every cold start of every function, for traces nobody asked for (344 ms in the dev venv).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, cast

from aws_lambda_powertools import Tracer


def enabled() -> bool:
    """Whether Powertools traces here, by its own rule (POWERTOOLS_TRACE_DISABLED, in Lambda and not an
    emulator), read without building its provider."""
    return not Tracer._is_tracer_disabled()


@cache
def _tracer() -> Tracer | None:
    return Tracer(service="batchgw") if enabled() else None


def traced[H: Callable[..., Any]](handler: H) -> H:
    """`handler` in an X-Ray subsegment when tracing is on (its response never captured: it may hold file
    contents); `handler` itself when it is off."""
    tracer = _tracer()
    return handler if tracer is None else cast(H, tracer.capture_lambda_handler(handler, capture_response=False))


def annotate(key: str, value: str) -> None:
    """Annotate the trace, when there is one."""
    tracer = _tracer()
    if tracer is not None:
        tracer.put_annotation(key=key, value=value)
