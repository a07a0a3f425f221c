"""Provider adapters behind one interface (base.BatchProvider); `build_provider` names the concrete class."""

from __future__ import annotations

from shared.errors import InvalidRequest
from shared.providers.base import BatchProvider
from shared.records import BatchInputInfo
from shared.routing import Deployment
from shared.secret_refs import resolve_secret
from shared.storage.blobs import Blobs


def build_provider(deployment: Deployment, blobs: Blobs) -> BatchProvider:
    """The adapter for one deployment. Imports only that provider's module, to keep cold starts lean."""
    api_key = resolve_secret(deployment.api_key) if deployment.api_key else None
    match deployment.provider:
        case "mock":
            from shared.providers.mock import MockProvider

            return MockProvider(deployment, blobs)
        case "openai":
            from shared.providers.openai import OpenAIProvider

            return OpenAIProvider(deployment, api_key)
        case other:
            raise NotImplementedError(f"provider {other!r} is not available yet")


def check_input(deployment: Deployment, info: BatchInputInfo) -> None:
    """Refuse (InvalidRequest) an input that `deployment`'s provider cannot run, before a batch exists.

    Static: needs no credentials, so the API functions never hold provider secrets.
    """
    match deployment.provider:
        case "mock" | "openai":
            return
        case other:
            raise InvalidRequest(f"provider {other!r} is not available yet", code="provider_unavailable")
