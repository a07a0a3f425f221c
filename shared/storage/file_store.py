"""The DynamoDB FileStore: file items, and the expiry they wait out in the work index.

A file with an expiry sits under `EXPIRES` in the work index, sorted by when it expires; the poller's sweep
deletes each expired file's objects and then its item, unless an unfinished batch uses it (`in_use`), so a
batch's input never disappears under it and no object outlives its item. Files have no DynamoDB TTL: a
TTL deletion would leave the object behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, Final

from shared.errors import UnreadableRecord
from shared.records import FileRecord
from shared.storage.dynamo import KIND_INDEX, OWNER_INDEX, WORK_INDEX, Dynamo, Item, key, listing, parse
from shared.storage.ports import Page

EXPIRES: Final = "EXPIRES"


def file_key(file_id: str) -> Item:
    return key(f"FILE#{file_id}", "FILE")


def _expiry_sort(expires_at: int, file_id: str) -> str:
    return f"{expires_at:012d}#{file_id}"


def file_values(record: FileRecord) -> dict[str, Any]:
    values: dict[str, Any] = {
        **record.model_dump(mode="python", exclude_none=True),
        "pk": f"FILE#{record.id}",
        "sk": "FILE",
        **listing("FILE", record.owner, record.id),
    }
    if record.expires_at is not None:
        values |= {"gsi3pk": EXPIRES, "gsi3sk": _expiry_sort(record.expires_at, record.id)}
    return values


def parse_file(item: Mapping[str, Any]) -> FileRecord:
    return parse(FileRecord, item)


class DynamoFileStore:
    def __init__(self, db: Dynamo) -> None:
        self._db = db

    def reading_ahead(self, file_id: str) -> AbstractContextManager[None]:
        """Within it, the next read of the table (a key's check) reads the file too (Dynamo.reading_ahead)."""
        return self._db.reading_ahead(file_key(file_id))

    def put(self, record: FileRecord) -> None:
        self._db.put(file_values(record), new=True)

    def get(self, file_id: str) -> FileRecord | None:
        item = self._db.get(file_key(file_id))
        return parse_file(item) if item else None

    def page(
        self, owner: str | None, *, purpose: str | None, after: str | None, limit: int, ascending: bool, now: int
    ) -> Page[FileRecord]:
        """Files that have not expired, newest or oldest first."""
        if owner is None:
            index, partition, sort = KIND_INDEX, ("gsi2pk", "FILE"), "gsi2sk"
        else:
            index, partition, sort = OWNER_INDEX, ("gsi1pk", f"OWNER#{owner}#FILE"), "gsi1sk"
        page = self._db.page(
            index=index,
            partition=partition,
            sort_name=sort,
            after=after,
            limit=limit,
            ascending=ascending,
            filters={"purpose": purpose} if purpose else None,
            unexpired_at=now,
        )
        return Page([parse_file(i) for i in page.items], page.has_more)

    def delete(self, file_id: str) -> None:
        self._db.delete(file_key(file_id), condition="attribute_exists(pk) AND attribute_not_exists(in_use)")

    def expired(self, *, now: int, limit: int) -> list[FileRecord]:
        found: list[FileRecord] = []
        for entry in self._db.query(
            IndexName=WORK_INDEX,
            KeyConditionExpression="gsi3pk = :expires AND gsi3sk < :now",
            FilterExpression="attribute_not_exists(in_use)",
            ExpressionAttributeValues={":expires": {"S": EXPIRES}, ":now": {"S": _expiry_sort(now, "")}},
            Limit=limit,
        ):
            # the index lags its table: confirm, by a consistent read, that no batch took the file meanwhile
            item = self._db.get(key(entry["pk"]["S"], "FILE"))
            if item is None or "in_use" in item:
                continue
            try:
                found.append(parse_file(item))
            except UnreadableRecord:
                continue  # the sweep cannot tell an unreadable file's objects; its item stays for an operator
            if len(found) >= limit:
                break
        return found
