"""The bedrock adapter against a fake Bedrock control plane over loopback, with S3 from moto."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from shared.providers.bedrock import BedrockProvider
from shared.routing import Deployment
from tests.fakes.bedrock_upstream import FakeBedrock
from tests.fakes.journal import MemoryJournal, submit_request
from tests.fakes.servers import serve_in_thread
from tests.integration.conftest import Stack, batch_lines, finish, lines, start

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
NOVA = "amazon.nova-lite-v1:0"
ROLE = "arn:aws:iam::123456789012:role/batchgw-bedrock"
# Bedrock batch inference is half the on-demand price; Claude 3.5 Sonnet on demand is $3 / $15 per 1M tokens
CLAUDE_BATCH = (1.5, 7.5)


@pytest.fixture
def bedrock() -> Iterator[tuple[FakeBedrock, str]]:
    fake = FakeBedrock(processing_seconds=0.3)
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def extra_routes(bedrock: tuple[FakeBedrock, str]) -> str:
    _, url = bedrock
    common = f'provider: bedrock, role_arn: "{ROLE}", s3_bucket: batchgw-dev, region: us-east-1, api_base: "{url}"'
    return f"""
  - {{name: claude-on-bedrock, model: "{CLAUDE}", {common}}}
  - {{name: nova-on-bedrock, model: "{NOVA}", {common}, pricing: {{input_per_mtok: 0.03, output_per_mtok: 0.12}}}}
"""


def test_claude_batch_runs_with_native_bodies_and_comes_back_in_openai_format(
    stack: Stack, bedrock: tuple[FakeBedrock, str]
) -> None:
    fake, _ = bedrock
    response = start(stack, batch_lines(100, model="claude-on-bedrock"))
    assert response.status_code == 200, response.text
    (done,) = finish(stack, response.json()["id"])
    assert done["status"] == "completed" and done["request_counts"] == {"total": 100, "completed": 100, "failed": 0}
    output = lines(stack, done["output_file_id"])
    assert sorted(line["custom_id"] for line in output) == sorted(f"req-{i}" for i in range(100))
    first = next(line for line in output if line["custom_id"] == "req-7")
    assert first["response"]["body"]["object"] == "chat.completion"
    assert first["response"]["body"]["choices"][0]["message"]["content"] == "claude answer 7"
    (job,) = fake.jobs.values()
    assert job.invocation_type == "InvokeModel" and job.role_arn == ROLE
    assert done["usage"]["input_tokens"] == job.input_tokens and done["usage"]["output_tokens"] == job.output_tokens
    expected = (job.input_tokens * CLAUDE_BATCH[0] + job.output_tokens * CLAUDE_BATCH[1]) / 1_000_000
    assert done["cost"]["value"] == pytest.approx(expected, rel=1e-9)


def test_converse_models_and_partially_completed_jobs_keep_their_results(
    stack: Stack, bedrock: tuple[FakeBedrock, str]
) -> None:
    fake, _ = bedrock
    # the fake fails records whose text contains "fail"
    failing = batch_lines(5, model="nova-on-bedrock", prefix="fail").replace(b"question", b"fail question")
    content = batch_lines(95, model="nova-on-bedrock") + failing
    (done,) = finish(stack, start(stack, content).json()["id"])
    (job,) = fake.jobs.values()
    assert job.status == "PartiallyCompleted" and job.invocation_type == "Converse"
    assert done["status"] == "expired" and done["request_counts"] == {"total": 100, "completed": 95, "failed": 5}
    errors = lines(stack, done["error_file_id"])
    assert sorted(line["custom_id"] for line in errors) == [f"fail-{i}" for i in range(5)]
    assert {line["response"]["status_code"] for line in errors} == {400}
    expected = (job.input_tokens * 0.03 + job.output_tokens * 0.12) / 1_000_000
    assert done["cost"]["value"] == pytest.approx(expected, rel=1e-9)


def test_stopped_job_is_cancelled_with_half_its_results_priced(stack: Stack, bedrock: tuple[FakeBedrock, str]) -> None:
    fake, _ = bedrock
    fake.processing_seconds = 60
    batch_id = start(stack, batch_lines(100, model="claude-on-bedrock")).json()["id"]
    stack.deliver("SubmitterFunction")
    assert stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth()).json()["status"] == "cancelling"
    (done,) = finish(stack, batch_id)
    assert done["status"] == "cancelled" and done["request_counts"] == {"total": 100, "completed": 50, "failed": 50}
    assert {line["error"]["code"] for line in lines(stack, done["error_file_id"])} == {"batch_cancelled"}
    assert done["cost"]["value"] > 0


@pytest.mark.parametrize(
    ("count", "endpoint", "code"),
    [(99, "/v1/chat/completions", "batch_size_out_of_range"), (100, "/v1/embeddings", "unsupported_endpoint")],
)
def test_what_bedrock_would_refuse_is_refused_at_creation(stack: Stack, count: int, endpoint: str, code: str) -> None:
    response = start(stack, batch_lines(count, model="claude-on-bedrock", url=endpoint), endpoint=endpoint)
    assert response.status_code == 400 and response.json()["error"]["code"] == code


def test_a_lost_create_answer_gets_the_same_job_back(stack: Stack, bedrock: tuple[FakeBedrock, str]) -> None:
    fake, url = bedrock
    deployment = Deployment(
        name="c",
        provider="bedrock",
        model=CLAUDE,
        role_arn=ROLE,
        s3_bucket="batchgw-dev",
        region="us-east-1",
        api_base=url,
    )
    content = batch_lines(100, model="c")
    request = submit_request("batch_019aa1b2c3d40000a1b2c3d4e5f6", CLAUDE, content)

    first = MemoryJournal(request.batch_id)
    provider = BedrockProvider(deployment, boto3.session.Session())
    provider.submit(request, first)
    # the answer never reached the journal
    retry = MemoryJournal(request.batch_id, first.claims, **{k: v for k, v in first.refs.items() if k != "batch_id"})
    provider.submit(request, retry)
    assert retry.refs["batch_id"] == first.refs["batch_id"] and len(fake.jobs) == 1
