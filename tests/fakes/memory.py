"""In-memory twins of every port (shared/storage/ports.py), honest about conditions: a write whose condition
fails raises what its DynamoDB store raises, and a transaction applies all of its writes or none.

They let the use cases be unit-tested in milliseconds, races included; the DynamoDB stores themselves are
tested through moto in tests/integration.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from batchgw import template
from shared import lifecycle
from shared.errors import AdmitRefused, PublishFailed, StaleState, UnreadableRecord
from shared.lifecycle import BatchStatus, Outcome
from shared.records import (
    MASTER_OWNER,
    BatchRecord,
    Counts,
    ErrorEntry,
    FileRecord,
    KeyGrant,
    KeyRecord,
    SpendRow,
    UploadRecord,
)
from shared.storage.batch_store import shard_of, work_key
from shared.storage.dynamo import WORK_INDEX, money
from shared.storage.ports import EVERYTHING, BlobSink, Booking, Broken, FifoMessage, Page, WorkItem, WorkRange


@dataclass
class MemoryDb:
    """The one table, in memory: every store of one test shares it, and its lock makes writes atomic."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    batches: dict[str, BatchRecord] = field(default_factory=dict)
    # batch id -> (its owner, why its item cannot be read)
    broken: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    work: dict[str, str] = field(default_factory=dict)  # batch id -> "WORK#n" or "CLEANUP"
    files: dict[str, FileRecord] = field(default_factory=dict)
    in_use: dict[str, set[str]] = field(default_factory=dict)
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    spend: dict[tuple[str, str, str], SpendRow] = field(default_factory=dict)
    uploads: dict[str, UploadRecord] = field(default_factory=dict)
    claims: dict[str, str] = field(default_factory=dict)
    failing: dict[str, int] = field(default_factory=dict)
    writes: int = 0


def _page[T](items: list[T], ids: list[str], after: str | None, limit: int, ascending: bool) -> Page[T]:
    pairs = sorted(zip(ids, items, strict=True), key=lambda p: p[0], reverse=not ascending)
    if after is not None:
        pairs = [p for p in pairs if (p[0] > after if ascending else p[0] < after)]
    return Page([p[1] for p in pairs[:limit]], len(pairs) > limit)


class MemoryBatchStore:
    def __init__(self, db: MemoryDb) -> None:
        self.db = db

    def _current(self, batch_id: str) -> BatchRecord:
        found = self.db.batches.get(batch_id)
        if found is None:
            raise StaleState(f"batch {batch_id} does not exist")
        return found

    def _waiting(self, batch_id: str, *statuses: BatchStatus) -> BatchRecord:
        """The batch, if it is in one of `statuses` and its run has not ended (else StaleState)."""
        batch = self._current(batch_id)
        if batch.status not in statuses or batch.finalize_to is not None:
            raise StaleState(f"batch {batch_id} is {batch.status}")
        return batch

    def _save(self, batch: BatchRecord, **changes: Any) -> BatchRecord:
        updated = batch.model_copy(update=changes)
        self.db.batches[batch.id] = BatchRecord.model_validate(updated.model_dump())
        self.db.writes += 1
        return self.db.batches[batch.id]

    def get(self, batch_id: str) -> BatchRecord | None:
        with self.db.lock:
            if batch_id in self.db.broken:
                owner, reason = self.db.broken[batch_id]
                raise UnreadableRecord(f"BATCH#{batch_id}", reason, owner=owner)
            return self.db.batches.get(batch_id)

    def page(self, owner: str | None, *, after: str | None, limit: int) -> Page[BatchRecord]:
        with self.db.lock:
            mine = [b for b in self.db.batches.values() if (owner is None or b.owner == owner) and b.parent is None]
        return _page(mine, [b.id for b in mine], after, limit, ascending=False)

    def work(self, shard: int, within: WorkRange = EVERYTHING) -> Iterator[WorkItem]:
        with self.db.lock:
            keys = {b: self._work_key(b) for b, where in self.db.work.items() if where == f"WORK#{shard}"}
            ids = sorted((b for b, k in keys.items() if within.holds(k)), key=keys.__getitem__)
            found = [
                WorkItem(
                    keys[b],
                    Broken(f"BATCH#{b}", self.db.broken[b][1]) if b in self.db.broken else _indexed(self.db.batches[b]),
                )
                for b in ids
            ]
        yield from found

    def _work_key(self, batch_id: str) -> str:
        batch = self.db.batches.get(batch_id)
        return work_key(batch.deployment if batch else "", batch_id)

    def cleanups(self) -> Iterator[str]:
        with self.db.lock:
            found = sorted(b for b, where in self.db.work.items() if where == "CLEANUP")
        yield from found

    def get_many(self, batch_ids: Sequence[str]) -> builtins.list[BatchRecord]:
        with self.db.lock:
            return [self.db.batches[b] for b in batch_ids if b in self.db.batches]

    def admit(self, batch: BatchRecord, *, runs: Sequence[BatchRecord] = (), max_budget: Decimal | None) -> None:
        with self.db.lock:
            if batch.id in self.db.batches or any(run.id in self.db.batches for run in runs):
                raise AdmitRefused("exists")
            file = self.db.files.get(batch.input_file_id)
            if file is None or (file.expires_at is not None and file.expires_at <= batch.created_at):
                raise AdmitRefused("file")
            held = money(batch.reserved)
            if batch.owner != MASTER_OWNER:
                key = self.db.keys.get(batch.owner)
                if key is None:
                    raise AdmitRefused("budget")
                # to the picodollar, as DynamoDB counts it
                if max_budget is not None and key.spend + key.reserved + held > money(max_budget):
                    raise AdmitRefused("budget")
                self.db.keys[key.id] = key.model_copy(update={"reserved": key.reserved + held})
            self.db.batches[batch.id] = batch.model_copy(update={"reserved": held})
            self.db.in_use.setdefault(batch.input_file_id, set()).add(batch.id)
            self.db.work[batch.id] = f"WORK#{shard_of(batch.id)}"
            for run in runs:
                self.db.batches[run.id] = run
                self.db.work[run.id] = f"WORK#{shard_of(run.id)}"
            self.db.writes += 1

    def claim_submission(self, batch_id: str, *, now: int, lease_seconds: int) -> BatchRecord:
        with self.db.lock:
            batch = self._waiting(batch_id, "validating")
            if batch.submit_lease_until >= now or batch.retry_at > now:
                raise StaleState("held, or asked to wait")
            return self._save(
                batch,
                submit_lease_until=now + lease_seconds,
                updated_at=now,
                submit_attempts=batch.submit_attempts + 1,
            )

    def record_refs(self, batch_id: str, refs: Mapping[str, str]) -> None:
        with self.db.lock:
            batch = self._waiting(batch_id, "validating", "cancelling")
            self._save(batch, provider_refs={**batch.provider_refs, **refs})

    def record_screening(self, batch_id: str, rejected: int) -> BatchRecord:
        with self.db.lock:
            return self._save(self._waiting(batch_id, "validating", "cancelling"), rejected=rejected)

    def move(self, batch_id: str, *, deployment: str, tried: Sequence[str], now: int) -> BatchRecord:
        with self.db.lock:
            batch = self._waiting(batch_id, "validating")
            return self._save(
                batch,
                deployment=deployment,
                provider_refs={},
                tried_deployments=tuple(tried),
                rejected=-1,
                updated_at=now,
            )

    def release_submission(self, batch_id: str, *, retry_at: int, now: int) -> None:
        with self.db.lock:
            batch = self._waiting(batch_id, "validating", "cancelling")
            self._save(batch, submit_lease_until=0, retry_at=retry_at, updated_at=now)

    def start(self, batch_id: str, *, now: int) -> BatchRecord:
        with self.db.lock:
            batch = self._waiting(batch_id, *lifecycle.sources("in_progress"))
            return self._save(
                batch, status="in_progress", in_progress_at=now, submit_lease_until=0, retry_at=0, updated_at=now
            )

    def request_cancel(self, batch: BatchRecord, *, now: int) -> BatchRecord:
        with self.db.lock:
            current = self._waiting(batch.id, *({batch.status} & lifecycle.sources("cancelling")))
            return self._save(current, status="cancelling", cancelling_at=now, updated_at=now)

    def mark_cancel_sent(self, batch_id: str, *, expiring: bool) -> BatchRecord:
        with self.db.lock:
            batch = self._waiting(batch_id, *lifecycle.RUNNING)
            return self._save(batch, **({"expiring": True} if expiring else {"cancel_sent": True}))

    def record_counts(self, batch: BatchRecord, counts: Counts, *, now: int) -> None:
        with self.db.lock:
            current = self._waiting(batch.id, batch.status)
            stored = current.request_counts
            if stored.completed > counts.completed or stored.failed > counts.failed:
                raise StaleState(f"batch {batch.id} has newer counts")
            self._save(current, request_counts=counts, updated_at=now)

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
        with self.db.lock:
            current = self._waiting(batch.id, batch.status)
            shown = lifecycle.shown_while_finalizing(batch.status, outcome)
            changes: dict[str, Any] = {
                "finalize_to": outcome,
                "status": shown,
                "updated_at": now,
                "reserved_output_file_id": output_file_id,
                "reserved_error_file_id": error_file_id,
            }
            if shown != batch.status:
                changes[lifecycle.TIMESTAMP_FIELD[shown]] = now
            if errors:
                changes["errors"] = errors
            return self._save(current, **changes)

    def redrive_submission(self, batch: BatchRecord, *, now: int) -> None:
        with self.db.lock:
            current = self._waiting(batch.id, "validating")
            if current.submit_lease_until != batch.submit_lease_until:
                raise StaleState("taken meanwhile")
            self._save(current, updated_at=now, submit_redrives=current.submit_redrives + 1)

    def redrive_completion(self, batch: BatchRecord, *, now: int) -> BatchRecord:
        with self.db.lock:
            current = self._current(batch.id)
            if (current.status, current.finalize_to, current.updated_at) != (
                batch.status,
                batch.finalize_to,
                batch.updated_at,
            ):
                raise StaleState("moved meanwhile")
            return self._save(current, updated_at=now, finalize_redrives=current.finalize_redrives + 1)

    def finish(self, batch: BatchRecord, booking: Booking) -> None:
        with self.db.lock:
            current = self._current(batch.id)
            if current.status != batch.status or current.finalize_to != batch.finalize_to:
                raise StaleState("finished meanwhile")
            written = {f.id for f in booking.files}
            self._save(
                current,
                status=booking.status,
                **{lifecycle.TIMESTAMP_FIELD[booking.status]: booking.at},
                output_file_id=batch.reserved_output_file_id if batch.reserved_output_file_id in written else None,
                error_file_id=batch.reserved_error_file_id if batch.reserved_error_file_id in written else None,
                request_counts=booking.counts,
                usage=booking.usage,
                cost=booking.cost.model_copy(
                    update={"input": money(booking.cost.input), "output": money(booking.cost.output)}
                ),
                cost_by_model=booking.cost_by_model,
                errors=booking.errors,
                finalize_to=None,
                reserved_output_file_id=None,
                reserved_error_file_id=None,
                updated_at=booking.at,
            )
            if booking.cleanup:
                self.db.work[batch.id] = "CLEANUP"
            else:
                self.db.work.pop(batch.id, None)
            if batch.parent is None:  # a run's batch releases the input and books the cost
                self.db.in_use.get(batch.input_file_id, set()).discard(batch.id)
                for file in booking.files:
                    self.db.files[file.id] = file
                self._book(batch.owner, booking, released=batch.reserved)

    def _book(self, owner: str, booking: Booking, *, released: Decimal) -> None:
        total = Decimal(0)
        for spend in booking.spend:
            cost = money(spend.cost.total)
            total += cost
            if not (cost or spend.usage.total_tokens):
                continue
            row = self.db.spend.get((spend.owner, spend.day, spend.model)) or SpendRow(day=spend.day, model=spend.model)
            self.db.spend[(spend.owner, spend.day, spend.model)] = row.model_copy(
                update={
                    "cost": row.cost + cost,
                    "input_cost": row.input_cost + money(spend.cost.input),
                    "output_cost": row.output_cost + money(spend.cost.output),
                    "input_tokens": row.input_tokens + spend.usage.input_tokens,
                    "output_tokens": row.output_tokens + spend.usage.output_tokens,
                    "requests": row.requests + spend.requests,
                    "batches": row.batches + 1,
                }
            )
        key = self.db.keys.get(owner)
        if key is not None:
            self.db.keys[key.id] = key.model_copy(
                update={"spend": key.spend + total, "reserved": key.reserved - money(released)}
            )

    def cleaned(self, batch_id: str) -> None:
        with self.db.lock:
            self.db.work.pop(batch_id, None)

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
        with self.db.lock:
            current = self._waiting(batch.id, "in_progress", "cancelling")
            if (current.submit_lease_until, current.provider_refs.get("batch_id")) != (
                batch.submit_lease_until,
                batch.provider_refs.get("batch_id"),
            ):
                raise StaleState("its provider run or submission moved meanwhile")
            return self._save(
                current,
                provider_refs=dict(refs),
                submit_lease_until=lease_until,
                retry_at=retry_at,
                updated_at=now,
                submit_attempts=current.submit_attempts + attempt,
            )


class MemoryFileStore:
    def __init__(self, db: MemoryDb) -> None:
        self.db = db

    def put(self, record: FileRecord) -> None:
        with self.db.lock:
            if record.id in self.db.files:
                raise StaleState("exists")
            self.db.files[record.id] = record

    def get(self, file_id: str) -> FileRecord | None:
        with self.db.lock:
            return self.db.files.get(file_id)

    def page(
        self, owner: str | None, *, purpose: str | None, after: str | None, limit: int, ascending: bool, now: int
    ) -> Page[FileRecord]:
        with self.db.lock:
            mine = [
                f
                for f in self.db.files.values()
                if (owner is None or f.owner == owner)
                and (purpose is None or f.purpose == purpose)
                and (f.expires_at is None or f.expires_at > now)
            ]
        return _page(mine, [f.id for f in mine], after, limit, ascending)

    def delete(self, file_id: str) -> None:
        with self.db.lock:
            if file_id not in self.db.files or self.db.in_use.get(file_id):
                raise StaleState("in use or gone")
            del self.db.files[file_id]

    def expired(self, *, now: int, limit: int) -> builtins.list[FileRecord]:
        with self.db.lock:
            gone = [
                f
                for f in self.db.files.values()
                if f.expires_at is not None and f.expires_at < now and not self.db.in_use.get(f.id)
            ]
        return sorted(gone, key=lambda f: (f.expires_at or 0, f.id))[:limit]


class MemoryKeyStore:
    def __init__(self, db: MemoryDb) -> None:
        self.db = db

    def put(self, record: KeyRecord) -> None:
        with self.db.lock:
            if record.id in self.db.keys or record.key_hash in self.db.hashes:
                raise StaleState("exists")
            self.db.keys[record.id] = record
            self.db.hashes[record.key_hash] = record.id

    def get(self, key_id: str) -> KeyRecord | None:
        with self.db.lock:
            return self.db.keys.get(key_id)

    def find(self, key_hash: str) -> KeyGrant | None:
        with self.db.lock:
            key_id = self.db.hashes.get(key_hash)
            record = self.db.keys.get(key_id) if key_id else None
        if record is None or record.revoked:
            return None
        return record.grant

    def page(self, *, after: str | None, limit: int) -> Page[KeyRecord]:
        with self.db.lock:
            keys = list(self.db.keys.values())
        return _page(keys, [k.id for k in keys], after, limit, ascending=False)

    def revoke(self, record: KeyRecord) -> None:
        with self.db.lock:
            self.db.keys[record.id] = record.model_copy(update={"revoked": True})
            self.db.hashes.pop(record.key_hash, None)

    def spend(self, owner: str) -> builtins.list[SpendRow]:
        with self.db.lock:
            return [row for (who, _, _), row in self.db.spend.items() if who == owner]


class MemoryUploadStore:
    def __init__(self, db: MemoryDb) -> None:
        self.db = db

    def put(self, record: UploadRecord) -> None:
        with self.db.lock:
            if record.id in self.db.uploads:
                raise StaleState("exists")
            self.db.uploads[record.id] = record

    def get(self, upload_id: str) -> UploadRecord | None:
        with self.db.lock:
            return self.db.uploads.get(upload_id)

    def add_part(self, upload_id: str, part_id: str, size: int, *, declared: int, max_parts: int) -> None:
        with self.db.lock:
            upload = self.db.uploads.get(upload_id)
            if (
                upload is None
                or upload.status != "pending"
                or upload.received_bytes > declared - size
                or len(upload.parts) >= max_parts
            ):
                raise StaleState("part refused")
            self.db.uploads[upload_id] = upload.model_copy(
                update={"parts": {**upload.parts, part_id: size}, "received_bytes": upload.received_bytes + size}
            )

    def set_status(self, upload_id: str, status: str, *, file_id: str | None = None) -> UploadRecord:
        with self.db.lock:
            upload = self.db.uploads.get(upload_id)
            if upload is None or upload.status != "pending":
                raise StaleState("not pending")
            self.db.uploads[upload_id] = upload.model_copy(update={"status": status, "file_id": file_id})
            return self.db.uploads[upload_id]


class MemoryClaimStore:
    def __init__(self, db: MemoryDb) -> None:
        self.db = db

    def claim(self, provider_batch_id: str, batch_id: str) -> bool:
        with self.db.lock:
            return self.db.claims.setdefault(provider_batch_id, batch_id) == batch_id

    def owner(self, provider_batch_id: str) -> str | None:
        with self.db.lock:
            return self.db.claims.get(provider_batch_id)

    def mark_failing(self, deployment: str, *, until: int, error: str) -> None:
        with self.db.lock:
            self.db.failing[deployment] = until

    def failing(self, deployments: Sequence[str], *, now: int) -> set[str]:
        with self.db.lock:
            return {d for d in deployments if self.db.failing.get(d, 0) > now}


class MemorySink(BlobSink):
    def __init__(self, blobs: MemoryBlobs, key: str) -> None:
        self._blobs = blobs
        self._key = key
        self._data = bytearray()
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self._data += data
        self.bytes += len(data)

    def commit(self) -> None:
        self._blobs.objects[self._key] = bytes(self._data)

    def abort(self) -> None:
        self._data.clear()


class MemoryBlobs:
    bucket = "memory"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def writer(self, key: str, content_type: str = "application/octet-stream") -> MemorySink:
        return MemorySink(self, key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.objects[key] = bytes(data)

    def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def read(self, key: str, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        data = self.objects[key]
        for start in range(0, len(data), chunk_bytes):
            yield data[start : start + chunk_bytes]

    def delete(self, *keys: str) -> None:
        for key in keys:
            self.objects.pop(key, None)

    def keys(self, prefix: str) -> Iterator[str]:
        yield from sorted(k for k in list(self.objects) if k.startswith(prefix))

    def presigned_get(self, key: str, *, filename: str, expires_in: int) -> str:
        return f"memory://{key}?filename={filename}&expires_in={expires_in}"


class MemoryBus:
    """The bus: what was published, in order; `fail` makes every publish fail, as a throttled bus would."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.fail = False

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        if self.fail:
            raise PublishFailed(f"{detail_type}: the bus is down")
        self.events.append((detail_type, detail))

    def of(self, detail_type: str) -> list[dict[str, Any]]:
        return [detail for kind, detail in self.events if kind == detail_type]


class MemoryFifoQueue:
    """A FIFO queue: the messages sent, in order, less those whose dedup id was sent before."""

    def __init__(self) -> None:
        self.sent: list[FifoMessage] = []

    def send(self, messages: Sequence[FifoMessage]) -> None:
        seen = {m.dedup_id for m in self.sent}
        self.sent.extend(m for m in messages if m.dedup_id not in seen)


class MemoryWorkQueue:
    """The poller's work queue: the ranges handed out, in order."""

    def __init__(self) -> None:
        self.sent: list[WorkRange] = []

    def send(self, ranges: Iterable[WorkRange]) -> None:
        self.sent.extend(ranges)


def _work_projection() -> frozenset[str]:
    """The attributes template.yaml projects into the work index."""
    (index,) = [
        i for i in template.resource("Table")["Properties"]["GlobalSecondaryIndexes"] if i["IndexName"] == WORK_INDEX
    ]
    return frozenset(index["Projection"]["NonKeyAttributes"])


_PROJECTED: Final = _work_projection()


def _indexed(batch: BatchRecord) -> BatchRecord:
    """`batch` as the poller reads it from the work index, as DynamoDBBatchStore.work gives it: what the index
    projects (the rest at its default), and a batch of several models' runs, read from its item."""
    defaults = {
        name: BatchRecord.model_fields[name].get_default(call_default_factory=True)
        for name in BatchRecord.model_fields
        if name not in _PROJECTED and name != "runs" and not BatchRecord.model_fields[name].is_required()
    }
    return batch.model_copy(update=defaults)
