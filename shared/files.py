"""Files use cases: store (validating batch input as it streams into S3), list, read, download, delete,
and the sweep that removes expired files, objects first.

A batch input's custom_ids are kept beside it as JSON lines (one JSON string per line, so any id, newlines
and all, reads back byte for byte) for the steps that need them without re-reading the input.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import orjson

from shared import ids
from shared.auth import Principal
from shared.errors import InvalidRequest, NotFound, StaleState, UnreadableRecord
from shared.jsonl import BatchInputSummary, BatchInputValidator
from shared.records import BatchInputInfo, FileRecord
from shared.storage.ports import Blobs, FileStore, Page

logger = logging.getLogger(__name__)

BATCH_FILE_TTL = 30 * 24 * 3600  # OpenAI expires purpose=batch files after 30 days by default
PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
MAX_FILENAME_CHARS = 255


def blob_key(file_id: str) -> str:
    return f"files/{file_id}"


def ids_key(file_id: str) -> str:
    """Where a batch input's custom_ids are kept, for the completion step."""
    return f"files/{file_id}.ids"


def encode_custom_ids(custom_ids: Iterable[str], model_of: Iterable[int]) -> bytes:
    """The ids object: one `[custom_id, model index]` JSON array per line.

    Appended to one buffer as each line is made: orjson gives even a short line a 4 KB buffer it never trims,
    so joining the lines (which holds them all first) took 4 KB a line.
    """
    out = bytearray()
    for custom_id, model in zip(custom_ids, model_of, strict=True):
        out += orjson.dumps([custom_id, model], option=orjson.OPT_APPEND_NEWLINE)
    return bytes(out)


def clean_filename(filename: str | None) -> str:
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1].strip() or "upload"
    if len(name) > MAX_FILENAME_CHARS:
        raise InvalidRequest(
            f"filename is longer than {MAX_FILENAME_CHARS} characters", code="invalid_filename", param="file"
        )
    return "".join(c for c in name if c.isprintable())


def readable[R](principal: Principal, read: Callable[[], R | None], *, what: str, object_id: str) -> R | None:
    """`read()`, with an item that cannot be read shown to its owner as a clear error and to anyone else as
    missing (a 500 would tell another key that it exists)."""
    try:
        return read()
    except UnreadableRecord as exc:
        logger.error("stored item cannot be read", extra={"key": exc.key, "reason": exc.reason})
        if exc.owner is not None and principal.can_see(exc.owner):
            raise InvalidRequest(
                f"{what} {object_id} is stored in a form this gateway cannot read ({exc.reason}); "
                "ask the gateway's operator to repair it.",
                code="unreadable_object",
            ) from None
        return None


@dataclass(frozen=True, slots=True)
class Download:
    """A file's bytes as a stream, or a presigned URL when it is too large to answer with."""

    record: FileRecord
    chunks: Iterator[bytes] | None = None
    redirect_url: str | None = None


class Files:
    def __init__(self, files: FileStore, blobs: Blobs, *, clock: Callable[[], float] = time.time) -> None:
        self._files = files
        self._blobs = blobs
        self._clock = clock

    def store(
        self,
        owner: str,
        *,
        purpose: str,
        filename: str | None,
        chunks: Iterable[bytes],
        expires_after: int | None,
    ) -> FileRecord:
        """Stream `chunks` into S3 under a new file id owned by `owner`, validating batch input on the way.

        A batch input that breaks a rule raises InvalidBatchInput and leaves no object and no item.
        """
        if purpose not in PURPOSES:
            raise InvalidRequest(
                f"Invalid purpose {purpose!r}: expected one of {', '.join(sorted(PURPOSES))}.",
                code="invalid_purpose",
                param="purpose",
            )
        name = clean_filename(filename)
        file_id = ids.new_id(ids.FILE)
        validator = BatchInputValidator() if purpose == "batch" else None
        summary: BatchInputSummary | None = None
        with self._blobs.writer(
            blob_key(file_id), "application/jsonl" if validator else "application/octet-stream"
        ) as out:
            for chunk in chunks:
                if validator is not None:
                    validator.feed(chunk)
                out.write(chunk)
            if validator is not None:
                summary = validator.finish()
        return self._record(owner, file_id, purpose, name, out.bytes, summary, expires_after)

    def _record(
        self,
        owner: str,
        file_id: str,
        purpose: str,
        filename: str,
        size: int,
        summary: BatchInputSummary | None,
        expires_after: int | None,
    ) -> FileRecord:
        now = int(self._clock())
        if expires_after is None and purpose == "batch":
            expires_after = BATCH_FILE_TTL
        record = FileRecord(
            id=file_id,
            owner=owner,
            purpose=purpose,
            filename=filename,
            bytes=size,
            created_at=now,
            expires_at=now + expires_after if expires_after else None,
            s3_key=blob_key(file_id),
            batch_input=BatchInputInfo(line_count=summary.line_count, endpoint=summary.endpoint, models=summary.models)
            if summary
            else None,
        )
        try:
            if summary is not None:
                ids = encode_custom_ids(summary.custom_ids, summary.model_of)
                self._blobs.put(ids_key(file_id), ids, "application/jsonl")
            self._files.put(record)
        except BaseException:
            self._blobs.delete(blob_key(file_id), ids_key(file_id))
            raise
        return record

    def get(self, principal: Principal, file_id: str, *, param: str = "file_id") -> FileRecord:
        """The caller's file; NotFound for a missing, expired or someone else's file alike."""
        record = (
            readable(principal, lambda: self._files.get(file_id), what="File", object_id=file_id)
            if ids.is_id(file_id, ids.FILE)
            else None
        )
        if (
            record is None
            or not principal.can_see(record.owner)
            or (record.expires_at is not None and record.expires_at <= self._clock())
        ):
            raise NotFound(f"No such File object: {file_id}", param=param)
        return record

    def list(
        self, principal: Principal, *, purpose: str | None, after: str | None, limit: int, ascending: bool
    ) -> Page[FileRecord]:
        if after is not None and not ids.is_id(after, ids.FILE):
            raise InvalidRequest(f"Invalid 'after' cursor: {after[:64]!r}", code="invalid_cursor", param="after")
        return self._files.page(
            principal.scope, purpose=purpose, after=after, limit=limit, ascending=ascending, now=int(self._clock())
        )

    def download(self, principal: Principal, file_id: str, *, inline_limit: int, url_seconds: int) -> Download:
        record = self.get(principal, file_id)
        if record.bytes > inline_limit:
            url = self._blobs.presigned_get(record.s3_key, filename=record.filename, expires_in=url_seconds)
            return Download(record, redirect_url=url)
        return Download(record, chunks=self._blobs.read(record.s3_key))

    def discard(self, record: FileRecord) -> None:
        """Remove a file this process just stored and must not keep (its item and its objects)."""
        self._files.delete(record.id)
        self._blobs.delete(record.s3_key, ids_key(record.id))

    def delete(self, principal: Principal, file_id: str) -> None:
        record = self.get(principal, file_id)
        try:
            self._files.delete(record.id)
        except StaleState:
            raise InvalidRequest(
                f"File {file_id} is the input of a batch that has not finished; cancel it or wait for it to end.",
                code="file_in_use",
                param="file_id",
            ) from None
        self._blobs.delete(record.s3_key, ids_key(record.id))

    def sweep(self, *, limit: int = 100) -> int:
        """Remove up to `limit` expired files that no unfinished batch uses: objects first, then the item,
        so no object outlives its item. Returns how many went."""
        removed = 0
        # an expired file can no longer become a batch's input (admission checks the expiry), so once the
        # store has seen it unused it stays unused: its objects can go before its item
        for record in self._files.expired(now=int(self._clock()), limit=limit):
            self._blobs.delete(record.s3_key, ids_key(record.id))
            self._files.delete(record.id)
            removed += 1
        return removed
