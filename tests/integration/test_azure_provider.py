"""The azure adapter against a fake Azure OpenAI (both URL styles, api-key and Entra auth, Azure's quirks
and the traps of reference/provider-apis.md section 7), and the openai adapter's result reading, which
both share, against malformed result lines."""

from __future__ import annotations

import time
from collections.abc import Iterator

import boto3
import orjson
import pytest

from shared.deadline import Deadline, within
from shared.errors import ProviderBusy
from shared.providers import openai as openai_adapter
from shared.providers.azure import AzureProvider
from shared.providers.openai import FILE_TTL_SECONDS
from shared.routing import Deployment
from tests.fakes.azure_upstream import (
    AZURE_AD_TOKEN,
    AZURE_KEY,
    DEPLOYMENT,
    FakeAzureOpenAI,
    enqueued_tokens,
)
from tests.fakes.journal import MemoryJournal, submit_request
from tests.fakes.openai_upstream import BAD_FILE_MARKER, FakeOpenAI
from tests.integration.conftest import Stack, batch, batch_lines, finish, lines, record, start, started

# Azure bills Global-Batch at half its Global Standard price; gpt-4o-mini is $0.15 / $0.60 per 1M tokens
AZURE_GPT_4O_MINI_BATCH = (0.075, 0.30)
ENTRA_PARAMETER = "/batchgw/test/azure-entra-token"
KEY_SECRET = "batchgw/test/azure-api-key"


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
  - {{name: azure-entra-from-ssm, provider: azure, model: {DEPLOYMENT}, api_base: "{url}",
      ad_token: "ssm:{ENTRA_PARAMETER}", timeout: 1, price_model: gpt-4o-mini}}
  - {{name: azure-key-from-secrets-manager, provider: azure, model: {DEPLOYMENT}, api_base: "{url}",
      api_key: "secretsmanager:{KEY_SECRET}", timeout: 1, price_model: gpt-4o-mini}}
  - {{name: azure-expiring, provider: azure, model: fake-expire, api_base: "{url}", api_key: {AZURE_KEY},
      timeout: 1, pricing: {{input_per_mtok: 1.0, output_per_mtok: 4.0}}}}
"""


@pytest.fixture
def adapter(azure: tuple[FakeAzureOpenAI, str]) -> Iterator[AzureProvider]:
    """The azure adapter itself, for a deployment at the fake, outside the stack."""
    _, url = azure
    deployment = Deployment(name="a", provider="azure", model=DEPLOYMENT, api_base=url, api_key=AZURE_KEY, timeout=1)
    provider = AzureProvider(deployment)
    yield provider
    provider.close()


def provider_batch(fake: FakeOpenAI, batch_id: str) -> str:
    """The id of the one provider batch that runs batchgw batch `batch_id`."""
    (found,) = [b.id for b in fake.batches.values() if b.metadata.get("batchgw_batch_id") == batch_id]
    return found


def wait_passes(stack: Stack, batch_id: str) -> None:
    """As if the wait its provider asked for had passed: the batch may be submitted again now."""
    now = int(time.time())
    stack.rt.batch_store.release_submission(batch_id, retry_at=now, now=now)


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
    billed = fake.batches[provider_batch(fake, done["id"])]
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
    billed = fake.batches[provider_batch(fake, done["id"])]
    expected = (billed.prompt_tokens * 1.0 + billed.completion_tokens * 4.0) / 1_000_000
    assert done["cost"]["value"] == pytest.approx(expected, rel=1e-9)
    assert {line["error"]["code"] for line in lines(stack, done["error_file_id"])} == {"batch_expired"}


def test_azure_cancel_goes_through_cancelling(stack: Stack, azure: tuple[FakeAzureOpenAI, str]) -> None:
    fake, _ = azure
    fake.processing_seconds = 60
    batch_id = start(stack, batch_lines(4, model="gpt-4o-mini-azure")).json()["id"]
    stack.deliver("SubmitterFunction")
    assert stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth()).json()["status"] == "cancelling"
    (done,) = finish(stack, batch_id)
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


# --- an input file Azure has not processed yet --------------------------------------------------------


def test_azure_input_still_pending_is_awaited_and_the_batch_runs(
    stack: Stack, azure: tuple[FakeAzureOpenAI, str]
) -> None:
    # Given Azure takes a second to process an upload (a create before then is refused with a 400)
    fake, _ = azure
    fake.file_processing_seconds = 1.0

    # When a batch is submitted
    batch_id = started(stack, batch_lines(3, model="gpt-4o-mini-azure"))
    stack.deliver("SubmitterFunction")

    # Then the one submission waited for the file and created the batch, which completes
    assert batch(stack, batch_id)["status"] == "in_progress"
    assert fake.calls["refused:pending"] == 0 and fake.calls["POST /openai/v1/batches"] == 1
    (done,) = finish(stack, batch_id)
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 3


def test_azure_input_pending_past_the_deadline_is_busy_and_resumes_from_the_uploaded_file(
    azure: tuple[FakeAzureOpenAI, str], adapter: AzureProvider
) -> None:
    # Given Azure takes longer to process an upload than the submitter's invocation has left
    fake, _ = azure
    fake.file_processing_seconds = 60
    journal = MemoryJournal("batch_pending")
    request = submit_request("batch_pending", DEPLOYMENT, batch_lines(2))

    # When it submits with two seconds left
    started_at = time.monotonic()
    with within(Deadline.after(2.0)), pytest.raises(ProviderBusy) as caught:
        adapter.submit(request, journal)

    # Then it asks to be retried later, within its deadline, having created nothing but the recorded upload
    assert time.monotonic() - started_at < 2.0
    assert caught.value.retry_after > 0 and "pending" in caught.value.message
    assert set(journal.refs) == {"input_file_id"} and not fake.batches

    # And once Azure has processed the file, the next try creates the batch from that same upload
    fake.process_files()
    adapter.submit(request, journal)
    assert fake.calls["POST /openai/v1/files"] == 1
    assert fake.batches[journal.refs["batch_id"]].input_file_id == journal.refs["input_file_id"]


def test_azure_provider_batch_of_another_batchgw_batch_is_never_adopted(
    azure: tuple[FakeAzureOpenAI, str], adapter: AzureProvider
) -> None:
    # Given a provider batch made for batchgw batch A
    fake, _ = azure
    claims: dict[str, str] = {}
    first = MemoryJournal("batch_a", claims)
    adapter.submit(submit_request("batch_a", DEPLOYMENT, batch_lines(2)), first)

    # When batch B retries a create that may have been lost, its journal naming the same input file
    second = MemoryJournal("batch_b", claims, input_file_id=first.refs["input_file_id"], create_started="1")
    adapter.submit(submit_request("batch_b", DEPLOYMENT, batch_lines(2)), second)

    # Then B does not take A's provider batch: it creates its own
    assert second.refs["batch_id"] != first.refs["batch_id"]
    assert fake.batches[second.refs["batch_id"]].metadata == {"batchgw_batch_id": "batch_b"}


def test_azure_input_file_it_cannot_process_fails_the_batch_with_azures_details(stack: Stack) -> None:
    content = batch_lines(1, model="gpt-4o-mini-azure", prefix=BAD_FILE_MARKER)
    (done,) = finish(stack, started(stack, content))
    assert done["status"] == "failed"
    (error,) = done["errors"]["data"]
    assert "could not process the batch input" in error["message"] and "could not be parsed" in error["message"]


# --- Azure's enqueued-token quota ------------------------------------------------------------------------


def test_azure_full_token_quota_keeps_the_second_batch_validating_until_the_first_ends(
    stack: Stack, azure: tuple[FakeAzureOpenAI, str]
) -> None:
    # Given a deployment whose enqueued-token quota holds one batch of three requests, not two
    fake, _ = azure
    fake.enqueued_token_quota = {DEPLOYMENT: enqueued_tokens(3) + 10}
    fake.processing_seconds = 1.0
    first = started(stack, batch_lines(3, model="gpt-4o-mini-azure", prefix="a"))
    second = started(stack, batch_lines(3, model="gpt-4o-mini-azure", prefix="b"))

    # When both are submitted
    stack.deliver("SubmitterFunction")

    # Then the first runs and the second, refused with token_limit_exceeded, waits in validating
    assert batch(stack, first)["status"] == "in_progress"
    assert batch(stack, second)["status"] == "validating"
    assert fake.calls["refused:token_limit_exceeded"] == 1
    assert record(stack, second).retry_at > time.time()
    (done_first,) = finish(stack, first)
    assert batch(stack, second)["status"] == "validating"

    # And once its wait has passed, the second runs from its first upload and completes
    wait_passes(stack, second)
    (done_second,) = finish(stack, second)
    assert done_first["status"] == done_second["status"] == "completed"
    assert done_second["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert len(fake.batches) == 2 and fake.calls["POST /openai/v1/files"] == 2
    assert not stack.failures


def test_azure_run_failed_in_validation_for_the_token_quota_is_busy_and_never_adopted_again(
    azure: tuple[FakeAzureOpenAI, str], adapter: AzureProvider
) -> None:
    # Given a batch Azure accepted and then failed in validation: the quota holds no batch of two
    fake, _ = azure
    fake.fail_fast = False
    fake.enqueued_token_quota = {DEPLOYMENT: enqueued_tokens(2) - 1}
    request = submit_request("batch_q", DEPLOYMENT, batch_lines(2))
    first = MemoryJournal("batch_q")
    adapter.submit(request, first)

    # Then it is reported busy, not a failure to end the batch with
    status = adapter.refresh(first.refs)
    assert status.state == "failed" and status.retry_after > 0

    # And a try again from the same upload, whose create may have been lost, creates a new run
    fake.enqueued_token_quota = {}
    again = MemoryJournal("batch_q", input_file_id=first.refs["input_file_id"], create_started="1")
    adapter.submit(request, again)
    assert again.refs["batch_id"] != first.refs["batch_id"] and fake.calls["overlapping_create"] == 0


def test_azure_batch_failed_in_validation_for_the_token_quota_is_submitted_again_and_completes(
    stack: Stack, azure: tuple[FakeAzureOpenAI, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a region without "fail fast": a create beyond the enqueued-token quota is accepted, then fails in
    # validation with token_limit_exceeded and no request run; the quota holds one batch of three, not two
    fake, _ = azure
    fake.fail_fast = False
    fake.processing_seconds = 60.0  # the first runs until the second has been validated, however slow the machine
    fake.enqueued_token_quota = {DEPLOYMENT: enqueued_tokens(3) + 10}
    monkeypatch.setattr(openai_adapter, "QUOTA_RETRY_AFTER", 1.0)  # Azure's wait, shortened for the test
    first = started(stack, batch_lines(3, model="gpt-4o-mini-azure", prefix="a"))
    second = started(stack, batch_lines(3, model="gpt-4o-mini-azure", prefix="b"))

    # When both are submitted and the second's provider batch fails in validation
    stack.run_until(lambda: fake.calls["failed:token_limit_exceeded"] >= 1)
    stack.deliver("CompletionFunction")

    # Then its user sees it still running, waiting to be submitted again from its upload
    assert batch(stack, second)["status"] in ("validating", "in_progress")
    assert set(record(stack, second).provider_refs) == {"input_file_id"}
    fake.processing_seconds = 0.5

    # And once the first has finished, the second runs and completes with each request once, billed once
    done_first, done_second = finish(stack, first, second, at_least=5.0)
    assert done_first["status"] == done_second["status"] == "completed", done_second
    assert done_second["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert sorted(line["custom_id"] for line in lines(stack, done_second["output_file_id"])) == ["b-0", "b-1", "b-2"]
    ran = [b for b in fake.batches.values() if b.metadata["batchgw_batch_id"] == second and b.id not in fake.refused]
    assert len(ran) == 1 and done_second["usage"]["input_tokens"] == ran[0].prompt_tokens
    (row,) = stack.rt.key_store.spend("master")
    assert row.batches == 2 and row.requests == 6
    # never two live provider batches for one batchgw batch, and one upload each
    assert fake.calls["overlapping_create"] == 0 and fake.calls["POST /openai/v1/files"] == 2
    assert not stack.failures


# --- files: expiry and cleanup ---------------------------------------------------------------------------


def test_azure_files_batchgw_makes_expire_and_are_deleted_once_the_batch_completes(
    stack: Stack, azure: tuple[FakeAzureOpenAI, str]
) -> None:
    # Given a batch whose provider run has ended, before batchgw has taken its results
    fake, _ = azure
    model = "gpt-4o-mini-azure"
    batch_id = started(stack, batch_lines(2, model=model) + batch_lines(1, model=model, prefix="fail"))
    stack.run_until(lambda: record(stack, batch_id).finalize_to is not None, complete=False)

    # Then its input, output and error files are at Azure, each expiring in 14 days
    assert len(fake.files) == 3
    assert all(f.expires_at == f.created_at + FILE_TTL_SECONDS for f in fake.files.values())

    # When batchgw completes it, none of them is left
    (done,) = finish(stack, batch_id)
    assert done["status"] == "completed" and fake.files == {}


def test_azure_sequential_batches_never_reach_its_file_cap(stack: Stack, azure: tuple[FakeAzureOpenAI, str]) -> None:
    # Given a resource that holds at most 5 files, with or without expiry (Azure's caps are 500 and 10,000)
    fake, _ = azure
    fake.file_cap_without_expiry = fake.file_cap_with_expiry = 5

    # When 20 batches of 3 files each run one after another
    contents = [batch_lines(2, model="gpt-4o-mini-azure", prefix=f"b{n}") for n in range(20)]
    ended = [finish(stack, started(stack, content))[0] for content in contents]

    # Then every one completes and no upload was refused
    assert [done["status"] for done in ended] == ["completed"] * 20
    assert fake.calls["refused:quotaExceeded"] == 0 and fake.files == {}


# --- credentials that change under a running process ----------------------------------------------------


def test_azure_entra_token_expired_mid_batch_is_read_again_and_the_batch_completes(
    stack: Stack, azure: tuple[FakeAzureOpenAI, str]
) -> None:
    # Given an Entra token in SSM, with which the batch is submitted
    fake, _ = azure
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name=ENTRA_PARAMETER, Value=fake.issue_token(lifetime=3600), Type="SecureString")
    batch_id = started(stack, batch_lines(2, model="azure-entra-from-ssm"))
    stack.deliver("SubmitterFunction")
    assert batch(stack, batch_id)["status"] == "in_progress"

    # When the token expires and a rotation writes a new one to SSM (batchgw holds the old one in its cache)
    fake.expire_tokens()
    ssm.put_parameter(Name=ENTRA_PARAMETER, Value=fake.issue_token(lifetime=3600), Type="SecureString", Overwrite=True)

    # Then the calls answered 401 are sent again with the new token and the batch completes
    (done,) = finish(stack, batch_id)
    assert done["status"] == "completed" and fake.calls["refused:401"] >= 1
    assert not stack.failures


def test_azure_api_key_rotated_mid_batch_is_read_again_and_the_batch_completes(
    stack: Stack, azure: tuple[FakeAzureOpenAI, str]
) -> None:
    # Given an api key in Secrets Manager, with which the batch is submitted
    fake, _ = azure
    secrets = boto3.client("secretsmanager")
    secrets.create_secret(Name=KEY_SECRET, SecretString=AZURE_KEY)
    batch_id = started(stack, batch_lines(2, model="azure-key-from-secrets-manager"))
    stack.deliver("SubmitterFunction")
    assert batch(stack, batch_id)["status"] == "in_progress"

    # When the key is rotated at Azure and in Secrets Manager
    fake.api_keys = {"azure-rotated-key"}
    secrets.put_secret_value(SecretId=KEY_SECRET, SecretString="azure-rotated-key")

    # Then the batch completes with the new key
    (done,) = finish(stack, batch_id)
    assert done["status"] == "completed" and fake.calls["refused:401"] >= 1
    assert not stack.failures
