"""The routing file (CONTRACT.md section 5): which provider deployments serve each client-facing model name."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Sequence
from datetime import date
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.providers.specs import SPECS, SYNC, ProviderName, ProviderSpec


class RoutingError(Exception):
    """The routing file is missing or invalid; the message says where."""


class Pricing(BaseModel):
    """USD per million tokens, at the rates the deployment bills: batch rates, or a `mode: sync` deployment's
    standard ones. Overrides genai-prices for this deployment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(ge=0)
    cached_input_per_mtok: Decimal | None = Field(default=None, ge=0)


class Deployment(BaseModel):
    """One provider deployment of a model. Entries that share a `name` are deployments of one model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    provider: ProviderName
    model: str | None = None
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    api_base: str | None = None
    api_key: str | None = None
    weight: float = Field(default=1.0, gt=0)
    timeout: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    pricing: Pricing | None = None
    # `sync`: an OpenAI-compatible endpoint without a batch API, whose requests batchgw sends itself, at most
    # `max_concurrency` at once across every batch, within `rpm` requests and `tpm` tokens a minute
    mode: Literal["batch", "sync"] = "batch"
    max_concurrency: int = Field(default=8, ge=1, le=1000)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    # the output bound of a request whose line sets none (the budget reservation's maximum); default per provider
    max_output_tokens: int | None = Field(default=None, gt=0)
    # the most one image costs in input tokens here (the budget reservation's maximum); default per provider
    max_media_tokens: int | None = Field(default=None, gt=0)
    # requests per batch this deployment takes (Bedrock's are per-model quotas); default per provider
    min_requests: int | None = Field(default=None, ge=1)
    max_requests: int | None = Field(default=None, ge=1)
    # the model genai-prices prices this deployment as, when neither `model` nor `name` is one it knows
    price_model: str | None = None
    # azure: api_base is the resource endpoint; api_version selects the legacy ?api-version= paths (else
    # /openai/v1/); ad_token, a secret reference like api_key, sends an Entra bearer token instead of api-key
    api_version: str | None = None
    ad_token: str | None = None
    # vertex: Vertex AI at api_base (default https://{location}-aiplatform.googleapis.com), files through
    # the Cloud Storage JSON API at storage_base (default https://storage.googleapis.com)
    project: str | None = None
    location: str | None = None
    gcs_bucket: str | None = None
    storage_base: str | None = None
    # bedrock
    role_arn: str | None = None
    s3_bucket: str | None = None
    region: str | None = None
    # mock: seconds until every request is done, share of requests that fail, seconds until expiry
    delay: float = Field(default=3.0, ge=0)
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    expire_after: float | None = Field(default=None, ge=0)

    @field_validator("api_version", mode="before")
    @classmethod
    def _version_as_written(cls, value: object) -> object:
        # YAML reads an unquoted `api_version: 2024-10-21` as a date
        return value.isoformat() if isinstance(value, date) else value

    @model_validator(mode="after")
    def _provider_needs(self) -> Deployment:
        if self.mode == "sync" and self.provider != "openai":
            raise ValueError("mode sync is for OpenAI-compatible endpoints: provider openai")
        pacing = sorted(self.model_fields_set & {"max_concurrency", "rpm", "tpm"})
        if self.mode == "batch" and pacing:
            raise ValueError(f"{', '.join(pacing)} only apply to mode sync")
        missing = [f for f in self.spec.required if not getattr(self, f)]
        if missing:
            raise ValueError(f"provider {self.provider} needs {', '.join(missing)}")
        if self.request_limits[0] > self.request_limits[1]:
            raise ValueError("min_requests is above max_requests")
        return self

    @property
    def spec(self) -> ProviderSpec:
        return SYNC if self.mode == "sync" else SPECS[self.provider]

    @property
    def output_bound(self) -> int:
        """The most output tokens a request without its own limit may produce here."""
        return self.max_output_tokens or self.spec.max_output_tokens

    @property
    def media_bound(self) -> int:
        """The most input tokens one image may cost here."""
        return self.max_media_tokens or self.spec.max_media_tokens

    @property
    def request_limits(self) -> tuple[int, int]:
        """The fewest and most requests a batch may hold here."""
        return self.min_requests or self.spec.min_requests, self.max_requests or self.spec.max_requests

    @property
    def provider_model(self) -> str:
        """The provider's model or deployment name."""
        return self.model or self.name

    @cached_property
    def key(self) -> str:
        """A stable id for this deployment: batches record it and always come back to it."""
        if self.id:
            return self.id
        identity = "\0".join([self.name, self.provider, self.provider_model, self.api_base or ""])
        return f"{self.provider}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


class RoutingConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    models: list[Deployment] = Field(min_length=1)

    def deployments_for(self, name: str) -> list[Deployment]:
        """The deployments serving the client-facing model `name`, in file order."""
        return [d for d in self.models if d.name == name]

    def deployment(self, key: str) -> Deployment | None:
        return next((d for d in self.models if d.key == key), None)


def place(
    deployments: Sequence[Deployment], *, avoid: Collection[str] = (), rng: random.Random | None = None
) -> Deployment:
    """Pick one deployment of a model by weight, avoiding the keys in `avoid` while any other remains."""
    usable = [d for d in deployments if d.key not in avoid] or list(deployments)
    return (rng or random).choices(usable, weights=[d.weight for d in usable], k=1)[0]


def parse_routing(text: str, *, source: str) -> RoutingConfig:
    """Parse a routing file's text; errors name `source` and the offending entry."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RoutingError(f"{source}: not valid YAML: {exc}") from None
    try:
        config = RoutingConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise RoutingError(f"{source}: {problems}") from None
    keys = [d.key for d in config.models]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise RoutingError(f"{source}: deployments must differ; give each an `id` ({', '.join(duplicates)})")
    return config


BUILTIN_DEV = "builtin:dev"


def load_routing(source: str) -> RoutingConfig:
    """Load the routing file from a path, an SSM parameter (`ssm:/name`) or `builtin:dev` (the mock models)."""
    if source == BUILTIN_DEV:
        source = str(Path(__file__).with_name("dev_routing.yaml"))
    if source.startswith("ssm:"):
        from shared.secret_refs import resolve_secret

        return parse_routing(resolve_secret(source), source=source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingError(f"cannot read routing file {source}: {exc.strerror}") from None
    return parse_routing(text, source=source)
