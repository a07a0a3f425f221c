"""The bedrock adapter against a fake Bedrock control plane over loopback, with S3 from moto."""

from __future__ import annotations

from typing import Any

import boto3
import orjson
import pytest

from shared.providers.bedrock import BedrockProvider
from shared.routing import Deployment
from tests.fakes.bedrock_upstream import FAIL_MARKER, OUT_OF_TIME_MARKER, FakeBedrock
from tests.fakes.journal import MemoryJournal, submit_request
from tests.integration.conftest import (
    BEDROCK_BUCKET,
    BEDROCK_ROLE,
    Stack,
    batch,
    batch_lines,
    bedrock_keys,
    finish,
    lines,
    record,
    start,
    started,
)

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
NOVA = "amazon.nova-lite-v1:0"
# Bedrock batch inference is half the on-demand price; Claude 3.5 Sonnet on demand is $3 / $15 per 1M tokens
CLAUDE_BATCH = (1.5, 7.5)


@pytest.fixture
def extra_routes(bedrock: tuple[FakeBedrock, str]) -> str:
    _, url = bedrock
    common = bedrock_keys(url)
    return f"""
  - {{name: claude-on-bedrock, model: "{CLAUDE}", {common}}}
  - {{name: nova-on-bedrock, model: "{NOVA}", {common}, pricing: {{input_per_mtok: 0.03, output_per_mtok: 0.12}}}}
  - {{name: claude-small-batches, model: "{CLAUDE}", {common}, min_requests: 10}}
  - {{name: nova-small-batches, model: "{NOVA}", {common}, min_requests: 10}}
  - {{name: claude-placed, id: east, model: "{CLAUDE}", {common}, min_requests: 10, max_retries: 1, weight: 1000}}
  - {{name: claude-placed, id: west, model: "{CLAUDE}", {common}, min_requests: 10, max_retries: 1, weight: 1}}
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
    assert job.invocation_type == "InvokeModel" and job.role_arn == BEDROCK_ROLE
    assert done["usage"]["input_tokens"] == job.input_tokens and done["usage"]["output_tokens"] == job.output_tokens
    expected = (job.input_tokens * CLAUDE_BATCH[0] + job.output_tokens * CLAUDE_BATCH[1]) / 1_000_000
    assert done["cost"]["value"] == pytest.approx(expected, rel=1e-9)


def test_errored_records_complete_the_batch_as_error_lines(stack: Stack, bedrock: tuple[FakeBedrock, str]) -> None:
    # Given a Converse batch in which the model fails five records
    fake, _ = bedrock
    failing = batch_lines(5, model="nova-on-bedrock", prefix="bad").replace(b"question", FAIL_MARKER.encode())
    content = batch_lines(95, model="nova-on-bedrock") + failing

    # When it runs: every record was processed, so Bedrock calls the job Completed
    (done,) = finish(stack, started(stack, content))
    (job,) = fake.jobs.values()
    assert job.status == "Completed" and job.invocation_type == "Converse" and job.failed == 5

    # Then the batch completed, the failed records are error lines with Bedrock's status and message
    assert done["status"] == "completed" and done["request_counts"] == {"total": 100, "completed": 95, "failed": 5}
    assert len(lines(stack, done["output_file_id"])) == 95
    errors = lines(stack, done["error_file_id"])
    assert sorted(line["custom_id"] for line in errors) == [f"bad-{i}" for i in range(5)]
    assert {line["response"]["status_code"] for line in errors} == {400}
    assert {line["response"]["body"]["error"]["message"] for line in errors} == {
        "Malformed input request: The model could not process this record."
    }
    expected = (job.input_tokens * 0.03 + job.output_tokens * 0.12) / 1_000_000
    assert done["cost"]["value"] == pytest.approx(expected, rel=1e-9)


def test_records_not_processed_in_time_expire_the_batch_and_the_finished_ones_are_kept_and_priced(
    stack: Stack, bedrock: tuple[FakeBedrock, str]
) -> None:
    # Given a batch ten of whose records Bedrock does not get to in time
    fake, _ = bedrock
    late = batch_lines(10, model="claude-on-bedrock", prefix="late").replace(b"question", OUT_OF_TIME_MARKER.encode())
    content = batch_lines(90, model="claude-on-bedrock") + late

    # When it runs: Bedrock ends the job PartiallyCompleted, without those records in its output
    (done,) = finish(stack, started(stack, content))
    (job,) = fake.jobs.values()
    assert job.status == "PartiallyCompleted" and job.succeeded == 90 and job.failed == 0

    # Then the batch expired, its finished results kept and priced, the rest batch_expired
    assert done["status"] == "expired" and done["request_counts"] == {"total": 100, "completed": 90, "failed": 10}
    assert sorted(line["custom_id"] for line in lines(stack, done["output_file_id"])) == sorted(
        f"req-{i}" for i in range(90)
    )
    errors = lines(stack, done["error_file_id"])
    assert sorted(line["custom_id"] for line in errors) == [f"late-{i}" for i in range(10)]
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}
    assert done["usage"]["input_tokens"] == job.input_tokens and done["usage"]["output_tokens"] == job.output_tokens
    expected = (job.input_tokens * CLAUDE_BATCH[0] + job.output_tokens * CLAUDE_BATCH[1]) / 1_000_000
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
        role_arn=BEDROCK_ROLE,
        s3_bucket=BEDROCK_BUCKET,
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


def chat_line(custom_id: str, model: str, **body: Any) -> bytes:
    request = {"model": model, "messages": [{"role": "user", "content": "question"}], **body}
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": request}
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def test_min_requests_routing_key_runs_batches_below_bedrocks_default_quota(
    stack: Stack, bedrock: tuple[FakeBedrock, str]
) -> None:
    # Given an account whose quota for the model was raised to jobs of 10 records, set on one deployment
    fake, _ = bedrock
    fake.min_records = 10

    # Then a 10-request batch is refused where the default minimum (100) applies, and runs where it is 10
    refused = start(stack, batch_lines(10, model="claude-on-bedrock"))
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "batch_size_out_of_range"
    assert "between 100 and 50,000" in refused.json()["error"]["message"]
    (done,) = finish(stack, started(stack, batch_lines(10, model="claude-small-batches")))
    assert done["status"] == "completed" and done["request_counts"] == {"total": 10, "completed": 10, "failed": 0}


def test_batch_below_bedrocks_own_minimum_fails_with_bedrocks_reason(
    stack: Stack, bedrock: tuple[FakeBedrock, str]
) -> None:
    # Given a deployment whose min_requests is below what Bedrock takes for the model (100)
    fake, _ = bedrock
    batch_id = started(stack, batch_lines(10, model="claude-small-batches"))

    # When it is submitted, Bedrock refuses the job
    (done,) = finish(stack, batch_id)

    # Then the batch failed at once, saying why, and no job exists
    assert done["status"] == "failed" and not fake.jobs
    (error,) = done["errors"]["data"]
    assert "ValidationException" in error["message"] and "at least 100" in error["message"]


def test_requests_bedrock_cannot_take_fail_alone_and_the_rest_runs(
    stack: Stack, bedrock: tuple[FakeBedrock, str]
) -> None:
    # Given a Converse batch with a request that has tools and one with an image URL
    fake, _ = bedrock
    fake.min_records = 10
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    picture = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    content = (
        batch_lines(10, model="nova-small-batches")
        + chat_line("tools", "nova-small-batches", tools=[tool])
        + chat_line("picture", "nova-small-batches", messages=[{"role": "user", "content": picture}])
    )

    # When it runs
    (done,) = finish(stack, started(stack, content))

    # Then those two are invalid_request lines saying why, and only the other ten went to Bedrock
    assert done["status"] == "completed" and done["request_counts"] == {"total": 12, "completed": 10, "failed": 2}
    errors = {line["custom_id"]: line["error"] for line in lines(stack, done["error_file_id"])}
    assert {error["code"] for error in errors.values()} == {"invalid_request"}
    assert "does not take tools" in errors["tools"]["message"]
    assert "send it as a data: URL" in errors["picture"]["message"]
    (job,) = fake.jobs.values()
    assert len(job.records) == 10 and job.failed == 0


def test_batch_left_too_small_once_unsendable_requests_are_set_aside_fails_before_anything_is_sent(
    stack: Stack, bedrock: tuple[FakeBedrock, str]
) -> None:
    # Given 100 requests, Bedrock's minimum, one of which Bedrock cannot take
    fake, _ = bedrock
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    content = batch_lines(99, model="nova-on-bedrock") + chat_line("tools", "nova-on-bedrock", tools=[tool])
    batch_id = started(stack, content)

    # When it is submitted
    (done,) = finish(stack, batch_id)

    # Then it fails saying so, with no job created and no input left in the bucket
    assert done["status"] == "failed" and not fake.jobs
    (error,) = done["errors"]["data"]
    assert error["code"] == "batch_size_out_of_range" and "99 requests" in error["message"]
    assert live_keys(f"batchgw/{batch_id}/") == []


def live_keys(prefix: str) -> list[str]:
    """The objects under `prefix` in the deployments' bucket."""
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BEDROCK_BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_completed_batch_leaves_nothing_in_the_bucket_under_its_prefix(
    stack: Stack, bedrock: tuple[FakeBedrock, str]
) -> None:
    # Given a batch run to completion
    fake, _ = bedrock
    batch_id = started(stack, batch_lines(100, model="claude-on-bedrock"))
    (done,) = finish(stack, batch_id)
    assert done["status"] == "completed"

    # Then what batchgw wrote (the input) and what Bedrock wrote (results, manifest) is gone
    (job,) = fake.jobs.values()
    prefix = f"batchgw/{batch_id}/"
    written = [job.input_uri.removeprefix(f"s3://{BEDROCK_BUCKET}/"), *job.output_keys]
    assert len(written) == 3 and all(key.startswith(prefix) for key in written)
    assert live_keys(prefix) == []
    # and the batch's results, in batchgw's own files, are still there
    assert len(lines(stack, batch(stack, batch_id)["output_file_id"])) == 100


def test_running_jobs_are_polled_from_list_pages_without_getting_each(
    stack: Stack, bedrock: tuple[FakeBedrock, str]
) -> None:
    # Given 30 batch inference jobs running on Bedrock
    fake, _ = bedrock
    fake.min_records, fake.processing_seconds = 10, 60.0
    batch_ids = [started(stack, batch_lines(10, model="claude-small-batches", prefix=f"b{i}")) for i in range(30)]
    stack.deliver("SubmitterFunction")
    assert len(fake.jobs) == 30 and all(record(stack, b).status == "in_progress" for b in batch_ids)
    before = dict(fake.calls)

    # When the poller ticks
    stack.poll()

    # Then one ListModelInvocationJobs page (up to 1,000 a page) showed them all, and no job was got on its own
    calls = {call: n - before.get(call, 0) for call, n in fake.calls.items() if n != before.get(call, 0)}
    assert calls == {"GET model-invocation-jobs": 1}, calls
    fake.processing_seconds = 0.0
    stack.run_until(lambda: all(record(stack, b).status == "completed" for b in batch_ids))


def test_a_create_whose_answers_are_all_lost_is_not_sent_to_another_deployment(
    stack: Stack, bedrock: tuple[FakeBedrock, str]
) -> None:
    # Given two deployments of a model, and a create at the first that makes the job but whose every answer
    # (botocore's retries included) is lost
    fake, _ = bedrock
    fake.min_records, fake.lose_create_answers = 10, 3
    batch_id = started(stack, batch_lines(10, model="claude-placed"))

    # When the submission fails and is delivered again
    stack.run_until(lambda: record(stack, batch_id).status == "completed")

    # Then the batch stayed where its job was made (moved, it would have run twice, once in each account),
    # and that one job ran it
    assert record(stack, batch_id).deployment.endswith("east") and len(fake.jobs) == 1
