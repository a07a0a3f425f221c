"""The batch state machine: OpenAI's transitions and no others."""

from __future__ import annotations

import pytest

from shared import lifecycle

ALLOWED = {
    ("validating", "in_progress"),
    ("validating", "cancelling"),
    ("validating", "failed"),
    ("validating", "expired"),  # a batch whose provider kept it waiting (a full queue) past its window
    ("in_progress", "finalizing"),
    ("in_progress", "cancelling"),
    ("in_progress", "expired"),
    ("in_progress", "failed"),
    ("finalizing", "completed"),
    ("finalizing", "expired"),
    ("finalizing", "failed"),
    ("cancelling", "cancelled"),  # never finalizing: a cancelled batch ends cancelled, as OpenAI's do
    ("cancelling", "expired"),
    ("cancelling", "failed"),
}


@pytest.mark.parametrize("frm", sorted(lifecycle.STATUSES))
@pytest.mark.parametrize("to", sorted(lifecycle.STATUSES))
def test_transitions_are_exactly_the_allowed_ones(frm: lifecycle.BatchStatus, to: lifecycle.BatchStatus) -> None:
    assert lifecycle.can_move(frm, to) == ((frm, to) in ALLOWED)


def test_terminal_statuses_never_move() -> None:
    for status in lifecycle.TERMINAL:
        assert not any(lifecycle.can_move(status, to) for to in lifecycle.STATUSES)


@pytest.mark.parametrize(
    ("status", "outcome", "shown"),
    [
        ("in_progress", "completed", "finalizing"),
        ("in_progress", "expired", "in_progress"),
        ("in_progress", "cancelled", "cancelling"),
        ("cancelling", "cancelled", "cancelling"),
        ("validating", "failed", "validating"),
    ],
)
def test_status_shown_while_results_are_written(
    status: lifecycle.BatchStatus, outcome: lifecycle.Outcome, shown: lifecycle.BatchStatus
) -> None:
    assert lifecycle.shown_while_finalizing(status, outcome) == shown
    assert lifecycle.can_move(shown, outcome)
