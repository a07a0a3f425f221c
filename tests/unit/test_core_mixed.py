"""Batches of several models, and estimates, over the in-memory ports: one run per model, one batch seen."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from shared.auth import MASTER
from shared.deadline import Deadline
from shared.errors import BudgetExceeded, NotFound, ProviderError, StorageError
from shared.records import BatchRecord
from shared.wire import EstimateRequest
from tests.fakes.memory import MemoryBatchStore
from tests.unit.conftest import World, chat_lines, ok_line


def mixed(world: World, **fields: object) -> str:
    content = chat_lines(["g1", "g2"]) + chat_lines(["c1"], "claude-sonnet-4-5") + chat_lines(["g3"])
    return world.create(content, **fields)  # type: ignore[arg-type]


def submit_all(world: World) -> None:
    """Submit every run created."""
    for detail in world.bus.of("Batch Created"):
        world.submission.submit(detail["batch_id"])


def settle(world: World) -> None:
    """Poll, and complete what ended, until what the provider ended is done."""
    for _ in range(3):
        world.poller.tick(Deadline.after(30))
        world.deliver_ended()


def run_all(world: World) -> None:
    """Submit every run, let the provider finish them, poll, and complete what ended."""
    submit_all(world)
    world.provider.finish()
    settle(world)


def test_a_file_of_several_models_is_one_batch_with_one_hidden_run_per_model(world: World) -> None:
    batch_id = mixed(world)
    batch = world.db.batches[batch_id]
    assert batch.model == "gpt-4o-mini,claude-sonnet-4-5" and len(batch.runs) == 2
    runs = [world.db.batches[r] for r in batch.runs]
    assert [(r.model, r.request_counts.total, r.parent) for r in runs] == [
        ("gpt-4o-mini", 3, batch_id),
        ("claude-sonnet-4-5", 1, batch_id),
    ]
    assert [d["batch_id"] for d in world.bus.of("Batch Created")] == list(batch.runs)
    # runs are the batch's own business: never listed, never found
    assert [b.id for b in world.batches.list(MASTER, after=None, limit=10).items] == [batch_id]
    with pytest.raises(NotFound):
        world.batches.get(MASTER, batch.runs[0])


def test_each_run_sends_only_its_models_requests(world: World) -> None:
    batch_id = mixed(world)
    for run_id in world.db.batches[batch_id].runs:
        world.submission.submit(run_id)
    sent = {r.lines[0].body["model"]: [line.custom_id for line in r.lines] for r in world.provider.runs.values()}
    assert sent == {"gpt-4o-mini": ["g1", "g2", "g3"], "claude-sonnet-4-5": ["c1"]}
    assert world.db.batches[batch_id].status == "in_progress"


def test_the_batch_merges_its_runs_into_one_output_and_books_each_models_cost_once(world: World) -> None:
    key = world.key()
    content = chat_lines(["g1", "g2"]) + chat_lines(["c1"], "claude-sonnet-4-5") + chat_lines(["g3"])
    batch_id = world.create(content, key)
    run_all(world)
    done = world.db.batches[batch_id]
    assert done.status == "completed" and done.request_counts.total == 4 and done.request_counts.completed == 4
    output = world.blobs.objects[f"files/{done.output_file_id}"]
    assert sorted(orjson.loads(line)["custom_id"] for line in output.splitlines()) == ["c1", "g1", "g2", "g3"]
    assert done.cost_by_model is not None and set(done.cost_by_model) == {"gpt-4o-mini", "claude-sonnet-4-5"}
    assert done.cost is not None and done.cost.total == sum(c.total for c in done.cost_by_model.values()) > 0
    record = world.key_record(key)
    assert record.spend == done.cost.total and record.reserved == 0
    assert {row.model for row in world.key_store.spend(key.owner)} == {"gpt-4o-mini", "claude-sonnet-4-5"}
    assert [d["batch_id"] for d in world.bus.of("Batch Completed")] == [batch_id]
    assert not [k for k in world.blobs.objects if k.startswith(f"batches/{batch_id}/runs/")]


def test_a_running_batch_shows_its_runs_progress_summed(world: World) -> None:
    batch_id = mixed(world)
    submit_all(world)
    for run in world.provider.runs.values():
        run.results = [ok_line(line.custom_id) for line in run.lines[:1]]
    world.poller.tick(Deadline.after(30))
    shown = world.batches.get(MASTER, batch_id)
    assert shown.status == "in_progress" and shown.request_counts.completed == 2 and shown.request_counts.total == 4


def test_one_run_expired_makes_the_batch_expired_with_the_others_results_kept(world: World) -> None:
    batch_id = mixed(world)
    submit_all(world)
    gpt, claude = (world.provider.runs[f"prov_{r}"] for r in world.db.batches[batch_id].runs)
    gpt.state = "completed"
    claude.state, claude.results = "expired", []
    settle(world)
    done = world.db.batches[batch_id]
    assert done.status == "expired" and done.request_counts.completed == 3 and done.request_counts.failed == 1
    errors = world.blobs.objects[f"files/{done.error_file_id}"].decode()
    assert '"custom_id":"c1"' in errors and "batch_expired" in errors


def test_cancelling_the_batch_cancels_its_runs_and_it_ends_cancelled(world: World) -> None:
    batch_id = mixed(world)
    submit_all(world)
    world.batches.cancel(MASTER, batch_id)
    assert all(world.db.batches[r].status == "cancelling" for r in world.db.batches[batch_id].runs)
    world.poller.tick(Deadline.after(30))
    assert all(run.cancelled for run in world.provider.runs.values())
    world.provider.finish("cancelled", results=[])
    settle(world)
    assert world.db.batches[batch_id].status == "cancelled"


def cancel_cut_off_before_its_runs(world: World, monkeypatch: pytest.MonkeyPatch, batch_id: str) -> None:
    """A cancel that writes the batch `cancelling`, then fails on its runs' writes (throttled, or the function
    cut off): the client sees a 5xx."""
    real = MemoryBatchStore.request_cancel

    def throttled_on_runs(store: MemoryBatchStore, batch: BatchRecord, *, now: int) -> BatchRecord:
        if batch.parent is not None:
            raise StorageError("ProvisionedThroughputExceededException")
        return real(store, batch, now=now)

    with monkeypatch.context() as patched:
        patched.setattr(MemoryBatchStore, "request_cancel", throttled_on_runs)
        with pytest.raises(StorageError):
            world.batches.cancel(MASTER, batch_id)
    assert world.db.batches[batch_id].status == "cancelling"
    assert all(world.db.batches[r].status == "in_progress" for r in world.db.batches[batch_id].runs)


def test_a_cancel_cut_off_before_its_runs_reaches_them_through_the_poller(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = mixed(world)
    submit_all(world)
    cancel_cut_off_before_its_runs(world, monkeypatch, batch_id)  # and never retried
    for _ in range(2):  # one tick carries the cancel to the runs, the next cancels them at their providers
        world.poller.tick(Deadline.after(30))
    assert all(run.cancelled for run in world.provider.runs.values())
    world.provider.finish("cancelled", results=[])
    settle(world)
    assert world.db.batches[batch_id].status == "cancelled"


def test_a_repeated_cancel_carries_the_cancel_to_the_runs_an_earlier_one_did_not_reach(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = mixed(world)
    submit_all(world)
    cancel_cut_off_before_its_runs(world, monkeypatch, batch_id)
    assert world.batches.cancel(MASTER, batch_id).status == "cancelling"  # the SDK's retry
    assert all(world.db.batches[r].status == "cancelling" for r in world.db.batches[batch_id].runs)


def test_every_run_refused_fails_the_batch_with_each_runs_reason(world: World) -> None:
    world.provider.fail_submit = ProviderError("quota gone", retryable=False, code="quota")
    batch_id = mixed(world)
    submit_all(world)
    for _ in range(3):
        world.deliver_ended()
        world.poller.tick(Deadline.after(30))
    done = world.db.batches[batch_id]
    assert done.status == "failed" and done.request_counts.failed == 4
    assert sorted(e.message.split(":")[0] for e in done.errors) == ["claude-sonnet-4-5", "gpt-4o-mini"]


def test_the_estimate_prices_each_model_and_holds_what_a_create_would(world: World) -> None:
    content = chat_lines(["g1", "g2"], max_tokens=10) + chat_lines(["c1"], "claude-sonnet-4-5", max_tokens=20)
    file_id = world.upload(content)
    estimate = world.batches.estimate(MASTER, EstimateRequest(input_file_id=file_id, endpoint="/v1/chat/completions"))
    assert list(estimate.models) == ["gpt-4o-mini", "claude-sonnet-4-5"] and estimate.budget is None
    gpt, claude = estimate.models["gpt-4o-mini"], estimate.models["claude-sonnet-4-5"]
    assert (gpt.requests, gpt.max_output_tokens, claude.max_output_tokens) == (2, 20, 20)
    assert 0 < gpt.input_cost < gpt.max_cost and 0 < claude.input_cost < claude.max_cost
    # a create holds exactly the estimate's maximum
    batch_id = world.create(content)
    assert world.db.batches[batch_id].reserved == gpt.max_cost + claude.max_cost
    assert len(world.db.batches) == 3  # the estimate made nothing


def test_the_estimate_says_whether_the_batch_fits_the_keys_budget(world: World) -> None:
    content = chat_lines(["a"], max_tokens=10)
    probe = world.batches.estimate(
        MASTER, EstimateRequest(input_file_id=world.upload(content), endpoint="/v1/chat/completions")
    )
    most = probe.models["gpt-4o-mini"].max_cost
    key = world.key(max_budget=most * Decimal("1.5"))
    request = EstimateRequest(input_file_id=world.upload(content, key.owner), endpoint="/v1/chat/completions")
    first = world.batches.estimate(key, request)
    assert first.budget is not None and first.budget.fits
    world.create(content, key)
    second = world.batches.estimate(key, request)
    assert second.budget is not None and not second.budget.fits and second.budget.reserved == most
    with pytest.raises(BudgetExceeded):
        world.create(content, key)
