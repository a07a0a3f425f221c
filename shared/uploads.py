"""The Uploads API: large files in parts, each under the request limit, joined and validated at completion.

Parts are stored as S3 objects. Completion streams them, in the order the caller gives, through the
same batch validator into one object (S3 multipart), so the whole file is validated as one stream and
a bad line is reported by its line number in the whole file. A refused completion leaves no file.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator

from shared import ids
from shared.auth import Principal
from shared.errors import InvalidRequest, NotFound, StaleState
from shared.files import PURPOSES, Files, clean_filename
from shared.jsonl import MAX_BYTES
from shared.records import FileRecord, UploadRecord
from shared.storage.ports import Blobs, FileStore, UploadStore
from shared.wire import CreateUploadRequest

UPLOAD_TTL = 3600
MAX_PARTS = 4096
STORED_FACTOR = 2  # the parts of an upload hold at most twice its bytes: room to resend every part once


def part_key(upload_id: str, part_id: str) -> str:
    return f"uploads/{upload_id}/{part_id}"


class Uploads:
    def __init__(
        self,
        uploads: UploadStore,
        file_store: FileStore,
        blobs: Blobs,
        files: Files,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._uploads = uploads
        self._file_store = file_store
        self._blobs = blobs
        self._files = files
        self._clock = clock

    def create(self, principal: Principal, request: CreateUploadRequest) -> UploadRecord:
        if request.purpose not in PURPOSES:
            raise InvalidRequest(f"Invalid purpose {request.purpose!r}.", code="invalid_purpose", param="purpose")
        if request.purpose == "batch" and request.bytes > MAX_BYTES:
            raise InvalidRequest(
                f"A batch input file can be at most {MAX_BYTES:,} bytes; this upload declares {request.bytes:,}.",
                code="file_too_large",
                param="bytes",
            )
        now = int(self._clock())
        record = UploadRecord(
            id=ids.new_id(ids.UPLOAD),
            owner=principal.owner,
            bytes=request.bytes,
            filename=clean_filename(request.filename),
            mime_type=request.mime_type,
            purpose=request.purpose,
            created_at=now,
            expires_at=now + UPLOAD_TTL,
            file_expires_after=request.expires_after.seconds if request.expires_after else None,
        )
        self._uploads.put(record)
        return record

    def get(self, principal: Principal, upload_id: str) -> UploadRecord:
        """The caller's upload, shown `expired` past its hour; NotFound for a missing or someone else's."""
        record = self._uploads.get(upload_id) if ids.is_id(upload_id, ids.UPLOAD) else None
        if record is None or not principal.can_see(record.owner):
            raise NotFound(f"No such Upload object: {upload_id}", param="upload_id")
        if record.status == "pending" and record.expires_at <= self._clock():
            return record.model_copy(update={"status": "expired"})
        return record

    def file_of(self, record: UploadRecord) -> FileRecord | None:
        return self._file_store.get(record.file_id) if record.file_id else None

    def _pending(self, principal: Principal, upload_id: str) -> UploadRecord:
        record = self.get(principal, upload_id)
        if record.status != "pending":
            raise self._not_pending(record)
        return record

    @staticmethod
    def _not_pending(record: UploadRecord) -> InvalidRequest:
        return InvalidRequest(
            f"Upload {record.id} is {record.status}; it no longer accepts changes.", code="upload_not_pending"
        )

    def add_part(self, principal: Principal, upload_id: str, data: bytes) -> tuple[str, int]:
        """Store one part; returns its id and creation time.

        Which parts make the file, and whether they hold the declared bytes, is settled at completion
        (a resent or spare part is simply not named). What one upload can store is bounded: each part
        holds at most the declared bytes, and all its parts at most MAX_PARTS parts and STORED_FACTOR
        times the declared bytes. The part counts only once the upload item admits it, in one conditional
        write that checks the upload is pending and within these bounds, so concurrent parts cannot overrun it.
        """
        record = self._pending(principal, upload_id)
        if len(data) > record.bytes:
            raise InvalidRequest(
                f"A part of {len(data):,} bytes is larger than the {record.bytes:,} bytes declared for this upload.",
                code="upload_too_large",
                param="data",
            )
        cap = STORED_FACTOR * record.bytes
        if record.received_bytes + len(data) > cap:
            raise self._too_much(record)
        part_id = ids.new_id(ids.PART)
        self._blobs.put(part_key(upload_id, part_id), data)
        try:
            self._uploads.add_part(upload_id, part_id, len(data), declared=cap, max_parts=MAX_PARTS)
        except StaleState:
            self._blobs.delete(part_key(upload_id, part_id))
            now = self._uploads.get(upload_id) or record
            if now.status != "pending":
                raise self._not_pending(now) from None
            if len(now.parts) >= MAX_PARTS:
                raise InvalidRequest(f"An upload can have at most {MAX_PARTS} parts.", code="too_many_parts") from None
            raise self._too_much(now) from None
        return part_id, int(self._clock())

    @staticmethod
    def _too_much(record: UploadRecord) -> InvalidRequest:
        return InvalidRequest(
            f"The parts sent to this upload would hold more than {STORED_FACTOR} times the {record.bytes:,} bytes "
            "it declared; complete it with the parts that make the file, or start a new upload.",
            code="upload_too_large",
            param="data",
        )

    def complete(self, principal: Principal, upload_id: str, part_ids: list[str], md5: str | None) -> UploadRecord:
        """Join the parts, in `part_ids` order, into a validated file."""
        record = self._pending(principal, upload_id)
        if len(set(part_ids)) != len(part_ids):
            raise InvalidRequest("part_ids must not repeat a part.", code="invalid_part_ids", param="part_ids")
        unknown = [p for p in part_ids if p not in record.parts]
        if unknown:
            raise InvalidRequest(f"Unknown part id {unknown[0]!r}.", code="invalid_part_ids", param="part_ids")
        total = sum(record.parts[p] for p in part_ids)
        if total != record.bytes:
            raise InvalidRequest(
                f"The parts hold {total:,} bytes but the upload declared {record.bytes:,}.",
                code="upload_size_mismatch",
                param="part_ids",
            )
        digest = hashlib.md5(usedforsecurity=False)

        def chunks() -> Iterator[bytes]:
            for part_id in part_ids:
                for chunk in self._blobs.read(part_key(upload_id, part_id)):
                    digest.update(chunk)
                    yield chunk
            if md5 is not None and digest.hexdigest() != md5.lower():
                raise InvalidRequest("The md5 of the parts does not match the md5 given.", code="md5_mismatch")

        try:
            file = self._files.store(
                record.owner,  # the upload's owner, whoever completes it
                purpose=record.purpose,
                filename=record.filename,
                chunks=chunks(),
                expires_after=record.file_expires_after,
            )
        except Exception:
            # a cancel or completion that won the race deletes the parts while this one reads them, and the
            # read fails (the store left no object): the upload's new status is the answer, as it is above
            now = self._uploads.get(upload_id)
            if now is not None and now.status != "pending":
                raise self._not_pending(now) from None
            raise
        try:
            completed = self._uploads.set_status(upload_id, "completed", file_id=file.id)
        except StaleState:
            self._files.discard(file)
            raise InvalidRequest(
                f"Upload {upload_id} was completed or cancelled meanwhile.", code="upload_not_pending"
            ) from None
        self._blobs.delete(*(part_key(upload_id, p) for p in record.parts))
        return completed

    def cancel(self, principal: Principal, upload_id: str) -> UploadRecord:
        record = self._pending(principal, upload_id)
        try:
            cancelled = self._uploads.set_status(upload_id, "cancelled")
        except StaleState:
            raise InvalidRequest(f"Upload {upload_id} is no longer pending.", code="upload_not_pending") from None
        self._blobs.delete(*(part_key(upload_id, p) for p in record.parts))
        return cancelled
