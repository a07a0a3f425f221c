"""Batches of several models: one run per model, seen by the user as one batch.

A run is a batch record of its own (`parent` names its batch): submitted, polled, cancelled and expired on
its own provider deployment like any batch, but never listed or shown, and its completion only leaves its
output and error lines as parts and books its counts, usage and cost on itself. Once every run of a batch
has finished, the batch's run ends, with a status derived from its runs:

| the runs | the batch |
| --- | --- |
| the user cancelled the batch | `cancelled` |
| any run expired | `expired` |
| every run failed | `failed` |
| otherwise | `completed` (requests that failed show in its counts and error file) |

and the batch's completion concatenates the parts into one output and one error file (every custom_id of
the file exactly once, since each run holds its model's), sums counts, usage and cost, keeps each model's
cost (`cost.models`), and books it all on the owner's key once. The poller re-checks a batch whose runs are
all done, should the run that finished last have stopped before ending it, and carries a cancelled batch's
cancel to the runs that a cancel stopped before reaching.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

from shared import lifecycle
from shared.errors import StaleState
from shared.lifecycle import Outcome
from shared.records import BatchRecord, Cost, Counts, ErrorEntry, Usage
from shared.storage.ports import BatchStore, Booking, Bus, SpendEntry
from shared.transitions import end_run

logger = logging.getLogger(__name__)


def outcome_of(batch: BatchRecord, runs: Sequence[BatchRecord]) -> Outcome:
    """The status a batch of several models ends with, from its runs' (the table in this module's doc)."""
    if batch.status == "cancelling":
        return "cancelled"
    statuses = {run.status for run in runs}
    if "expired" in statuses:
        return "expired"
    if statuses == {"failed"}:
        return "failed"
    return "completed"


def merged_errors(runs: Sequence[BatchRecord]) -> tuple[ErrorEntry, ...]:
    """The runs' batch-level errors (a provider that refused a run), each naming its model."""
    return tuple(
        error.model_copy(update={"message": f"{run.model}: {error.message}"}) for run in runs for error in run.errors
    )


@dataclass(frozen=True, slots=True)
class Runs:
    batches: BatchStore
    bus: Bus
    clock: Callable[[], float]

    def finished(self, run: BatchRecord) -> None:
        """A run has booked its results: end its batch's run if it was the last."""
        batch = self.batches.get(run.parent) if run.parent else None
        if batch is not None:
            self.end_if_done(batch)

    def end_if_done(self, batch: BatchRecord) -> str:
        """End the run of a batch of several models once all of its runs are terminal; what happened."""
        if batch.finalize_to is not None or lifecycle.is_terminal(batch.status):
            return "unchanged"
        runs = self.batches.get_many(batch.runs)
        if batch.status == "cancelling" and (carried := self.cancel(runs)):
            logger.warning("carried a cancel to runs it had not reached", extra={"batch_id": batch.id, "runs": carried})
        if len(runs) < len(batch.runs) or not all(lifecycle.is_terminal(run.status) for run in runs):
            return "waiting"
        now = int(self.clock())
        outcome = outcome_of(batch, runs)
        if outcome != "failed" and batch.status == "validating":
            try:
                batch = self.batches.start(batch.id, now=now)
            except StaleState:
                return "raced"
        ended = end_run(self.batches, self.bus, batch, outcome, now=now, errors=merged_errors(runs))
        return "ended" if ended else "raced"

    def cancel(self, runs: Sequence[BatchRecord]) -> int:
        """Move each of a cancelled batch's runs that may still run to `cancelling` (the poller then cancels it at
        its provider); how many moved. Conditional, so repeating it is harmless."""
        moved = 0
        for run in runs:
            if run.finalize_to is None and lifecycle.can_move(run.status, "cancelling"):
                with suppress(StaleState):  # a run that has ended meanwhile keeps its results
                    self.batches.request_cancel(run, now=int(self.clock()))
                    moved += 1
        return moved

    def booking(self, batch: BatchRecord, runs: Sequence[BatchRecord], counts: Counts, now: int) -> Booking:
        """What a batch of several models books: its runs' sums, each model's share, all on its key."""
        day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
        by_model = {run.model: run.cost or Cost() for run in runs}
        usage = Usage(**{name: sum(getattr(run.usage or Usage(), name) for run in runs) for name in Usage.model_fields})
        cost = Cost(
            input=sum((c.input for c in by_model.values()), Cost().input),
            output=sum((c.output for c in by_model.values()), Cost().output),
        )
        return Booking(
            status=lifecycle.final_status(batch.status, batch.finalize_to or "failed"),
            at=now,
            counts=counts,
            usage=usage,
            cost=cost,
            errors=batch.errors,
            files=(),
            spend=tuple(
                SpendEntry(
                    batch.owner, day, run.model, by_model[run.model], run.usage or Usage(), run.request_counts.total
                )
                for run in runs
            ),
            cleanup=False,
            cost_by_model=by_model,
        )
