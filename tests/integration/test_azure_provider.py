"""The azure adapter against a fake Azure OpenAI (both URL styles, api-key and Entra auth, Azure's quirks)."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from tests.fakes.azure_upstream import AZURE_AD_TOKEN, AZURE_KEY, DEPLOYMENT, FakeAzureOpenAI
from tests.fakes.servers import serve_in_thread
from tests.integration.conftest import Stack, batch_lines, finish, lines, start

# Azure bills Global-Batch at half its Global Standard price; gpt-4o-mini is $0.15 / $0.60 per 1M tokens
AZURE_GPT_4O_MINI_BATCH = (0.075, 0.30)


@pytest.fixture(scope="module")
def azure() -> Iterator[tuple[FakeAzureOpenAI, str]]:
    fake = FakeAzureOpenAI(processing_seconds=0.3)
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def extra_routes(azure: tuple[FakeAzureOpenAI, str]) -> str:
    _, url = azure
    return f"""
  - {{name: gpt-4o-mini-azure, provider: azure, model: {DEPLOYMENT}, api_base: "{url}", api_key: {AZURE_KEY},
      timeout: 1, price_model: gpt-4o-mini}}
  - {{name: gpt-4o-mini-azure-legacy, provider: azure, model: {DEPLOYMENT}, api_base: "{url}",
      api_version: 2024-10-21, api_key: {AZURE_KEY}, timeout: 1, price_model: gpt-4o-mini}}
  - {{name: gpt-4o-mini-azure-entra, provider: azure, model: {DEPLOYMENT}, api_base: "{url}",
      ad_token: {AZURE_AD_TOKEN}, timeout: 1, price_model: gpt-4o-mini}}
  - {{name: azure-expiring, provider: azure, model: fake-expire, api_base: "{url}", api_key: {AZURE_KEY},
      timeout: 1, pricing: {{input_per_mtok: 1.0, output_per_mtok: 4.0}}}}
"""


@pytest.mark.parametrize("model", ["gpt-4o-mini-azure", "gpt-4o-mini-azure-legacy", "gpt-4o-mini-azure-entra"])
def test_azure_batch_completes_with_openai_lines_usage_and_batch_price(
    stack: Stack, azure: tuple[FakeAzureOpenAI, str], model: str
) -> None:
    fake, _ = azure
    content = batch_lines(3, model=model) + batch_lines(1, model=model, prefix="fail")
    response = start(stack, content)
    assert response.status_code == 200, response.text
    (done,) = finish(stack, response.json()["id"])
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 4, "completed": 3, "failed": 1}
    output = lines(stack, done["output_file_id"])
    assert sorted(line["custom_id"] for line in output) == ["req-0", "req-1", "req-2"]
    # Azure's lines have no id: ours are filled in
    assert all(line["id"].startswith("batch_req_") for line in output)
    assert [line["custom_id"] for line in lines(stack, done["error_file_id"])] == ["fail-0"]
    (billed,) = [b for b in fake.batches.values() if b.metadata.get("batchgw_batch_id") == done["id"]]
    assert done["usage"]["input_tokens"] == billed.prompt_tokens
    expected = billed.prompt_tokens * AZURE_GPT_4O_MINI_BATCH[0] + billed.completion_tokens * AZURE_GPT_4O_MINI_BATCH[1]
    assert done["cost"]["value"] == pytest.approx(expected / 1_000_000, rel=1e-9)


def test_azure_success_with_an_empty_error_file_has_no_error_file(stack: Stack) -> None:
    (done,) = finish(stack, start(stack, batch_lines(2, model="gpt-4o-mini-azure")).json()["id"])
    assert done["status"] == "completed" and done["error_file_id"] is None


def test_azure_expired_run_keeps_and_prices_partial_results(stack: Stack, azure: tuple[FakeAzureOpenAI, str]) -> None:
    fake, _ = azure
    (done,) = finish(stack, start(stack, batch_lines(4, model="azure-expiring")).json()["id"])
    assert done["status"] == "expired" and done["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    (billed,) = [b for b in fake.batches.values() if b.metadata.get("batchgw_batch_id") == done["id"]]
    expected = (billed.prompt_tokens * 1.0 + billed.completion_tokens * 4.0) / 1_000_000
    assert done["cost"]["value"] == pytest.approx(expected, rel=1e-9)
    assert {line["error"]["code"] for line in lines(stack, done["error_file_id"])} == {"batch_expired"}


def test_azure_cancel_goes_through_cancelling(stack: Stack, azure: tuple[FakeAzureOpenAI, str]) -> None:
    fake, _ = azure
    fake.processing_seconds = 60
    try:
        batch_id = start(stack, batch_lines(4, model="gpt-4o-mini-azure")).json()["id"]
        stack.deliver("SubmitterFunction")
        assert stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth()).json()["status"] == "cancelling"
        (done,) = finish(stack, batch_id)
    finally:
        fake.processing_seconds = 0.3
    assert done["status"] == "cancelled" and done["request_counts"]["completed"] == 2


def test_embeddings_routed_to_azure_are_refused_at_creation(stack: Stack) -> None:
    content = b"".join(
        orjson.dumps(
            {
                "custom_id": f"e{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "gpt-4o-mini-azure", "input": "x"},
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        for i in range(2)
    )
    response = start(stack, content, endpoint="/v1/embeddings")
    assert response.status_code == 400 and response.json()["error"]["code"] == "unsupported_endpoint"
