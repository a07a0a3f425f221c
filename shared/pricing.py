"""Batch prices: genai-prices in its batch price context, a deployment's `pricing` override winning.

Most models price linearly, so a batch's usage is summed and priced once. Models with tiered prices
(a long-context rate above some prompt size) are priced request by request, since the tier depends
on each request's own prompt. A model genai-prices does not know is priced 0 and flagged, never a crash.

Every provider batchgw routes to bills batches at half its standard price (reference/provider-apis.md).
Where genai-prices has a batch price for a model it is used as is; where it has only the standard one
(Azure's models, embeddings), that price is halved rather than billing batches at the standard rate.
The model is looked up by the deployment's `price_model`, its provider model, then its client-facing
name, since an Azure deployment name (`gpt-4o-mini-batch`) is not a model name.

A `mode: sync` deployment is not a batch API: batchgw sends its requests one by one to the endpoint's
synchronous API, which bills them at its standard price, so that is the price used (no batch context, no
halving); its `pricing` override, if any, holds its standard rates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from decimal import Decimal
from functools import lru_cache
from typing import Final

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from genai_prices.types import ModelPrice, TieredPrices

from shared.providers.base import LineUsage
from shared.records import Cost, ModelBounds, Usage
from shared.routing import Deployment

logger = logging.getLogger(__name__)

_USAGE_FIELDS: Final = tuple(Usage.model_fields)

BATCH_CONTEXT: Final = {"processing": "batch"}
BATCH_DISCOUNT: Final = Decimal("0.5")
_MTOK: Final = Decimal(1_000_000)
# A file part (a PDF) is read as each page's text and an image of it: OpenAI and Anthropic take at most 100
# pages a request, and Anthropic puts a page's text at 1,500 to 3,000 tokens
FILE_PAGES: Final = 100
PAGE_TEXT_TOKENS: Final = 3_000


def _price_usage(usage: Usage | LineUsage) -> PriceUsage:
    return PriceUsage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens,
    )


# where a model is looked up when its deployment names no provider (the mock): its maker's prices
_MAKERS: Final = (None, "openai", "anthropic", "google")


@lru_cache(maxsize=256)
def _model_price(models: tuple[str, ...], provider: str | None, *, batch: bool) -> tuple[ModelPrice, Decimal] | None:
    """genai-prices' price for the first of `models` it knows, and the factor that makes it the price billed:
    the batch price when `batch`, else the standard one."""
    sample = PriceUsage(input_tokens=1_000_000, output_tokens=1_000_000)
    for model, maker in ((m, p) for m in models for p in ((provider,) if provider else _MAKERS)):
        try:
            standard = calc_price(sample, model, provider_id=maker)
            if not batch:
                return standard.model_price, Decimal(1)
            batched = calc_price(sample, model, provider_id=maker, price_context=BATCH_CONTEXT)
        except LookupError:
            continue
        has_batch_rate = batched.total_price != standard.total_price
        return batched.model_price, Decimal(1) if has_batch_rate else BATCH_DISCOUNT
    return None


def _is_tiered(price: ModelPrice) -> bool:
    return any(isinstance(value, TieredPrices) for value in vars(price).values())


class BatchPricer:
    """Adds up one batch's usage line by line and prices it at its deployment's rates (batch rates but for
    a sync deployment)."""

    def __init__(self, deployment: Deployment) -> None:
        self._override = deployment.pricing
        refs = (deployment.price_model, deployment.provider_model, deployment.name)
        models = tuple(dict.fromkeys(ref for ref in refs if ref))
        batch = deployment.mode == "batch"
        found = None if self._override else _model_price(models, deployment.spec.price_provider, batch=batch)
        self._price: ModelPrice | None = found[0] if found else None
        self._factor = found[1] if found else Decimal(1)
        self._per_request = self._price is not None and _is_tiered(self._price)
        self._totals = dict.fromkeys(_USAGE_FIELDS, 0)
        self._tiered = Cost()

    @property
    def usage(self) -> Usage:
        """The usage added so far."""
        return Usage(**self._totals)

    @property
    def known(self) -> bool:
        """False when the model has no price: its cost is recorded as 0."""
        return self._override is not None or self._price is not None

    def add(self, usage: LineUsage) -> None:
        totals = self._totals
        totals["input_tokens"] += usage.input_tokens
        totals["cached_tokens"] += usage.cached_tokens
        totals["cache_write_tokens"] += usage.cache_write_tokens
        totals["output_tokens"] += usage.output_tokens
        totals["reasoning_tokens"] += usage.reasoning_tokens
        if self._per_request and self._price is not None:
            price = self._price.calc_price(_price_usage(usage))
            self._tiered = Cost(
                input=self._tiered.input + price["input_price"],
                output=self._tiered.output + price["output_price"],
            )

    def add_all(self, usages: Iterable[LineUsage | None]) -> None:
        """Add many lines' usage (None for a line without), each count summed over all at once."""
        given = [usage for usage in usages if usage is not None]
        if self._per_request:
            for usage in given:
                self.add(usage)
            return
        if given:
            totals = self._totals
            for name, total in zip(LineUsage._fields, map(sum, zip(*given, strict=True)), strict=True):
                totals[name] += total

    def cost(self) -> Cost:
        """The batch's cost so far."""
        if self._override is not None:
            return self._override_cost()
        if self._price is None:
            return Cost()
        if self._per_request:
            cost = self._tiered
        else:
            price = self._price.calc_price(_price_usage(self.usage))
            cost = Cost(input=price["input_price"], output=price["output_price"])
        return Cost(input=cost.input * self._factor, output=cost.output * self._factor)

    def _override_cost(self) -> Cost:
        assert self._override is not None
        usage, rates = self.usage, self._override
        cached_rate = rates.cached_input_per_mtok if rates.cached_input_per_mtok is not None else rates.input_per_mtok
        uncached = usage.input_tokens - usage.cached_tokens
        return Cost(
            input=(uncached * rates.input_per_mtok + usage.cached_tokens * cached_rate) / _MTOK,
            output=usage.output_tokens * rates.output_per_mtok / _MTOK,
        )


def output_bound(deployment: Deployment, bounds: ModelBounds) -> int:
    """The most output tokens requests with these bounds may produce on `deployment`."""
    return bounds.output_tokens + bounds.unbounded_lines * deployment.output_bound


def input_bound(deployment: Deployment, bounds: ModelBounds) -> int:
    """The most input tokens requests with these bounds may cost on `deployment`: each byte a token, and each
    image the most an image costs there (its `max_media_tokens`), each file (a PDF) FILE_PAGES of such
    pages with PAGE_TEXT_TOKENS of text each."""
    media = deployment.media_bound
    return bounds.input_tokens + bounds.images * media + bounds.files * FILE_PAGES * (media + PAGE_TEXT_TOKENS)


def max_cost(deployment: Deployment, bounds: ModelBounds) -> Decimal:
    """The most a batch with these bounds can cost on `deployment`, at its prices: its input bound, every
    request its whole output limit (the deployment's `max_output_tokens` where its line sets none).

    Priced as one request, so a tiered model's long-context rate applies, which keeps it a bound.
    """
    pricer = BatchPricer(deployment)
    pricer.add(LineUsage(input_tokens=input_bound(deployment, bounds), output_tokens=output_bound(deployment, bounds)))
    return pricer.cost().total


def input_cost(deployment: Deployment, tokens: int) -> Decimal:
    """What `tokens` prompt tokens cost on `deployment` at its prices."""
    pricer = BatchPricer(deployment)
    pricer.add(LineUsage(input_tokens=tokens))
    return pricer.cost().input
