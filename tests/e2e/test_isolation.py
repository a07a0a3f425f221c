"""Tenancy as users meet it: two virtual keys on one gateway, with the official openai SDK."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.conftest import DEV_KEY

pytestmark = pytest.mark.e2e

LINE = b'{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "mock-slow"}}\n'


def new_key(base_url: str, **body: object) -> str:
    response = httpx.post(
        f"{base_url.removesuffix('/v1')}/admin/keys", json=body, headers={"Authorization": f"Bearer {DEV_KEY}"}
    )
    response.raise_for_status()
    key: str = response.json()["key"]
    return key


@pytest.fixture
def clients(base_url: str) -> Iterator[tuple[openai.OpenAI, openai.OpenAI]]:
    with (
        openai.OpenAI(base_url=base_url, api_key=new_key(base_url, name="team-a")) as a,
        openai.OpenAI(base_url=base_url, api_key=new_key(base_url, name="team-b")) as b,
    ):
        yield a, b


def test_key_b_cannot_reach_key_a_files_or_batches(clients: tuple[openai.OpenAI, openai.OpenAI]) -> None:
    a, b = clients
    a_file = a.files.create(file=("a.jsonl", LINE), purpose="batch")
    a_batch = a.batches.create(input_file_id=a_file.id, endpoint="/v1/chat/completions", completion_window="24h")
    b_file = b.files.create(file=("b.jsonl", LINE), purpose="batch")
    b_batch = b.batches.create(input_file_id=b_file.id, endpoint="/v1/chat/completions", completion_window="24h")

    for attempt in (
        lambda: b.files.retrieve(a_file.id),
        lambda: b.files.content(a_file.id),
        lambda: b.files.delete(a_file.id),
        lambda: b.batches.retrieve(a_batch.id),
        lambda: b.batches.cancel(a_batch.id),
        lambda: b.batches.create(input_file_id=a_file.id, endpoint="/v1/chat/completions", completion_window="24h"),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()

    assert {f.id for f in b.files.list()} == {b_file.id}
    assert {x.id for x in b.batches.list()} == {b_batch.id}
    # cursors taken from A's lists lead B only through B's own objects
    assert a_file.id not in {f.id for f in b.files.list(after=a_file.id, order="asc")}
    assert a_file.id not in {f.id for f in b.files.list(after=a_file.id, order="desc")}
    assert a_batch.id not in {x.id for x in b.batches.list(after=a_batch.id)}
    # A still has everything
    assert a.batches.retrieve(a_batch.id).status in {"validating", "in_progress"}
    assert a.files.content(a_file.id).content == LINE


def test_model_allowlist_and_budget_errors_reach_the_sdk(base_url: str) -> None:
    limited = openai.OpenAI(base_url=base_url, api_key=new_key(base_url, models=["gpt-4o-mini"]))
    file = limited.files.create(file=("x.jsonl", LINE), purpose="batch")
    with pytest.raises(openai.PermissionDeniedError, match="mock-slow"):
        limited.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    broke = openai.OpenAI(base_url=base_url, api_key=new_key(base_url, max_budget=0))
    file = broke.files.create(file=("x.jsonl", LINE), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:
        broke.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert caught.value.code == "budget_exceeded"
    limited.close()
    broke.close()
