"""The ports the use cases depend on: one store per kind of record, the blob bucket and the event bus.

`BatchStore`'s methods are the batch's lifecycle: each is one conditional write whose condition comes from
shared/lifecycle.py, and each raises StaleState when it loses (another worker moved the batch first). The
DynamoDB implementations live beside this module; shared/storage/memory.py holds in-memory twins, honest
about the same conditions, for unit tests. No DynamoDB attribute path crosses these interfaces.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, NamedTuple, Protocol, Self

from shared.lifecycle import BatchStatus, Outcome
from shared.records import (
    BatchRecord,
    Cost,
    Counts,
    ErrorEntry,
    FileRecord,
    KeyGrant,
    KeyRecord,
    SpendRow,
    UploadRecord,
    Usage,
)


@dataclass(frozen=True, slots=True)
class Page[T]:
    items: list[T]
    has_more: bool


@dataclass(frozen=True, slots=True)
class Broken:
    """A stored item that cannot be read back as a record: logged, counted and skipped, never fatal."""

    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class SpendEntry:
    """One batch's contribution to its owner's spend, booked in the completion transaction."""

    owner: str
    day: str
    model: str
    cost: Cost
    usage: Usage
    requests: int


@dataclass(frozen=True, slots=True)
class Booking:
    """What the completion transaction writes, all or nothing."""

    status: BatchStatus
    at: int
    counts: Counts
    usage: Usage
    cost: Cost
    errors: tuple[ErrorEntry, ...]
    files: tuple[FileRecord, ...]  # the output and error files that have lines
    spend: tuple[SpendEntry, ...]  # one per model
    cleanup: bool  # objects remain at the provider to delete
    cost_by_model: dict[str, Cost] | None = None


@dataclass(frozen=True, slots=True)
class WorkRange:
    """A slice of the work index by work key (`{deployment}#{batch id}`): from `start` up to, not including,
    `stop`; None leaves that end open. One deployment's batches are contiguous in it."""

    start: str | None = None
    stop: str | None = None

    def holds(self, work_key: str) -> bool:
        return (self.start is None or work_key >= self.start) and (self.stop is None or work_key < self.stop)


EVERYTHING: Final = WorkRange()


class WorkItem(NamedTuple):
    """An unfinished batch (or what stands for one that cannot be read) and its work key."""

    key: str
    batch: BatchRecord | Broken


class BatchStore(Protocol):
    """Batches, and the transitions of their lifecycle."""

    def admit(self, batch: BatchRecord, *, runs: Sequence[BatchRecord] = (), max_budget: Decimal | None) -> None:
        """Store a new `validating` batch (and its runs, for a batch of several models), mark its input file in
        use and hold `batch.reserved` on its key, atomically. Raises AdmitRefused naming what stopped it."""

    def get(self, batch_id: str) -> BatchRecord | None:
        """The batch, or None. Raises UnreadableRecord for an item that cannot be read."""

    def get_many(self, batch_ids: Sequence[str]) -> list[BatchRecord]:
        """The batches (a batch's runs) that exist, in the order asked."""

    def page(self, owner: str | None, *, after: str | None, limit: int) -> Page[BatchRecord]:
        """One page of `owner`'s batches (everyone's for None), newest first."""

    def work(self, shard: int, within: WorkRange = EVERYTHING) -> Iterator[WorkItem]:
        """The unfinished batches of one shard of the work index whose work keys are `within` (never a Scan),
        in work-key order, read page by page as they are taken."""

    def cleanups(self) -> Iterator[str]:
        """Finished batches whose provider objects are still to be removed."""

    def claim_submission(self, batch_id: str, *, now: int, lease_seconds: int) -> BatchRecord:
        """Take the right to submit a `validating` batch for `lease_seconds`, if nobody holds it and no
        provider asked to wait."""

    def record_refs(self, batch_id: str, refs: Mapping[str, str]) -> None:
        """Record provider ids while the batch still waits for its provider run."""

    def record_screening(self, batch_id: str, rejected: int) -> BatchRecord:
        """Record how many requests were refused before the provider run."""

    def move(self, batch_id: str, *, deployment: str, tried: Sequence[str], now: int) -> BatchRecord:
        """Move a `validating` batch to another deployment of its model, forgetting the old one's ids."""

    def release_submission(self, batch_id: str, *, retry_at: int, now: int) -> None:
        """Give up the submission lease; the batch may be submitted again from `retry_at`."""

    def start(self, batch_id: str, *, now: int) -> BatchRecord:
        """validating -> in_progress."""

    def request_cancel(self, batch: BatchRecord, *, now: int) -> BatchRecord:
        """-> cancelling, from where `batch` is."""

    def mark_cancel_sent(self, batch_id: str, *, expiring: bool) -> BatchRecord:
        """Remember that the provider was asked to cancel (and whether because the window passed)."""

    def record_counts(self, batch: BatchRecord, counts: Counts, *, now: int) -> None:
        """Progress of a running batch, written only forward: StaleState when the stored counts are newer."""

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
        """The provider run is over: record the final status to come and the result file ids to use."""

    def redrive_submission(self, batch: BatchRecord, *, now: int) -> None:
        """Count one more re-drive of a submission that was lost."""

    def redrive_completion(self, batch: BatchRecord, *, now: int) -> BatchRecord:
        """Count one more re-drive of a completion that was lost."""

    def finish(self, batch: BatchRecord, booking: Booking) -> None:
        """The completion transaction: final status, result files, input release, reservation released and
        real cost booked on the key and the spend rows. Conditional on the batch being as `batch` saw it.
        A run books only itself: its batch releases the input and books the cost."""

    def cleaned(self, batch_id: str) -> None:
        """The provider objects of a finished batch are gone (or given up on)."""

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
        """Replace the provider ids, submission lease and retry time of a running batch (in_progress or
        cancelling, its run not ended) whose provider failed its run only because it was busy, while its
        `batch_id` ref and lease are still those `batch` holds. `attempt` counts one more submission attempt."""


class FileStore(Protocol):
    def put(self, record: FileRecord) -> None: ...

    def get(self, file_id: str) -> FileRecord | None:
        """The file, or None. Raises UnreadableRecord for an item that cannot be read."""

    def page(
        self, owner: str | None, *, purpose: str | None, after: str | None, limit: int, ascending: bool, now: int
    ) -> Page[FileRecord]: ...

    def delete(self, file_id: str) -> None:
        """Delete a file's item unless an unfinished batch uses it (StaleState)."""

    def expired(self, *, now: int, limit: int) -> list[FileRecord]:
        """Files past their expiry and not in use, oldest expiry first."""


class UploadStore(Protocol):
    def put(self, record: UploadRecord) -> None: ...

    def get(self, upload_id: str) -> UploadRecord | None: ...

    def add_part(self, upload_id: str, part_id: str, size: int, *, declared: int, max_parts: int) -> None:
        """Add a part if the upload is pending and stays within its declared bytes and `max_parts` (StaleState)."""

    def set_status(self, upload_id: str, status: str, *, file_id: str | None = None) -> UploadRecord:
        """pending -> `status` (StaleState if no longer pending)."""


class KeyStore(Protocol):
    def put(self, record: KeyRecord) -> None: ...

    def get(self, key_id: str) -> KeyRecord | None: ...

    def find(self, key_hash: str) -> KeyGrant | None:
        """What the live key whose secret hashes to `key_hash` may do, or None (unknown or revoked)."""

    def page(self, *, after: str | None, limit: int) -> Page[KeyRecord]: ...

    def revoke(self, record: KeyRecord) -> None: ...

    def spend(self, owner: str) -> list[SpendRow]: ...


class ClaimStore(Protocol):
    """Provider batches claimed by our batches, and deployments that failed lately."""

    def claim(self, provider_batch_id: str, batch_id: str) -> bool:
        """Reserve a provider batch for one of our batches; False if another of ours holds it."""

    def owner(self, provider_batch_id: str) -> str | None: ...

    def mark_failing(self, deployment: str, *, until: int, error: str) -> None: ...

    def failing(self, deployments: Sequence[str], *, now: int) -> set[str]: ...


class Blobs(Protocol):
    bucket: str

    def writer(self, key: str, content_type: str = "application/octet-stream") -> BlobSink: ...

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def get(self, key: str) -> bytes | None: ...

    def read(self, key: str, chunk_bytes: int = ...) -> Iterator[bytes]: ...

    def delete(self, *keys: str) -> None: ...

    def keys(self, prefix: str) -> Iterator[str]:
        """The keys under `prefix`, in key order."""

    def presigned_get(self, key: str, *, filename: str, expires_in: int) -> str: ...


class BlobSink(Protocol):
    """An object being written as a stream; `commit` makes it, `abort` leaves nothing."""

    bytes: int

    def write(self, data: builtins.bytes) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Commits what was written when the block ends cleanly, aborts it when it raised."""
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class Bus(Protocol):
    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        """Put one event on the bus; raises PublishFailed."""


class WorkQueue(Protocol):
    """Where the scheduled poller hands out ranges of the work index, one invocation each."""

    def send(self, ranges: Iterable[WorkRange]) -> None:
        """Queue one message per range; raises PublishFailed."""


@dataclass(frozen=True, slots=True)
class FifoMessage:
    """A message of a FIFO queue: delivered after the earlier messages of its group, never while one of them
    is in flight, and dropped if a message with its `dedup_id` was sent within the queue's window."""

    group: str
    dedup_id: str
    body: str


class FifoQueue(Protocol):
    """A FIFO queue: where sync deployments' chunks of requests wait for the sync worker."""

    def send(self, messages: Sequence[FifoMessage]) -> None:
        """Queue the messages in order; raises PublishFailed."""
