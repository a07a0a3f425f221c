"""The `azure` provider: Azure OpenAI Global-Batch deployments, through the OpenAI adapter.

Azure speaks OpenAI's batch API with differences this adapter absorbs: the resource endpoint as base
with either the `/openai/v1/` paths or the legacy `/openai/...?api-version=` ones, an `api-key` header (or
an Entra bearer token), the deployment name in every line's `body.model`, and answers with capitalised
statuses, ISO timestamps, null request counts, empty-string file ids, output lines without `id` and an
empty error file on success, all of which the OpenAI adapter's parsing tolerates.
"""

from __future__ import annotations

from shared.errors import InvalidRequest
from shared.providers.openai import OpenAIProvider
from shared.records import BatchInputInfo
from shared.routing import Deployment
from shared.secret_refs import resolve_secret

# what Azure's Global-Batch takes (its FAQ: no embeddings, no legacy completions)
ENDPOINTS = ("/v1/chat/completions", "/v1/responses")


def check_input(deployment: Deployment, info: BatchInputInfo) -> None:
    """Refuse endpoints Azure batch deployments do not serve."""
    if info.endpoint not in ENDPOINTS:
        raise InvalidRequest(
            f"The model '{info.model}' is served by an Azure OpenAI batch deployment, which does not take "
            f"{info.endpoint} batches (only {', '.join(ENDPOINTS)}).",
            code="unsupported_endpoint",
            param="endpoint",
        )


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
