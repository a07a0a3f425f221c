"""A batch of several models through the real handlers and events (moto, the mock and the OpenAI fake)."""

from __future__ import annotations

import pytest

from shared.runs import Runs
from shared.runtime import reset_runtime
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


def test_a_batch_of_two_models_cancelled_at_once_ends_cancelled_without_a_failed_invocation(stack: Stack) -> None:
    # Given a batch of two models, cancelled before either run was submitted
    content = batch_lines(2, model="gpt-4o-mini", prefix="a") + batch_lines(2, model="text-embedding-3-small")
    batch_id = started(stack, content)
    cancel = stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth())
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelling"

    # When the poller ticks, it ends the runs, which never reached a provider; the batch waits for them (it
    # was ended with them, as a batch never submitted, and its completion then found no parts: NoSuchKey,
    # saved only by the retry, or not, by the order its events came in)
    stack.deliver("SubmitterFunction")
    stack.poll()
    assert [record(stack, run).finalize_to for run in record(stack, batch_id).runs] == ["cancelled"] * 2
    assert record(stack, batch_id).finalize_to is None

    # Then it ends cancelled with every request a batch_cancelled line, and no completion failed on the way
    (done,) = finish(stack, batch_id)
    assert done["status"] == "cancelled" and done["request_counts"] == {"total": 4, "completed": 0, "failed": 4}
    assert sorted(line["error"]["code"] for line in lines(stack, done["error_file_id"])) == ["batch_cancelled"] * 4
    assert not stack.failures, stack.failures


def test_a_batch_of_two_models_whose_last_run_did_not_end_it_is_ended_by_the_poller(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch of two models whose runs both completed, but whose last run's completion stopped before
    # ending the batch (as a crash between the two steps would)
    content = batch_lines(2, model="gpt-4o-mini", prefix="a") + batch_lines(2, model="text-embedding-3-small")
    batch_id = started(stack, content)
    runs = record(stack, batch_id).runs
    with monkeypatch.context() as patch:
        patch.setattr(Runs, "finished", lambda self, run: None)
        stack.run_until(lambda: all(record(stack, run).status == "completed" for run in runs))
    assert record(stack, batch_id).status == "in_progress"

    # When the poller ticks, it sees the batch's runs (they are not in its index entry) and ends it
    (done,) = finish(stack, batch_id)

    assert done["status"] == "completed" and done["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
    assert not stack.failures, stack.failures


def test_a_batch_of_two_models_whose_runs_wait_to_be_submitted_is_not_resubmitted_itself(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a batch of two models whose runs' submissions were lost, past the time the poller re-drives one
    monkeypatch.setenv("BATCHGW_SUBMIT_STUCK_SECONDS", "0")
    reset_runtime()
    content = batch_lines(2, model="gpt-4o-mini", prefix="a") + batch_lines(2, model="text-embedding-3-small")
    batch_id = started(stack, content)
    assert len(stack.pending("SubmitterFunction")) == 2

    # When the poller ticks, it re-drives the runs, never the batch (which has no deployment: a submitter
    # handed it failed it as `deployment_removed`)
    stack.poll()
    redriven = [event["detail"]["batch_id"] for event in stack.pending("SubmitterFunction")]
    assert sorted(redriven) == sorted(record(stack, batch_id).runs)

    # Then it runs to its end
    (done,) = finish(stack, batch_id)
    assert done["status"] == "completed" and done["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
