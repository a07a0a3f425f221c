"""The `azure` provider: Azure OpenAI Global-Batch deployments, through the OpenAI adapter.

Azure speaks OpenAI's batch API with differences this adapter absorbs: the resource endpoint as base
with either the `/openai/v1/` paths or the legacy `/openai/...?api-version=` ones, an `api-key` header (or
an Entra bearer token), the deployment name in every line's `body.model`, and answers with capitalised
statuses, ISO timestamps, null request counts, empty-string file ids, output lines without `id` and an
empty error file on success, all of which the OpenAI adapter's parsing tolerates.

An Entra token (`ad_token`) expires after about an hour, and an `api_key` may be rotated: each is a secret
reference read on every call through the Powertools cache, and read afresh when Azure answers 401, so a
token source refreshed outside batchgw (a rotation function writing the secret) is picked up at once.
batchgw does not fetch Entra tokens itself.
"""

from __future__ import annotations

from typing import Any

import httpx

from shared.providers.openai import OpenAIProvider, SecretAuth
from shared.providers.registry import ProviderDeps
from shared.routing import Deployment


def build(deployment: Deployment, deps: ProviderDeps) -> AzureProvider:
    return AzureProvider(deployment)


def screen(deployment: Deployment, body: dict[str, Any]) -> None:
    """Azure takes OpenAI requests as they are (with the deployment's name as model)."""


class AzureProvider(OpenAIProvider):
    def _auth(self) -> httpx.Auth | None:
        if self._deployment.ad_token:
            return SecretAuth(self._deployment.ad_token)
        return SecretAuth(self._deployment.api_key, header="api-key", scheme="") if self._deployment.api_key else None

    def _base_url(self) -> str:
        assert self._deployment.api_base is not None  # the routing file requires it for azure
        resource = self._deployment.api_base.rstrip("/")
        return f"{resource}/openai" if self._deployment.api_version else f"{resource}/openai/v1"

    def _params(self) -> dict[str, str]:
        return {"api-version": self._deployment.api_version} if self._deployment.api_version else {}

    def _endpoint(self, endpoint: str) -> str:
        # Azure's documented form, in lines and at creation alike
        return endpoint.removeprefix("/v1")
