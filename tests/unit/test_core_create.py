"""Creating batches over the in-memory ports: admission, budgets that hold, the outbox, unreadable items."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest

from shared.auth import MASTER
from shared.errors import BudgetExceeded, InvalidRequest, NotFound
from shared.pricing import max_cost
from shared.storage.dynamo import money
from shared.wire import CreateBatchRequest, EstimateRequest
from tests.unit.conftest import World, chat_lines


def maximum(world: World, content: bytes) -> Decimal:
    """What admission holds for a batch of `content` on the gpt-4o-mini deployment."""
    file_id = world.upload(content)
    info = world.db.files[file_id].batch_input
    assert info is not None
    (deployment,) = world.routing.deployments_for("gpt-4o-mini")
    return money(max_cost(deployment, info.models["gpt-4o-mini"]))


def test_create_admits_a_validating_batch_holds_its_maximum_and_announces_it(world: World) -> None:
    key = world.key()
    content = chat_lines(["a", "b"], max_tokens=50)
    batch_id = world.create(content, key)
    batch = world.db.batches[batch_id]
    assert batch.status == "validating" and batch.reserved == maximum(world, content) > 0
    assert world.key_record(key).reserved == batch.reserved
    assert [d["batch_id"] for d in world.bus.of("Batch Created")] == [batch_id]
    assert world.db.in_use[batch.input_file_id] == {batch_id}


def test_the_maximum_bounds_output_by_each_lines_limit_else_the_deployments(world: World) -> None:
    (deployment,) = world.routing.deployments_for("gpt-4o-mini")
    capped = world.db.files[world.upload(chat_lines(["a"], max_completion_tokens=10))].batch_input
    uncapped = world.db.files[world.upload(chat_lines(["a"]))].batch_input
    assert capped is not None and uncapped is not None
    assert capped.models["gpt-4o-mini"].output_tokens == 10 and capped.models["gpt-4o-mini"].unbounded_lines == 0
    assert uncapped.models["gpt-4o-mini"].unbounded_lines == 1
    assert max_cost(deployment, uncapped.models["gpt-4o-mini"]) > max_cost(deployment, capped.models["gpt-4o-mini"])
    # an unbounded line is bounded by the deployment's max_output_tokens: gpt-4o-mini at $0.30/M output
    assert (
        max_cost(deployment, uncapped.models["gpt-4o-mini"])
        >= Decimal(deployment.output_bound) * Decimal("0.30") / 1_000_000
    )


def test_a_line_asking_for_several_answers_without_a_limit_is_bounded_for_each_answer(world: World) -> None:
    # Given a key whose budget holds one unlimited answer's maximum twice over, and a tenant's request for 50
    # answers (`n`) with no max_tokens: each of the 50 may run to the deployment's max_output_tokens
    one = chat_lines(["a"])
    key = world.key(max_budget=2 * maximum(world, one))
    many = chat_lines(["a"], n=50)

    # When it is created, it is refused: its maximum holds all 50 answers
    with pytest.raises(BudgetExceeded):
        world.create(many, key)
    (deployment,) = world.routing.deployments_for("gpt-4o-mini")
    output_share = Decimal(deployment.output_bound) * Decimal("0.30") / 1_000_000  # gpt-4o-mini's batch output
    assert maximum(world, many) - maximum(world, one) >= 49 * output_share
    assert world.key_record(key).reserved == 0 and not world.db.batches


@pytest.mark.parametrize(
    ("lines", "limits"),
    [(1, {"max_tokens": 2**63 - 1, "n": 2**63 - 1}), (50_000, {"max_completion_tokens": 2**63 - 1})],
    ids=["n-and-max-tokens", "max-completion-tokens-on-every-line"],
)
def test_a_batch_whose_maximum_is_beyond_any_model_is_refused_and_holds_nothing(
    world: World, lines: int, limits: dict[str, Any]
) -> None:
    # Given output limits as large as JSON integers go: no model answers that much, and no amount the table
    # keeps holds what it would cost
    content = chat_lines([f"a{i}" for i in range(lines)], **limits)

    # When a batch is estimated or created, for a key with a budget or without one, then it is a 400 naming
    # the fields to lower, not a fault
    for principal in (MASTER, world.key(), world.key(max_budget=Decimal(1000))):
        request = EstimateRequest(input_file_id=world.upload(content, principal.owner), endpoint="/v1/chat/completions")
        with pytest.raises(InvalidRequest) as estimate:
            world.batches.estimate(principal, request)
        with pytest.raises(InvalidRequest) as create:
            world.create(content, principal)
        for refused in (estimate.value, create.value):
            assert refused.code == "max_cost_too_large" and "max_tokens" in refused.message, refused.message
    assert not world.db.batches and all(k.reserved == 0 for k in world.db.keys.values())


def test_a_batch_over_what_the_budget_has_left_is_refused_saying_its_maximum_and_whats_left(world: World) -> None:
    content = chat_lines(["a"], max_tokens=100)
    most = maximum(world, content)
    key = world.key(max_budget=most * 3 / 2)
    world.create(content, key)
    with pytest.raises(BudgetExceeded) as refused:
        world.create(content, key)
    # to the picodollar: "$0.000042" hid what a sub-cent budget holds
    said = refused.value.message
    assert f"up to ${most.normalize():f} " in said and f"${(most / 2).normalize():f} left" in said, said
    assert len(world.db.batches) == 1 and world.key_record(key).reserved == most


def test_a_stored_budget_finer_than_a_picodollar_is_counted_as_admission_counts_it(world: World) -> None:
    # a key made before budgets were rounded to the picodollar: two maxima less 0.4 of one holds two batches
    content = chat_lines(["a"], max_tokens=100)
    most = maximum(world, content)
    key = world.key(max_budget=2 * most - Decimal("0.4e-12"))
    world.create(content, key)
    world.create(content, key)
    with pytest.raises(BudgetExceeded):
        world.create(content, key)
    assert world.key_record(key).reserved == 2 * most


def test_concurrent_creates_never_hold_more_than_the_budget(world: World) -> None:
    # Given a budget that fits exactly 3 batches' maxima, and 20 creates at once
    content = chat_lines(["a"], max_tokens=100)
    most = maximum(world, content)
    key = world.key(max_budget=most * 3)
    files = [world.upload(content, key.owner) for _ in range(20)]
    outcomes: list[str] = []

    def create(file_id: str) -> None:
        request = CreateBatchRequest(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
        try:
            world.batches.create(key, request)
            outcomes.append("admitted")
        except BudgetExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(f,)) for f in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("admitted") == 3 and outcomes.count("refused") == 17
    assert world.key_record(key).reserved == most * 3


def test_a_lost_batch_created_event_leaves_the_batch_for_the_poller(world: World) -> None:
    world.bus.fail = True
    batch_id = world.create(chat_lines(["a"]))
    assert world.db.batches[batch_id].status == "validating"
    world.bus.fail = False
    world.clock.advance(world.settings.submit_stuck_seconds + 1)
    world.poller.poll(world.db.batches[batch_id], now=int(world.clock()))
    assert [d["batch_id"] for d in world.bus.of("Batch Created")] == [batch_id]


def test_an_expired_input_file_is_not_found_and_cannot_become_a_batch(world: World) -> None:
    file = world.files.store("master", purpose="batch", filename="x", chunks=[chat_lines(["a"])], expires_after=3600)
    world.clock.advance(3601)
    request = CreateBatchRequest(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(NotFound):
        world.batches.create(MASTER, request)


def test_an_unreadable_batch_is_a_clear_error_to_its_owner_and_missing_to_everyone_else(world: World) -> None:
    owner, other = world.key(), world.key()
    batch_id = world.create(chat_lines(["a"]), owner)
    world.db.broken[batch_id] = (owner.owner, "metadata: keys must be 1-64 characters")
    with pytest.raises(InvalidRequest) as seen:
        world.batches.get(owner, batch_id)
    assert seen.value.code == "unreadable_object" and "metadata" in seen.value.message
    with pytest.raises(NotFound):
        world.batches.get(other, batch_id)
