"""Provider adapters for deployments: built on first use, kept for the life of the process, closed together.

An adapter module is imported only when a deployment uses it (specs.py names it), so a function's cold
start pays for the providers it routes to and no others.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from shared.errors import InvalidRequest
from shared.providers.base import BatchProvider, TranslationError
from shared.routing import Deployment

if TYPE_CHECKING:
    from boto3.session import Session

    from shared.storage.ports import Blobs, FifoQueue


@dataclass(frozen=True, slots=True)
class ProviderDeps:
    """What adapters may use besides their deployment: the stack's bucket (the mock and sync deployments keep
    their state there), the AWS session (Bedrock's clients), the clock, and the queue sync deployments' chunks
    of requests wait in (None where the stack has none)."""

    blobs: Blobs
    session: Session
    clock: Callable[[], float]
    sync_queue: FifoQueue | None = None


class _AdapterModule(Protocol):
    def build(self, deployment: Deployment, deps: ProviderDeps) -> BatchProvider: ...

    def screen(self, deployment: Deployment, body: dict[str, Any]) -> None: ...


def _module(deployment: Deployment) -> _AdapterModule:
    return cast(_AdapterModule, importlib.import_module(deployment.spec.module))


def screen(deployment: Deployment, body: dict[str, Any]) -> str | None:
    """Why `deployment`'s provider cannot take this request body, or None when it can.

    Pure and static: it needs no credentials, so it runs before anything is sent.
    """
    try:
        _module(deployment).screen(deployment, body)
    except TranslationError as exc:
        return str(exc)
    return None


class ProviderSource(Protocol):
    """Where the use cases get a deployment's adapter."""

    def get(self, deployment: Deployment) -> BatchProvider: ...


class Providers:
    """The adapter of each deployment, built once and shared by the threads of a process."""

    def __init__(self, deps: ProviderDeps) -> None:
        self._deps = deps
        self._lock = threading.Lock()
        self._built: dict[str, BatchProvider] = {}

    def get(self, deployment: Deployment) -> BatchProvider:
        with self._lock:
            provider = self._built.get(deployment.key)
            if provider is None:
                provider = self._built[deployment.key] = _module(deployment).build(deployment, self._deps)
            return provider

    def close(self) -> None:
        with self._lock:
            built, self._built = list(self._built.values()), {}
        for provider in built:
            provider.close()


def check_input(deployment: Deployment, *, endpoint: str, model: str, requests: int) -> None:
    """Refuse (InvalidRequest, a 400) `requests` requests to `endpoint` for `model` that `deployment`'s
    provider cannot run, before a batch exists."""
    spec = deployment.spec
    if endpoint not in spec.endpoints:
        raise InvalidRequest(
            f"The model '{model}' is served by provider {spec.name}, whose batches take "
            f"{', '.join(spec.endpoints)}, not {endpoint}.",
            code="unsupported_endpoint",
            param="endpoint",
        )
    fewest, most = deployment.request_limits
    if not fewest <= requests <= most:
        raise InvalidRequest(
            f"The model '{model}' is served by provider {spec.name}, whose batches take between {fewest:,} "
            f"and {most:,} requests; this file has {requests:,}.",
            code="batch_size_out_of_range",
            param="input_file_id",
        )
