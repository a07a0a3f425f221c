"""The batch state machine (CONTRACT.md section 6).

Statuses move as OpenAI's do. Every change is a conditional write naming the statuses it may come from
(`sources`), so a worker that lost a race finds out instead of overwriting. A batch whose provider run
has ended carries `finalize_to` (its final status) until the completion step has written its files,
usage and cost; only then does the status become terminal.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]

STATUSES: Final = frozenset(get_args(BatchStatus))
TERMINAL: Final = frozenset({"completed", "failed", "expired", "cancelled"})

# to -> the statuses it may be entered from
_SOURCES: Final[dict[str, frozenset[str]]] = {
    "validating": frozenset(),
    "in_progress": frozenset({"validating"}),
    "cancelling": frozenset({"validating", "in_progress"}),
    "finalizing": frozenset({"in_progress", "cancelling"}),
    "completed": frozenset({"finalizing"}),
    "expired": frozenset({"in_progress", "cancelling", "finalizing"}),
    "failed": frozenset({"validating", "in_progress", "cancelling", "finalizing"}),
    "cancelled": frozenset({"cancelling"}),
}

# the timestamp field stamped when a batch enters a status
TIMESTAMP_FIELD: Final[dict[str, str]] = {
    "in_progress": "in_progress_at",
    "cancelling": "cancelling_at",
    "finalizing": "finalizing_at",
    "completed": "completed_at",
    "expired": "expired_at",
    "failed": "failed_at",
    "cancelled": "cancelled_at",
}


def sources(status: str) -> frozenset[str]:
    """The statuses a batch may move to `status` from."""
    return _SOURCES[status]


def can_move(frm: str, to: str) -> bool:
    """Whether the state machine allows `frm` -> `to`."""
    return frm in _SOURCES[to]


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def shown_while_finalizing(status: str, outcome: str) -> str:
    """The status a batch shows between its provider run ending and its completion step.

    OpenAI shows `finalizing` only on the way to `completed`; an expiring batch stays `in_progress`
    and a cancelled one shows `cancelling` (even when it was cancelled at the provider) until its
    files are written.
    """
    if outcome == "completed" and can_move(status, "finalizing"):
        return "finalizing"
    if outcome == "cancelled" and can_move(status, "cancelling"):
        return "cancelling"
    return status
