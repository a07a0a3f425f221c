"""The `azure` provider: Azure OpenAI Global-Batch deployments, through the OpenAI adapter.

Azure speaks OpenAI's batch API with differences this adapter absorbs: the resource endpoint as base
with either the `/openai/v1/` paths or the legacy `/openai/...?api-version=` ones, an `api-key` header (or
an Entra bearer token), the deployment name in every line's `body.model`, and answers with capitalised
statuses, ISO timestamps, null request counts, empty-string file ids, output lines without `id` and an
empty error file on success, all of which the OpenAI adapter's parsing tolerates.
"""

from __future__ import annotations

from typing import Any

from shared.providers.openai import OpenAIProvider
from shared.providers.registry import ProviderDeps
from shared.routing import Deployment
from shared.secret_refs import resolve_secret


def build(deployment: Deployment, deps: ProviderDeps) -> AzureProvider:
    return AzureProvider(deployment, resolve_secret(deployment.api_key) if deployment.api_key else None)


def screen(deployment: Deployment, body: dict[str, Any]) -> None:
    """Azure takes OpenAI requests as they are (with the deployment's name as model)."""


class AzureProvider(OpenAIProvider):
    def __init__(self, deployment: Deployment, api_key: str | None) -> None:
        super().__init__(deployment, api_key)
        self._ad_token = resolve_secret(deployment.ad_token) if deployment.ad_token else None

    def _headers(self) -> dict[str, str]:
        if self._ad_token:
            return {"Authorization": f"Bearer {self._ad_token}"}
        return {"api-key": self._api_key} if self._api_key else {}

    def _base_url(self) -> str:
        assert self._deployment.api_base is not None  # the routing file requires it for azure
        resource = self._deployment.api_base.rstrip("/")
        return f"{resource}/openai" if self._deployment.api_version else f"{resource}/openai/v1"

    def _params(self) -> dict[str, str]:
        return {"api-version": self._deployment.api_version} if self._deployment.api_version else {}

    def _endpoint(self, endpoint: str) -> str:
        # Azure's documented form, in lines and at creation alike
        return endpoint.removeprefix("/v1")
