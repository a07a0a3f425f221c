"""The routing file: parsing, defaults, deployment keys and the errors an operator sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.routing import RoutingError, load_routing, parse_routing

CONFIG = """
models:
  - name: gpt-4o-mini
    provider: openai
    api_key: env:OPENAI_API_KEY
  - name: gpt-4o-mini
    provider: azure
    model: my-batch-deployment
    api_base: https://example.openai.azure.com
    api_version: 2025-04-01-preview
    weight: 3
  - name: claude
    provider: anthropic
    model: claude-sonnet-4-5
    pricing: {input_per_mtok: 1.5, output_per_mtok: 7.5}
"""


def test_entries_sharing_a_name_are_deployments_of_one_model() -> None:
    config = parse_routing(CONFIG, source="test")
    deployments = config.deployments_for("gpt-4o-mini")
    assert [d.provider for d in deployments] == ["openai", "azure"]
    assert deployments[0].provider_model == "gpt-4o-mini" and deployments[1].provider_model == "my-batch-deployment"
    assert deployments[1].weight == 3 and deployments[0].weight == 1
    assert deployments[0].key != deployments[1].key
    assert config.deployment(deployments[1].key) == deployments[1]
    assert config.deployments_for("nope") == []


def test_deployment_keys_are_stable_across_loads() -> None:
    first = [d.key for d in parse_routing(CONFIG, source="a").models]
    assert first == [d.key for d in parse_routing(CONFIG, source="b").models]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("models: [{name: a, provider: nonsense}]", "models.0.provider"),
        ("models: [{name: a, provider: mock, modle: typo}]", "models.0.modle"),
        ("models: []", "models"),
        ("models: [{name: a, provider: mock}, {name: a, provider: mock}]", "give each an `id`"),
        ("models: [{name: a", "not valid YAML"),
        ("models: [{name: a, provider: mock, failure_rate: 2}]", "failure_rate"),
        ("models: [{name: a, provider: azure, api_base: 'https://x', mode: sync}]", "provider openai"),
        ("models: [{name: a, provider: openai, rpm: 60}]", "rpm only apply to mode sync"),
        (
            "models: [{name: a, provider: openai, mode: sync, api_base: 'http://x', max_concurrency: 0}]",
            "max_concurrency",
        ),
    ],
)
def test_invalid_files_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(RoutingError, match=r"routing\.yaml") as caught:
        parse_routing(text, source="routing.yaml")
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("entry", "missing"),
    [
        ("{name: a, provider: azure}", "api_base"),
        ("{name: a, provider: bedrock, role_arn: arn}", "s3_bucket"),
        ("{name: a, provider: vertex, project: p}", "gcs_bucket"),
        ("{name: a, provider: openai, mode: sync}", "api_base"),
    ],
)
def test_each_provider_s_required_settings_are_checked_when_the_file_loads(entry: str, missing: str) -> None:
    with pytest.raises(RoutingError, match=f"needs {missing}"):
        parse_routing(f"models: [{entry}]", source="routing.yaml")


def test_unquoted_dates_are_read_as_the_api_version_written() -> None:
    entry = "{name: a, provider: azure, api_base: 'https://x.openai.azure.com', api_version: 2024-10-21}"
    assert parse_routing(f"models: [{entry}]", source="r").models[0].api_version == "2024-10-21"


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RoutingError, match=r"cannot read routing file"):
        load_routing(str(tmp_path / "absent.yaml"))


def test_sync_deployment_reads_its_limits_and_is_run_by_batchgw_s_own_adapter() -> None:
    text = """
models:
  - {name: llama, provider: openai, mode: sync, api_base: 'http://vllm/v1', max_concurrency: 4, rpm: 600, tpm: 90000}
  - {name: deepseek-chat, provider: openai, mode: sync, api_base: 'https://api.deepseek.com/v1'}
  - {name: gpt-4o-mini, provider: openai}
"""
    tuned, plain, batch = parse_routing(text, source="r").models
    assert (tuned.max_concurrency, tuned.rpm, tuned.tpm) == (4, 600, 90_000)
    assert (plain.max_concurrency, plain.rpm, plain.tpm) == (8, None, None)
    assert tuned.spec.module == plain.spec.module == "shared.providers.sync" != batch.spec.module
    assert tuned.spec.endpoints == ("/v1/chat/completions", "/v1/embeddings")
