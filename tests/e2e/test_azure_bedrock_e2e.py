"""Azure OpenAI and Bedrock through `batchgw dev` with the official openai SDK, against their fakes.

Bedrock reads and writes S3 itself, so the dev stack and the fake Bedrock share one AWS emulator: a moto
server this module starts, passed to the dev stack as AWS_ENDPOINT_URL as a user would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest

from tests.e2e.conftest import DEV_KEY, dev_stack, wait_terminal, write_batch
from tests.fakes.azure_upstream import AZURE_KEY, DEPLOYMENT, FakeAzureOpenAI
from tests.fakes.bedrock_upstream import FakeBedrock
from tests.fakes.servers import aws_emulator, serve_in_thread

pytestmark = pytest.mark.e2e

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeAzureOpenAI, FakeBedrock, str, str]]:
    azure, bedrock = FakeAzureOpenAI(processing_seconds=0.5), FakeBedrock(processing_seconds=0.5)
    with serve_in_thread(azure.app) as azure_url, serve_in_thread(bedrock.app) as bedrock_url:
        yield azure, bedrock, azure_url, bedrock_url


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, fakes: tuple[FakeAzureOpenAI, FakeBedrock, str, str]
) -> Iterator[openai.OpenAI]:
    _, _, azure_url, bedrock_url = fakes
    routing = f"""
models:
  - {{name: gpt-4o-mini, provider: azure, model: {DEPLOYMENT}, api_base: "{azure_url}", api_key: {AZURE_KEY}}}
  - {{name: claude-3-5-sonnet, provider: bedrock, model: "{CLAUDE}", role_arn: "arn:aws:iam::123456789012:role/b",
      s3_bucket: batchgw-dev, region: us-east-1, api_base: "{bedrock_url}"}}
"""
    with aws_emulator() as aws, pytest.MonkeyPatch.context() as patch:
        for name, value in aws.items():
            patch.setenv(name, value)  # the fake Bedrock reaches the same S3 as the dev stack
        with (
            dev_stack(tmp_path_factory.mktemp("dev-providers"), routing, env=aws) as base_url,
            openai.OpenAI(base_url=base_url, api_key=DEV_KEY) as sdk,
        ):
            yield sdk


def every_tenth_failing(i: int) -> str:
    """Request texts the fake Bedrock fails for one request in ten."""
    return f"{'fail ' if i % 10 == 0 else ''}question {i}"


def output_ids(client: openai.OpenAI, file_id: str | None) -> list[str]:
    content = client.files.content(file_id).content if file_id else b""
    return sorted(orjson.loads(line)["custom_id"] for line in content.splitlines())


def test_azure_batch_completes_with_usage_and_batch_cost(
    client: openai.OpenAI, fakes: tuple[FakeAzureOpenAI, FakeBedrock, str, str], tmp_path: Path
) -> None:
    azure = fakes[0]
    file = client.files.create(file=write_batch(tmp_path / "in.jsonl", 5, "gpt-4o-mini"), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    done = wait_terminal(client, batch.id)
    assert done.status == "completed" and output_ids(client, done.output_file_id) == [f"req-{i}" for i in range(5)]
    (billed,) = [b for b in azure.batches.values() if b.metadata.get("batchgw_batch_id") == batch.id]
    assert done.usage is not None and done.usage.input_tokens == billed.prompt_tokens
    # Azure's Global-Batch price for gpt-4o-mini: half of $0.15 / $0.60 per 1M tokens
    expected = (billed.prompt_tokens * 0.075 + billed.completion_tokens * 0.30) / 1_000_000
    assert (done.model_extra or {})["cost"]["value"] == pytest.approx(expected, rel=1e-9)


def test_azure_cancel(
    client: openai.OpenAI, fakes: tuple[FakeAzureOpenAI, FakeBedrock, str, str], tmp_path: Path
) -> None:
    azure = fakes[0]
    azure.processing_seconds = 60
    try:
        file = client.files.create(file=write_batch(tmp_path / "in.jsonl", 4, "gpt-4o-mini"), purpose="batch")
        batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert client.batches.retrieve(batch.id).status in {"validating", "in_progress"}
        assert client.batches.cancel(batch.id).status == "cancelling"
        done = wait_terminal(client, batch.id)
    finally:
        azure.processing_seconds = 0.5
    assert done.status == "cancelled" and done.request_counts is not None and done.request_counts.total == 4


def test_bedrock_job_with_errored_records_completes_and_is_priced(
    client: openai.OpenAI, fakes: tuple[FakeAzureOpenAI, FakeBedrock, str, str], tmp_path: Path
) -> None:
    bedrock = fakes[1]
    file = client.files.create(
        file=write_batch(tmp_path / "in.jsonl", 120, "claude-3-5-sonnet", text=every_tenth_failing), purpose="batch"
    )
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    done = wait_terminal(client, batch.id)
    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (108, 12)
    assert len(output_ids(client, done.output_file_id)) == 108 and len(output_ids(client, done.error_file_id)) == 12
    # every record was processed, so Bedrock calls the job Completed, its failed records error records
    (job,) = [j for j in bedrock.jobs.values() if j.status == "Completed" and j.failed == 12]
    # Bedrock batch inference is half the on-demand price: Claude 3.5 Sonnet $3 / $15 -> $1.50 / $7.50
    expected = (job.input_tokens * 1.5 + job.output_tokens * 7.5) / 1_000_000
    assert (done.model_extra or {})["cost"]["value"] == pytest.approx(expected, rel=1e-9)


def test_bedrock_refuses_batches_under_its_minimum_with_a_clear_400(client: openai.OpenAI, tmp_path: Path) -> None:
    file = client.files.create(file=write_batch(tmp_path / "in.jsonl", 10, "claude-3-5-sonnet"), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="between 100 and 50,000"):
        client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
