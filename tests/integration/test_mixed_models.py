"""A batch of several models through the real handlers and events (moto, the mock and the OpenAI fake)."""

from __future__ import annotations

from tests.integration.conftest import Stack, batch, batch_lines, finish, lines, record, started


def test_a_batch_of_two_providers_runs_as_two_runs_and_completes_as_one_batch(stack: Stack) -> None:
    content = batch_lines(3, model="gpt-4o-mini", prefix="mock") + batch_lines(2, model="upstream-gpt-4o-mini")
    batch_id = started(stack, content)
    runs = record(stack, batch_id).runs
    assert len(runs) == 2

    (done,) = finish(stack, batch_id)

    assert done["status"] == "completed" and done["model"] == "gpt-4o-mini,upstream-gpt-4o-mini"
    assert done["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    ids = sorted(line["custom_id"] for line in lines(stack, done["output_file_id"]))
    assert ids == ["mock-0", "mock-1", "mock-2", "req-0", "req-1"]
    assert set(done["cost"]["models"]) == {"gpt-4o-mini", "upstream-gpt-4o-mini"}
    (row_a, row_b) = sorted(stack.rt.key_store.spend("master"), key=lambda r: r.model)
    assert {row_a.model, row_b.model} == {"gpt-4o-mini", "upstream-gpt-4o-mini"}
    assert float(row_a.cost + row_b.cost) == done["cost"]["value"]
    # the runs finished and cleaned up after themselves; the batch's parts are gone
    assert all(record(stack, run).status == "completed" for run in runs)
    assert not stack.failures
    assert batch(stack, batch_id)["output_file_id"] == done["output_file_id"]
