"""Secret references in the routing file: env:, ssm: and secretsmanager:, resolved once and cached."""

from __future__ import annotations

import boto3
import pytest

from shared.secret_refs import SecretError, resolve_secret
from tests.fakes.openai_upstream import API_KEY
from tests.integration.conftest import Stack, batch_lines


@pytest.fixture
def extra_routes(upstream: tuple[object, str]) -> str:
    _, url = upstream
    return f"""
  - {{name: via-secrets-manager, provider: openai, model: gpt-4o-mini, api_base: "{url}/v1",
      api_key: "secretsmanager:batchgw/providers/upstream", timeout: 1}}
  - {{name: via-ssm, provider: openai, model: gpt-4o-mini, api_base: "{url}/v1",
      api_key: "ssm:/batchgw/providers/upstream", timeout: 1}}
  - {{name: via-env, provider: openai, model: gpt-4o-mini, api_base: "{url}/v1",
      api_key: "env:UPSTREAM_TEST_KEY", timeout: 1}}
"""


@pytest.mark.parametrize("model", ["via-secrets-manager", "via-ssm", "via-env"])
def test_provider_keys_from_each_kind_of_reference_reach_the_provider(
    stack: Stack, model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    boto3.client("secretsmanager").create_secret(Name="batchgw/providers/upstream", SecretString=API_KEY)
    boto3.client("ssm").put_parameter(Name="/batchgw/providers/upstream", Value=API_KEY, Type="SecureString")
    monkeypatch.setenv("UPSTREAM_TEST_KEY", API_KEY)
    file_id = stack.api.post(
        "/v1/files", headers=stack.auth(), data={"purpose": "batch"}, files={"file": ("a", batch_lines(2, model=model))}
    ).json()["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch_id = stack.api.post("/v1/batches", headers=stack.auth(), json=body).json()["id"]

    def done() -> bool:
        return bool(stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth()).json()["status"] == "completed")

    stack.run_until(done)


def test_ssm_values_are_cached(stack: Stack) -> None:
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/batchgw/cached", Value="first", Type="SecureString")
    assert resolve_secret("ssm:/batchgw/cached") == "first"
    ssm.put_parameter(Name="/batchgw/cached", Value="second", Type="SecureString", Overwrite=True)
    assert resolve_secret("ssm:/batchgw/cached") == "first"  # within the cache's five minutes


def test_unresolvable_references_name_the_reference_never_a_value(stack: Stack) -> None:
    with pytest.raises(SecretError, match="NOT_SET_ANYWHERE"):
        resolve_secret("env:NOT_SET_ANYWHERE")
    with pytest.raises(SecretError, match="secretsmanager:batchgw/missing") as caught:
        resolve_secret("secretsmanager:batchgw/missing")
    assert "ResourceNotFound" in str(caught.value)
    assert resolve_secret("sk-literal") == "sk-literal"
