"""Nothing lost, seen as a user sees it: the openai SDK against `batchgw dev`, as a new user and as a hostile
tenant would drive it (tiny costs, budgets under concurrency, odd custom_ids, bad metadata, broken items)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import openai
import orjson
import pytest

from tests.e2e.conftest import DEV_KEY, dev_stack, wait_terminal
from tests.fakes.servers import aws_emulator

pytestmark = pytest.mark.e2e

ROUTING = """
models:
  - {name: gpt-4o-mini, provider: mock, delay: 0.5}
  - {name: text-embedding-3-small, provider: mock, delay: 0.5}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """`batchgw dev` on an AWS emulator this module can also reach (as AWS_ENDPOINT_URL, as a user would)."""
    with aws_emulator() as aws, dev_stack(tmp_path_factory.mktemp("lost"), ROUTING, env=aws) as base_url:
        yield base_url, aws


@pytest.fixture
def master(stack: tuple[str, dict[str, str]]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack[0], api_key=DEV_KEY) as sdk:
        yield sdk


def lines_file(path: Path, custom_ids: list[str], **body: Any) -> Path:
    with path.open("wb") as out:
        for custom_id in custom_ids:
            request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **body}
            line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": request}
            out.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
    return path


def run(client: openai.OpenAI, path: Path, **create: Any) -> openai.types.Batch:
    file = client.files.create(file=path, purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h", **create
    )
    return wait_terminal(client, batch.id)


def admin(stack: tuple[str, dict[str, str]], method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    base = stack[0].removesuffix("/v1")
    response = httpx.request(method, f"{base}{path}", headers={"Authorization": f"Bearer {DEV_KEY}"}, **kwargs)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_one_word_batch_finishes_and_its_tiny_cost_is_booked_exactly(
    stack: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    key = admin(stack, "POST", "/admin/keys", json={"name": "new-user"})
    with openai.OpenAI(base_url=stack[0], api_key=key["key"]) as client:
        chat = run(client, lines_file(tmp_path / "hi.jsonl", ["only"]))
        # one embedding of "hi" costs a few hundredths of a millionth of a dollar at batch prices
        path = tmp_path / "embed.jsonl"
        line = {
            "custom_id": "e",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": "hi"},
        }
        path.write_bytes(orjson.dumps(line) + b"\n")
        file = client.files.create(file=path, purpose="batch")
        created = client.batches.create(input_file_id=file.id, endpoint="/v1/embeddings", completion_window="24h")
        embed = wait_terminal(client, created.id)
    costs = []
    for done in (chat, embed):
        assert done.status == "completed" and done.request_counts is not None and done.request_counts.completed == 1
        costs.append((done.model_extra or {})["cost"]["value"])
    assert 0 < costs[1] < 0.000001  # under a millionth of a dollar: the case that never finished
    booked = admin(stack, "GET", f"/admin/keys/{key['id']}")
    assert booked["spend"] == pytest.approx(sum(costs), rel=1e-12, abs=0) and booked["reserved"] == 0


def test_twenty_concurrent_creates_never_spend_past_the_budget(
    stack: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    # Given a key whose budget fits exactly three batches' maxima (what one create holds, read back)
    path = lines_file(tmp_path / "in.jsonl", ["a", "b"], max_tokens=50)
    budget = 3 * _reserved_by_one_create(stack, path)
    key = admin(stack, "POST", "/admin/keys", json={"name": "tight", "max_budget": budget})

    # When 20 creates arrive at once
    with openai.OpenAI(base_url=stack[0], api_key=key["key"], max_retries=0) as client:
        file_ids = [client.files.create(file=path, purpose="batch").id for _ in range(20)]

        def create(file_id: str) -> str:
            try:
                return client.batches.create(
                    input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
                ).id
            except openai.BadRequestError as exc:
                assert exc.code == "budget_exceeded"
                return "refused"

        with ThreadPoolExecutor(max_workers=20) as pool:
            outcomes = list(pool.map(create, file_ids))
        admitted = [o for o in outcomes if o != "refused"]

        # Then three are admitted, and once they are done the spend is within the budget and nothing is held
        assert len(admitted) == 3
        for batch_id in admitted:
            assert wait_terminal(client, batch_id).status == "completed"
    final = admin(stack, "GET", f"/admin/keys/{key['id']}")
    assert final["spend"] <= budget and final["reserved"] == 0


def _reserved_by_one_create(stack: tuple[str, dict[str, str]], path: Path) -> float:
    """What the budget holds for one batch of `path`: a create's reservation, read before it finishes."""
    key = admin(stack, "POST", "/admin/keys", json={"name": "measure"})
    with openai.OpenAI(base_url=stack[0], api_key=key["key"]) as client:
        file = client.files.create(file=path, purpose="batch")
        client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    reserved: float = admin(stack, "GET", f"/admin/keys/{key['id']}")["reserved"]
    assert reserved > 0
    return reserved


def test_any_custom_id_comes_back_byte_for_byte_and_counts_add_up(master: openai.OpenAI, tmp_path: Path) -> None:
    odd = ["a\nb", "a", "b", "tab\there", 'quote"and\\slash', "emoji 🚀", "  leading", "x" * 512]
    done = run(master, lines_file(tmp_path / "odd.jsonl", odd))
    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (8, 8, 0)
    assert done.output_file_id is not None
    output = [orjson.loads(line) for line in master.files.content(done.output_file_id).content.splitlines()]
    assert [line["custom_id"] for line in output] == odd


@pytest.mark.parametrize(
    "metadata",
    [{"": "x"}, {"k" * 65: "x"}, {"k": "v" * 513}, {f"k{i}": "v" for i in range(17)}],
    ids=["empty-key", "long-key", "long-value", "17-pairs"],
)
def test_metadata_breaking_openais_rules_is_a_400(
    master: openai.OpenAI, tmp_path: Path, metadata: dict[str, str]
) -> None:
    file = master.files.create(file=lines_file(tmp_path / "m.jsonl", ["a"]), purpose="batch")
    with pytest.raises(openai.BadRequestError) as refused:
        master.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h", metadata=metadata
        )
    assert refused.value.status_code == 400 and refused.value.param is not None and "metadata" in refused.value.param


def test_an_item_the_poller_cannot_read_stops_no_other_tenants_batch(
    stack: tuple[str, dict[str, str]], master: openai.OpenAI, tmp_path: Path
) -> None:
    # Given a batch item that cannot be read back, sitting in every shard of the work index
    aws = stack[1]
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=aws["AWS_ENDPOINT_URL"],
        region_name=aws["AWS_DEFAULT_REGION"],
        aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
    )
    for shard in range(8):
        batch_id = f"batch_{shard:028x}"
        dynamodb.put_item(
            TableName="batchgw-dev",
            Item={
                "pk": {"S": f"BATCH#{batch_id}"},
                "sk": {"S": "BATCH"},
                "gsi3pk": {"S": f"WORK#{shard}"},
                "gsi3sk": {"S": batch_id},
                "id": {"S": batch_id},
                "owner": {"S": "key_somebody"},
                "metadata": {"M": {"": {"S": "x"}}},
            },
        )

    # When another tenant runs a batch, it finishes
    done = run(master, lines_file(tmp_path / "fine.jsonl", ["a", "b"]))
    assert done.status == "completed"
