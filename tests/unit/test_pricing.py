"""Batch pricing: genai-prices at batch rates, overrides, tiered models, unknown models."""

from __future__ import annotations

from decimal import Decimal

from shared.pricing import BatchPricer, input_bound, input_cost, max_cost
from shared.providers.base import LineUsage
from shared.records import ModelBounds
from shared.routing import Deployment, Pricing


def test_gpt_4o_mini_is_priced_at_openai_batch_rates() -> None:
    pricer = BatchPricer(Deployment(name="gpt-4o-mini", provider="openai"))
    pricer.add(LineUsage(input_tokens=600_000, output_tokens=100_000))
    pricer.add(LineUsage(input_tokens=400_000, output_tokens=100_000))
    cost = pricer.cost()
    # OpenAI's batch price for gpt-4o-mini: $0.075 in, $0.30 out per million tokens (half the standard price)
    assert cost.input == Decimal("0.075") and cost.output == Decimal("0.06") and pricer.known


def test_override_wins_and_prices_cached_tokens_at_their_rate() -> None:
    pricing = Pricing(input_per_mtok=Decimal(2), output_per_mtok=Decimal(8), cached_input_per_mtok=Decimal("0.5"))
    pricer = BatchPricer(Deployment(name="x", provider="openai", model="gpt-4o-mini", pricing=pricing))
    pricer.add(LineUsage(input_tokens=1_000_000, cached_tokens=400_000, output_tokens=500_000))
    cost = pricer.cost()
    assert cost.input == Decimal("1.4") and cost.output == Decimal(4) and cost.total == Decimal("5.4")


def test_unknown_model_is_priced_zero_and_flagged() -> None:
    pricer = BatchPricer(Deployment(name="x", provider="openai", model="no-such-model-anywhere"))
    pricer.add(LineUsage(input_tokens=1000, output_tokens=1000))
    assert pricer.cost().total == 0 and not pricer.known
    assert pricer.usage.total_tokens == 2000


def test_tiered_model_prices_each_request_by_its_own_prompt() -> None:
    # claude-sonnet-4-5 charges a long-context rate above 200k prompt tokens: two 150k prompts stay at base
    pricer = BatchPricer(Deployment(name="claude-sonnet-4-5", provider="anthropic"))
    for _ in range(2):
        pricer.add(LineUsage(input_tokens=150_000, output_tokens=0))
    single = BatchPricer(Deployment(name="claude-sonnet-4-5", provider="anthropic"))
    single.add(LineUsage(input_tokens=300_000, output_tokens=0))
    assert pricer.cost().input == Decimal("0.45")  # $1.50 per million at the batch base rate
    assert single.cost().input > pricer.cost().input


def test_mock_deployments_are_priced_as_the_model_s_maker() -> None:
    pricer = BatchPricer(Deployment(name="gpt-4o-mini", provider="mock"))
    pricer.add(LineUsage(input_tokens=1_000_000))
    assert pricer.cost().input == Decimal("0.075")


def test_models_without_a_batch_rate_in_genai_prices_get_the_providers_batch_discount() -> None:
    # genai-prices lists Azure's gpt-4o-mini at its standard $0.15/$0.60 only; Azure bills batches at half
    azure = BatchPricer(
        Deployment(
            name="gpt-4o-mini",
            provider="azure",
            model="my-batch-deployment",
            api_base="https://example.openai.azure.com",
        )
    )
    azure.add(LineUsage(input_tokens=1_000_000, output_tokens=1_000_000))
    assert (azure.cost().input, azure.cost().output) == (Decimal("0.075"), Decimal("0.3"))
    # OpenAI's text-embedding-3-small: $0.02 standard, $0.01 in batches
    embeddings = BatchPricer(Deployment(name="text-embedding-3-small", provider="openai"))
    embeddings.add(LineUsage(input_tokens=1_000_000))
    assert embeddings.cost().input == Decimal("0.01")


def test_sync_deployments_are_priced_at_the_standard_rate() -> None:
    # a sync endpoint bills each request as it is sent: gpt-4o-mini's standard $0.15 in, $0.60 out per million
    sync = BatchPricer(
        Deployment(name="gpt-4o-mini", provider="openai", mode="sync", api_base="http://vllm.internal:8000/v1")
    )
    sync.add(LineUsage(input_tokens=1_000_000, output_tokens=1_000_000))
    assert sync.cost().input == Decimal("0.15") and sync.cost().output == Decimal("0.6") and sync.known


def test_sync_deployment_s_pricing_override_wins() -> None:
    pricing = Pricing(input_per_mtok=Decimal("0.27"), output_per_mtok=Decimal("1.1"))
    deployment = Deployment(
        name="deepseek-chat", provider="openai", mode="sync", api_base="https://api.deepseek.com/v1", pricing=pricing
    )
    pricer = BatchPricer(deployment)
    pricer.add(LineUsage(input_tokens=2_000_000, output_tokens=1_000_000))
    assert pricer.cost().input == Decimal("0.54") and pricer.cost().output == Decimal("1.1")


def test_a_batchs_maximum_bounds_each_image_and_file_at_the_providers_most() -> None:
    # Given ten requests of 1,000 bytes and one output token, with ten images and a file between them
    text = ModelBounds(lines=10, input_tokens=10_000, output_tokens=10)
    media = ModelBounds(lines=10, input_tokens=10_000, output_tokens=10, images=10, files=1)
    openai = Deployment(name="gpt-4o-mini", provider="openai")
    claude = Deployment(name="claude-sonnet-4-5", provider="anthropic")
    tuned = Deployment(name="gpt-4o", provider="openai", max_media_tokens=1_445)

    # Then each image is held at the most one image costs on the provider's models (gpt-4o-mini's 48,169 at
    # high detail on OpenAI), each file at a hundred such pages and their text, unless the deployment says
    def held(deployment: Deployment) -> int:
        return input_bound(deployment, media) - input_bound(deployment, text)

    assert held(openai) == 10 * 48_169 + 100 * (48_169 + 3_000)
    assert held(claude) == 10 * 4_784 + 100 * (4_784 + 3_000)
    assert held(tuned) == 10 * 1_445 + 100 * (1_445 + 3_000)
    # and the maximum prices them as input
    assert max_cost(openai, media) - max_cost(openai, text) == input_cost(openai, held(openai))


def test_usage_added_a_run_at_a_time_costs_what_it_costs_line_by_line() -> None:
    # a completion adds a run of kept lines at once: flat rates sum each count, a tiered model prices each request
    usages = [
        LineUsage(input_tokens=150_000, cached_tokens=1_000, output_tokens=7, reasoning_tokens=3),
        None,  # an answered line without usage
        LineUsage(input_tokens=250_000, output_tokens=11),
        LineUsage(input_tokens=5, cached_tokens=2, cache_write_tokens=1, output_tokens=1),
    ]
    for deployment in (
        Deployment(name="gpt-4o-mini", provider="openai"),
        Deployment(name="claude-sonnet-4-5", provider="anthropic"),
    ):
        at_once, one_by_one = BatchPricer(deployment), BatchPricer(deployment)
        at_once.add_all(usages)
        at_once.add_all([])
        for usage in usages:
            if usage is not None:
                one_by_one.add(usage)
        assert at_once.usage == one_by_one.usage and at_once.usage.input_tokens == 400_005
        assert at_once.cost() == one_by_one.cost() and at_once.cost().total > 0
