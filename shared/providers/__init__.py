"""Provider adapters behind one interface (base.BatchProvider); `build_provider` names the concrete class.

Each adapter module is imported only when a deployment uses it, so a function's cold start pays for
the providers it routes to and no others.
"""

from __future__ import annotations

from shared.providers.base import BatchProvider
from shared.records import BatchInputInfo
from shared.routing import Deployment
from shared.secret_refs import resolve_secret
from shared.storage.blobs import Blobs


def build_provider(deployment: Deployment, blobs: Blobs) -> BatchProvider:
    """The adapter for one deployment, its secrets resolved (and cached) on first use."""
    api_key = resolve_secret(deployment.api_key) if deployment.api_key else None
    match deployment.provider:
        case "mock":
            from shared.providers.mock import MockProvider

            return MockProvider(deployment, blobs)
        case "openai":
            from shared.providers.openai import OpenAIProvider

            return OpenAIProvider(deployment, api_key)
        case "azure":
            from shared.providers.azure import AzureProvider

            return AzureProvider(deployment, api_key)
        case "anthropic":
            from shared.providers.anthropic import AnthropicProvider

            return AnthropicProvider(deployment, api_key)
        case "vertex":
            from shared.providers.vertex import VertexProvider

            return VertexProvider(deployment, api_key)
        case "bedrock":
            from shared.providers.bedrock import BedrockProvider

            return BedrockProvider(deployment)


def check_input(deployment: Deployment, info: BatchInputInfo) -> None:
    """Refuse (InvalidRequest, a 400) an input that `deployment`'s provider cannot run, before a batch exists.

    Static: needs no credentials, so the API functions never hold provider secrets.
    """
    match deployment.provider:
        case "mock" | "openai":
            return
        case "azure":
            from shared.providers.azure import check_input as check_azure

            check_azure(deployment, info)
        case "anthropic":
            from shared.providers.anthropic import check_input as check_anthropic

            check_anthropic(deployment, info)
        case "vertex":
            from shared.providers.vertex import check_input as check_vertex

            check_vertex(deployment, info)
        case "bedrock":
            from shared.providers.bedrock import check_input as check_bedrock

            check_bedrock(deployment, info)
