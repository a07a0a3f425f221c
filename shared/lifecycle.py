"""The batch state machine (CONTRACT.md section 6): which status a batch may enter from which.

Statuses move as OpenAI's do. Every change is a conditional write whose condition comes from this table
(`sources`), so a worker that lost a race finds out instead of overwriting. A batch whose provider run
has ended carries `finalize_to` (its final status) until the completion step has written its files,
usage and cost; only then does the status become terminal.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]
# how a provider run ends: the final status the completion step will give the batch
Outcome = Literal["completed", "failed", "expired", "cancelled"]

STATUSES: Final = frozenset(get_args(BatchStatus))
TERMINAL: Final[frozenset[BatchStatus]] = frozenset({"completed", "failed", "expired", "cancelled"})
OUTCOMES: Final[frozenset[Outcome]] = frozenset(get_args(Outcome))

# to -> the statuses it may be entered from
_SOURCES: Final[dict[BatchStatus, frozenset[BatchStatus]]] = {
    "validating": frozenset(),
    "in_progress": frozenset({"validating"}),
    "cancelling": frozenset({"validating", "in_progress"}),
    "finalizing": frozenset({"in_progress"}),  # a cancelling batch ends cancelled, whatever its provider did
    "completed": frozenset({"finalizing"}),
    "expired": frozenset({"validating", "in_progress", "cancelling", "finalizing"}),
    "failed": frozenset({"validating", "in_progress", "cancelling", "finalizing"}),
    "cancelled": frozenset({"cancelling"}),
}

# the timestamp field stamped when a batch enters a status
TIMESTAMP_FIELD: Final[dict[BatchStatus, str]] = {
    "in_progress": "in_progress_at",
    "cancelling": "cancelling_at",
    "finalizing": "finalizing_at",
    "completed": "completed_at",
    "expired": "expired_at",
    "failed": "failed_at",
    "cancelled": "cancelled_at",
}

# statuses a batch is in while its provider run may still be going
RUNNING: Final[frozenset[BatchStatus]] = frozenset({"validating", "in_progress", "cancelling"})


def sources(status: BatchStatus) -> frozenset[BatchStatus]:
    """The statuses a batch may move to `status` from."""
    return _SOURCES[status]


def can_move(frm: BatchStatus, to: BatchStatus) -> bool:
    """Whether the state machine allows `frm` -> `to`."""
    return frm in _SOURCES[to]


def is_terminal(status: BatchStatus) -> bool:
    return status in TERMINAL


def shown_while_finalizing(status: BatchStatus, outcome: Outcome) -> BatchStatus:
    """The status a batch shows between its provider run ending and its completion step.

    OpenAI shows `finalizing` only on the way to `completed`; an expiring batch keeps its status and a
    cancelled one shows `cancelling` (even when it was cancelled at the provider) until its files are
    written.
    """
    if outcome == "completed" and can_move(status, "finalizing"):
        return "finalizing"
    if outcome == "cancelled" and can_move(status, "cancelling"):
        return "cancelling"
    return status


def final_status(shown: BatchStatus, outcome: Outcome) -> BatchStatus:
    """The terminal status a batch showing `shown` takes for `outcome` (failed when the machine forbids it)."""
    return outcome if can_move(shown, outcome) else "failed"
