"""The DynamoDB BatchStore: batch items, whose updates are the transitions of shared/lifecycle.py.

An unfinished batch sits in one shard of the work index (`WORK#{n}`, n from its id), so the poller reads
shards in parallel and no partition takes every write; within a shard it sorts by its work key,
`{deployment}#{id}`, so that the poller can hand out one deployment's batches to one invocation, which
then finds them all in its provider's list pages. A finished batch whose provider objects are still to
be removed sits under `CLEANUP` until they are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from decimal import Decimal
from itertools import pairwise
from typing import Any, Final

from shared import lifecycle
from shared.errors import AdmitRefused, UnreadableRecord
from shared.lifecycle import Outcome
from shared.records import MASTER_OWNER, BatchRecord, Cost, Counts, ErrorEntry
from shared.storage.dynamo import (
    KIND_INDEX,
    OWNER_INDEX,
    WORK_INDEX,
    Dynamo,
    Item,
    TransactionRefused,
    Update,
    key,
    listing,
    money,
    parse,
    picodollars,
)
from shared.storage.file_store import file_key, file_values
from shared.storage.key_store import key_key, spend_update
from shared.storage.ports import EVERYTHING, Booking, Broken, Page, WorkItem, WorkRange

WORK_SHARDS: Final = 8
CLEANUP: Final = "CLEANUP"


def shard_of(batch_id: str) -> int:
    """The work-index shard a batch lives in, fixed by its id."""
    return int.from_bytes(hashlib.blake2b(batch_id.encode(), digest_size=2).digest()) % WORK_SHARDS


def work_key(deployment: str, batch_id: str) -> str:
    """Where a batch sorts in its shard. Deployment keys never hold a "#" (shared/routing.py), which sorts
    below every character they may hold, so no deployment's batches sort among another's."""
    return f"{deployment}#{batch_id}"


def work_ranges(deployments: Iterable[str]) -> list[WorkRange]:
    """Ranges that together cover the whole work index, each holding one of `deployments`' batches (and
    whatever else sorts beside them: a removed deployment's, a key written before work keys)."""
    bounds = [work_key(d, "") for d in sorted(set(deployments))][1:]
    edges: list[str | None] = [None, *bounds, None]
    return [WorkRange(start, stop) for start, stop in pairwise(edges)]


def batch_key(batch_id: str) -> Item:
    return key(f"BATCH#{batch_id}", "BATCH")


def _cost(cost: Cost) -> dict[str, Decimal]:
    return {"input": money(cost.input), "output": money(cost.output)}


def _errors(errors: tuple[ErrorEntry, ...]) -> list[dict[str, Any]] | None:
    return [e.model_dump(exclude_none=True) for e in errors] or None


def parse_batch(item: Mapping[str, Any]) -> BatchRecord:
    return parse(BatchRecord, item)


class DynamoBatchStore:
    def __init__(self, db: Dynamo) -> None:
        self._db = db

    def _update(self, batch_id: str, update: Update) -> BatchRecord:
        return parse_batch(self._db.update(batch_key(batch_id), update))

    @staticmethod
    def _waiting(update: Update, *statuses: lifecycle.BatchStatus) -> Update:
        """The batch is in one of `statuses` and its provider run has not ended."""
        return update.status_in(frozenset(statuses)).equals("finalize_to", None)

    # --- reads --------------------------------------------------------------------------------------

    def get(self, batch_id: str) -> BatchRecord | None:
        item = self._db.get(batch_key(batch_id))
        return parse_batch(item) if item else None

    def reading_ahead(self, batch_id: str) -> AbstractContextManager[None]:
        """Within it, the next read of the table (a key's check) reads the batch too (Dynamo.reading_ahead)."""
        return self._db.reading_ahead(batch_key(batch_id))

    def page(self, owner: str | None, *, after: str | None, limit: int) -> Page[BatchRecord]:
        if owner is None:
            index, partition, sort = KIND_INDEX, ("gsi2pk", "BATCH"), "gsi2sk"
        else:
            index, partition, sort = OWNER_INDEX, ("gsi1pk", f"OWNER#{owner}#BATCH"), "gsi1sk"
        page = self._db.page(
            index=index, partition=partition, sort_name=sort, after=after, limit=limit, ascending=False
        )
        return Page([parse_batch(i) for i in page.items], page.has_more)

    def work(self, shard: int, within: WorkRange = EVERYTHING) -> Iterator[WorkItem]:
        condition, values = "gsi3pk = :shard", {":shard": {"S": f"WORK#{shard}"}}
        if within.start is not None:
            values[":start"] = {"S": within.start}
        if within.stop is not None:
            values[":stop"] = {"S": within.stop}
        if within.start is not None and within.stop is not None:
            condition += " AND gsi3sk BETWEEN :start AND :stop"  # inclusive: the stop itself is skipped below
        elif within.start is not None:
            condition += " AND gsi3sk >= :start"
        elif within.stop is not None:
            condition += " AND gsi3sk < :stop"
        for item in self._db.query(
            IndexName=WORK_INDEX, KeyConditionExpression=condition, ExpressionAttributeValues=values
        ):
            work_key = str(item["gsi3sk"]["S"])
            if not within.holds(work_key):
                continue
            if not item.get("deployment", {}).get("S"):
                # a batch of several models (its runs have the deployments): polling it reads its runs, which
                # the index does not hold (it projects what polling one run reads); read them alone, as the
                # item may hold what a tenant managed to store badly
                runs = self._db.get(key(item["pk"]["S"], item["sk"]["S"]), only="runs")
                item = {**item, **(runs or {})}
            try:
                yield WorkItem(work_key, parse_batch(item))
            except UnreadableRecord as exc:
                yield WorkItem(work_key, Broken(exc.key, exc.reason))

    def cleanups(self) -> Iterator[str]:
        for item in self._db.query(
            IndexName=WORK_INDEX,
            KeyConditionExpression="gsi3pk = :cleanup",
            ExpressionAttributeValues={":cleanup": {"S": CLEANUP}},
        ):
            yield str(item["pk"]["S"]).removeprefix("BATCH#")

    # --- transitions --------------------------------------------------------------------------------

    @staticmethod
    def _values(batch: BatchRecord) -> dict[str, Any]:
        """A new batch's item: listed for its owner unless it is a run of another batch, in the work index."""
        return {
            **batch.model_dump(mode="python", exclude_none=True),
            "reserved": money(batch.reserved),
            "pk": f"BATCH#{batch.id}",
            "sk": "BATCH",
            **({} if batch.parent else listing("BATCH", batch.owner, batch.id)),
            "gsi3pk": f"WORK#{shard_of(batch.id)}",
            "gsi3sk": work_key(batch.deployment, batch.id),
        }

    def get_many(self, batch_ids: Sequence[str]) -> list[BatchRecord]:
        return [parse_batch(item) for item in self._db.get_many([batch_key(b) for b in batch_ids])]

    def admit(self, batch: BatchRecord, *, runs: Sequence[BatchRecord] = (), max_budget: Decimal | None) -> None:
        in_use = Update().exists().add(in_use={batch.id})
        expiry = in_use.path("expires_at")
        in_use.when(f"attribute_not_exists({expiry}) OR {expiry} > {in_use.value(batch.created_at)}")
        ops = [
            self._db.put_op(self._values(batch), new=True),
            self._db.update_op(file_key(batch.input_file_id), in_use),
        ]
        if batch.owner != MASTER_OWNER:
            held = picodollars(batch.reserved)
            hold = Update().exists().add(reserved=held, committed=held)
            if max_budget is not None:
                room = picodollars(max_budget) - held
                if room < 0:
                    raise AdmitRefused("budget")
                committed = hold.path("committed")
                hold.when(f"attribute_not_exists({committed}) OR {committed} <= {hold.value(room)}")
            ops.append(self._db.update_op(key_key(batch.owner), hold))
        ops.extend(self._db.put_op(self._values(run), new=True) for run in runs)
        try:
            self._db.transact(ops)
        except TransactionRefused as exc:
            reasons = {0: "exists", 1: "file", 2: "budget" if batch.owner != MASTER_OWNER else "exists"}
            raise AdmitRefused(reasons.get(min(exc.failed, default=-1), "conflict")) from exc

    def claim_submission(self, batch_id: str, *, now: int, lease_seconds: int) -> BatchRecord:
        update = self._waiting(Update(), "validating")
        update.when(f"{update.path('submit_lease_until')} < {update.value(now)}")
        update.when(f"{update.path('retry_at')} <= {update.value(now)}")
        update.assign(submit_lease_until=now + lease_seconds, updated_at=now).add(submit_attempts=1)
        return self._update(batch_id, update)

    def record_refs(self, batch_id: str, refs: Mapping[str, str]) -> None:
        update = self._waiting(Update(), "validating", "cancelling")
        update.set_paths({f"provider_refs.{name}": value for name, value in refs.items()})
        self._db.update(batch_key(batch_id), update)

    def record_screening(self, batch_id: str, rejected: int) -> BatchRecord:
        return self._update(batch_id, self._waiting(Update(), "validating", "cancelling").assign(rejected=rejected))

    def move(self, batch_id: str, *, deployment: str, tried: Sequence[str], now: int) -> BatchRecord:
        update = self._waiting(Update(), "validating")
        update.assign(
            deployment=deployment,
            gsi3sk=work_key(deployment, batch_id),
            provider_refs={},
            tried_deployments=list(tried),
            rejected=-1,
            updated_at=now,
        )
        return self._update(batch_id, update)

    def release_submission(self, batch_id: str, *, retry_at: int, now: int) -> None:
        update = self._waiting(Update(), "validating", "cancelling")
        self._db.update(batch_key(batch_id), update.assign(submit_lease_until=0, retry_at=retry_at, updated_at=now))

    def start(self, batch_id: str, *, now: int) -> BatchRecord:
        update = self._waiting(Update(), *lifecycle.sources("in_progress"))
        update.assign(status="in_progress", in_progress_at=now, submit_lease_until=0, retry_at=0, updated_at=now)
        return self._update(batch_id, update)

    def request_cancel(self, batch: BatchRecord, *, now: int) -> BatchRecord:
        update = self._waiting(Update(), *({batch.status} & lifecycle.sources("cancelling")))
        return self._update(batch.id, update.assign(status="cancelling", cancelling_at=now, updated_at=now))

    def mark_cancel_sent(self, batch_id: str, *, expiring: bool) -> BatchRecord:
        update = self._waiting(Update(), *lifecycle.RUNNING)
        return self._update(batch_id, update.assign(expiring=True) if expiring else update.assign(cancel_sent=True))

    def record_counts(self, batch: BatchRecord, counts: Counts, *, now: int) -> None:
        update = self._waiting(Update(), batch.status).assign(request_counts=counts.model_dump(), updated_at=now)
        # a provider's counts only grow: an older answer (a stale poller's) writes nothing
        for name in ("completed", "failed"):
            update.when(f"{update.path(f'request_counts.{name}')} <= {update.value(getattr(counts, name))}")
        self._db.update(batch_key(batch.id), update)

    def end_run(
        self,
        batch: BatchRecord,
        outcome: Outcome,
        *,
        errors: tuple[ErrorEntry, ...],
        output_file_id: str,
        error_file_id: str,
        now: int,
    ) -> BatchRecord:
        shown = lifecycle.shown_while_finalizing(batch.status, outcome)
        update = self._waiting(Update(), batch.status).assign(
            finalize_to=outcome,
            status=shown,
            updated_at=now,
            reserved_output_file_id=output_file_id,
            reserved_error_file_id=error_file_id,
        )
        if shown != batch.status:
            update.set_paths({lifecycle.TIMESTAMP_FIELD[shown]: now})
        if errors:
            update.assign(errors=_errors(errors))
        return self._update(batch.id, update)

    def redrive_submission(self, batch: BatchRecord, *, now: int) -> None:
        update = self._waiting(Update(), "validating").equals("submit_lease_until", batch.submit_lease_until)
        self._db.update(batch_key(batch.id), update.assign(updated_at=now).add(submit_redrives=1))

    def redrive_completion(self, batch: BatchRecord, *, now: int) -> BatchRecord:
        update = Update().status_in({batch.status}).equals("finalize_to", batch.finalize_to)
        update.equals("updated_at", batch.updated_at).assign(updated_at=now).add(finalize_redrives=1)
        return self._update(batch.id, update)

    def finish(self, batch: BatchRecord, booking: Booking) -> None:
        final = Update().status_in({batch.status}).equals("finalize_to", batch.finalize_to)
        written = {f.id for f in booking.files}
        final.set_paths(
            {
                "status": booking.status,
                lifecycle.TIMESTAMP_FIELD[booking.status]: booking.at,
                "output_file_id": batch.reserved_output_file_id if batch.reserved_output_file_id in written else None,
                "error_file_id": batch.reserved_error_file_id if batch.reserved_error_file_id in written else None,
                "request_counts": booking.counts.model_dump(),
                "usage": booking.usage.model_dump(),
                "cost": _cost(booking.cost),
                "cost_by_model": {m: _cost(c) for m, c in booking.cost_by_model.items()}
                if booking.cost_by_model
                else None,
                "errors": _errors(booking.errors),
                "finalize_to": None,
                "reserved_output_file_id": None,
                "reserved_error_file_id": None,
                "updated_at": booking.at,
            }
        )
        if booking.cleanup:
            final.assign(gsi3pk=CLEANUP, gsi3sk=batch.id)
        else:
            final.remove("gsi3pk", "gsi3sk")
        ops = [self._db.update_op(batch_key(batch.id), final)]
        if batch.parent is None:  # a run's batch releases the input and books the cost
            ops.append(
                self._db.update_op(file_key(batch.input_file_id), Update().delete_from_set("in_use", {batch.id}))
            )
            ops.extend(self._db.put_op(file_values(f)) for f in booking.files)
            ops.extend(spend_update(self._db, booking.spend, owner=batch.owner, released=batch.reserved))
        self._db.transact(ops)

    def cleaned(self, batch_id: str) -> None:
        self._db.update(batch_key(batch_id), Update().exists().remove("gsi3pk", "gsi3sk"))

    def rerun(
        self,
        batch: BatchRecord,
        refs: Mapping[str, str],
        *,
        lease_until: int,
        retry_at: int,
        now: int,
        attempt: bool = False,
    ) -> BatchRecord:
        update = self._waiting(Update(), "in_progress", "cancelling")
        update.equals("submit_lease_until", batch.submit_lease_until)
        update.equals("provider_refs.batch_id", batch.provider_refs.get("batch_id"))
        update.assign(provider_refs=dict(refs), submit_lease_until=lease_until, retry_at=retry_at, updated_at=now)
        return self._update(batch.id, update.add(submit_attempts=1) if attempt else update)
