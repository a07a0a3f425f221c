"""Estimates and batches of several models, as users see them: the openai SDK against `batchgw dev`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.e2e.conftest import wait_terminal

pytestmark = pytest.mark.e2e


def lines_file(path: Path, rows: list[tuple[str, str]], **body: Any) -> Path:
    with path.open("wb") as out:
        for custom_id, model in rows:
            request = {"model": model, "messages": [{"role": "user", "content": f"say {custom_id}"}], **body}
            line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": request}
            out.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
    return path


def test_an_estimate_creates_nothing_and_bounds_what_the_batch_holds(client: openai.OpenAI, tmp_path: Path) -> None:
    path = lines_file(tmp_path / "e.jsonl", [("a", "gpt-4o-mini"), ("b", "gpt-4o-mini")], max_tokens=100)
    file = client.files.create(file=path, purpose="batch")
    before = len(client.batches.list(limit=100).data)
    estimate: dict[str, Any] = client.post(
        "/batches/estimate", cast_to=dict[str, Any], body={"input_file_id": file.id, "endpoint": "/v1/chat/completions"}
    )
    assert estimate["object"] == "batch.estimate" and estimate["model"] == "gpt-4o-mini"
    assert estimate["requests"] == 2 and estimate["max_output_tokens"] == 200 and estimate["input_tokens"] > 0
    assert 0 < estimate["cost"]["input"] < estimate["cost"]["max"] and estimate["cost"]["currency"] == "usd"
    assert estimate["budget"] is None  # the master key has none
    assert len(client.batches.list(limit=100).data) == before


def test_an_estimate_is_refused_as_a_create_would_be(client: openai.OpenAI, tmp_path: Path) -> None:
    file = client.files.create(file=lines_file(tmp_path / "x.jsonl", [("a", "no-such-model")]), purpose="batch")
    with pytest.raises(openai.BadRequestError) as refused:
        client.post(
            "/batches/estimate",
            cast_to=dict[str, Any],
            body={"input_file_id": file.id, "endpoint": "/v1/chat/completions"},
        )
    assert refused.value.code == "model_not_found"


def test_one_file_for_two_models_is_one_batch_with_every_result_once_and_each_models_cost(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    rows = [("g1", "gpt-4o-mini"), ("c1", "claude-sonnet-4-5"), ("g2", "gpt-4o-mini"), ("c2", "claude-sonnet-4-5")]
    file = client.files.create(file=lines_file(tmp_path / "mixed.jsonl", rows), purpose="batch")
    batch = client.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.model == "gpt-4o-mini,claude-sonnet-4-5"

    done = wait_terminal(client, batch.id)

    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (4, 4, 0)
    assert done.output_file_id is not None
    output = [orjson.loads(line) for line in client.files.content(done.output_file_id).content.splitlines()]
    assert sorted(line["custom_id"] for line in output) == ["c1", "c2", "g1", "g2"]
    cost = (done.model_extra or {})["cost"]
    assert set(cost["models"]) == {"gpt-4o-mini", "claude-sonnet-4-5"}
    assert cost["value"] == pytest.approx(sum(m["value"] for m in cost["models"].values()), rel=1e-9)
    # its runs are its own business: the list shows the one batch
    assert client.batches.list(limit=5).data[0].id == batch.id
