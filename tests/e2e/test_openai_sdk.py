"""The whole product as its users see it: the official openai SDK against `batchgw dev`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.e2e.conftest import wait_terminal, write_batch
from tests.fakes.openai_upstream import FakeOpenAI

pytestmark = pytest.mark.e2e


def jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in client.files.content(file_id).content.splitlines()] if file_id else []


def test_flow_through_the_openai_upstream_completes_with_files_usage_and_cost(
    client: openai.OpenAI, tmp_path: Path, upstream: tuple[FakeOpenAI, str]
) -> None:
    file = client.files.create(file=write_batch(tmp_path / "in.jsonl", 5, "upstream-gpt-4o-mini"), purpose="batch")
    assert file.purpose == "batch" and file.filename == "in.jsonl"
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"run": "e2e"}
    )
    assert batch.status == "validating" and batch.metadata == {"run": "e2e"}

    done = wait_terminal(client, batch.id)

    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 5, 0)
    output = jsonl(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == [f"req-{i}" for i in range(5)]
    assert all(line["response"]["status_code"] == 200 for line in output)
    # the expected cost comes from what the upstream billed, at OpenAI's gpt-4o-mini batch prices
    fake, _ = upstream
    (billed,) = [b for b in fake.batches.values() if b.metadata.get("batchgw_batch_id") == batch.id]
    assert done.usage is not None and done.usage.input_tokens == billed.prompt_tokens
    assert done.usage.output_tokens == billed.completion_tokens
    expected = (billed.prompt_tokens * 0.075 + billed.completion_tokens * 0.30) / 1_000_000
    cost = (done.model_extra or {})["cost"]
    assert cost["value"] == pytest.approx(expected, rel=1e-9) and cost["currency"] == "usd"


def test_flow_on_the_mock_provider_with_the_dev_config_models(client: openai.OpenAI, tmp_path: Path) -> None:
    file = client.files.create(file=write_batch(tmp_path / "in.jsonl", 8, "claude-sonnet-4-5"), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    done = wait_terminal(client, batch.id)
    assert done.status == "completed" and done.output_file_id and done.error_file_id is None
    assert len(jsonl(client, done.output_file_id)) == 8
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"


def test_list_auto_paginates_over_45_batches_newest_first(client: openai.OpenAI, tmp_path: Path) -> None:
    file = client.files.create(file=write_batch(tmp_path / "in.jsonl", 1, "mock-slow"), purpose="batch")
    created = [
        client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h").id
        for _ in range(45)
    ]
    first_page = client.batches.list(limit=20)
    assert len(first_page.data) == 20 and first_page.has_more
    listed = [b.id for b in client.batches.list(limit=20)]
    mine = [b for b in listed if b in set(created)]
    assert mine == list(reversed(created))
    assert len(listed) == len(set(listed))


def test_cancel_moves_through_cancelling_to_cancelled(client: openai.OpenAI, tmp_path: Path) -> None:
    file = client.files.create(file=write_batch(tmp_path / "in.jsonl", 3, "mock-slow"), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    done = wait_terminal(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    assert {line["error"]["code"] for line in jsonl(client, done.error_file_id)} == {"batch_cancelled"}
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(batch.id)


def test_expired_upstream_batch_keeps_its_partial_results(client: openai.OpenAI, tmp_path: Path) -> None:
    file = client.files.create(file=write_batch(tmp_path / "in.jsonl", 4, "fake-expire"), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    done = wait_terminal(client, batch.id)
    assert done.status == "expired" and done.request_counts is not None, done
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 2)
    assert len(jsonl(client, done.output_file_id)) == 2
    assert {line["error"]["code"] for line in jsonl(client, done.error_file_id)} == {"batch_expired"}
    assert (done.model_extra or {})["cost"]["value"] > 0


def test_retrieve_unknown_batch_raises_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.batches.retrieve("batch_00000000000000000000000000ff")
    assert caught.value.request_id and caught.value.request_id.startswith("req_")


def test_malformed_file_raises_bad_request_naming_the_line(client: openai.OpenAI) -> None:
    content = (
        b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini"}}\n'
        b'{"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": "oops"}\n'
    )
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("bad.jsonl", content), purpose="batch")
    assert "line 2" in str(caught.value) and caught.value.code == "invalid_body"
    assert not [f for f in client.files.list() if f.filename == "bad.jsonl"]


def test_wrong_key_raises_authentication_error(base_url: str) -> None:
    with openai.OpenAI(base_url=base_url, api_key="sk-wrong") as wrong, pytest.raises(openai.AuthenticationError):
        wrong.batches.list()
