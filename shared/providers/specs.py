"""What batchgw knows about each provider, in one place: its adapter module, the routing keys it needs,
the batch endpoints it serves, its genai-prices id, and its limits. A `mode: sync` deployment (an
OpenAI-compatible endpoint without a batch API, which batchgw runs itself) has a spec of its own: SYNC.

Adapter modules are named, not imported: a function's cold start imports only the adapters its routing
file uses (shared/providers/__init__.py). Each adapter module offers `build(deployment, deps)` and
`screen(deployment, body)` (shared/providers/base.py has the interface they build).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

ProviderName = Literal["openai", "azure", "anthropic", "vertex", "bedrock", "mistral", "together", "mock"]

ALL_ENDPOINTS: Final = ("/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/responses")
CHAT: Final = ("/v1/chat/completions",)

# Images cost tokens by their size, not by the bytes of their URL: the most one image costs on each provider's
# models, as they document it. OpenAI (the default): gpt-4o-mini at high detail, 2,833 + 8 tiles of 5,667
# (its images and vision guide; no OpenAI model charges more). Claude (Anthropic, Bedrock): 4,784, an image
# of 2,576 pixels on its long edge, which its newest models read (earlier ones scale images down to about
# 1,600 tokens). Gemini (Vertex) cuts an image into 258-token tiles of 768x768 pixels and documents no
# ceiling: 8,256 (32 tiles, a 6,144 x 3,072 image) is batchgw's; set `max_media_tokens` to what yours cost.
CLAUDE_IMAGE: Final = 4_784


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: ProviderName
    module: str
    endpoints: tuple[str, ...]
    # genai-prices' provider id (None: priced as whoever makes the model)
    price_provider: str | None
    # a request's output bound when its line sets none (routing key `max_output_tokens` overrides it)
    max_output_tokens: int
    required: tuple[str, ...] = ()
    # requests per batch the provider takes (routing keys `min_requests`/`max_requests` override them)
    min_requests: int = 1
    max_requests: int = 50_000
    # the most one image costs in input tokens on the provider's models (routing key `max_media_tokens`
    # overrides it); a file (document) is bounded as FILE_PAGES such pages with their text (shared/pricing.py)
    max_media_tokens: int = 48_169


SPECS: Final[dict[ProviderName, ProviderSpec]] = {
    spec.name: spec
    for spec in (
        # OpenAI's largest output among batch models it serves without reasoning (gpt-4.1: 32,768)
        ProviderSpec("openai", "shared.providers.openai", ALL_ENDPOINTS, "openai", 32_768),
        # Azure's Global-Batch serves chat and responses only (its batch FAQ)
        ProviderSpec(
            "azure", "shared.providers.azure", ("/v1/chat/completions", "/v1/responses"), "azure", 32_768, ("api_base",)
        ),
        # Anthropic requires max_tokens: batchgw sends this when a line sets none, so it is exact
        ProviderSpec(
            "anthropic", "shared.providers.anthropic", CHAT, "anthropic", 4_096, max_media_tokens=CLAUDE_IMAGE
        ),
        # sent as generationConfig.maxOutputTokens when a line sets none, so it is exact
        ProviderSpec(
            "vertex",
            "shared.providers.vertex",
            CHAT,
            "google",
            8_192,
            ("project", "gcs_bucket"),
            max_media_tokens=8_256,
        ),
        # Bedrock's batch quota: at least 100 and at most 50,000 records per job, per model by default; the
        # output bound is sent (Claude's max_tokens, Converse's maxTokens) when a line sets none, so it is exact
        ProviderSpec(
            "bedrock",
            "shared.providers.bedrock",
            CHAT,
            "aws",
            4_096,
            ("role_arn", "s3_bucket"),
            min_requests=100,
            max_requests=50_000,
            max_media_tokens=CLAUDE_IMAGE,
        ),
        # Mistral's batch jobs serve chat and embeddings among OpenAI's endpoints; a bound, not sent
        ProviderSpec("mistral", "shared.providers.mistral", (*CHAT, "/v1/embeddings"), "mistral", 32_768),
        # Together's batches serve chat only (and audio); a bound, not sent
        ProviderSpec("together", "shared.providers.together", CHAT, "together", 32_768),
        ProviderSpec("mock", "shared.providers.mock", ALL_ENDPOINTS, None, 1_024),
    )
}

# `mode: sync`: batchgw sends each request to the endpoint's synchronous API itself (shared/providers/sync.py).
# Its models are anyone's (vLLM, DeepSeek, a fine-tune server), so genai-prices is asked by model alone.
SYNC: Final = ProviderSpec(
    "openai", "shared.providers.sync", ("/v1/chat/completions", "/v1/embeddings"), None, 32_768, ("api_base",)
)
