"""The DynamoDB UploadStore: uploads and their parts, each part admitted by a conditional write.

The upload item counts its parts and the bytes they hold, and a part is added only if the upload is pending
and stays within the byte cap (`declared`, set by shared.uploads) and part count it is given: concurrent parts
cannot overrun them. Items expire by TTL a day after the upload does; the parts' objects by the bucket's
`uploads/` lifecycle rule.
"""

from __future__ import annotations

from shared.records import UploadRecord
from shared.storage.dynamo import Dynamo, Item, Update, key, parse

_KEEP_SECONDS = 24 * 3600


def _upload_key(upload_id: str) -> Item:
    return key(f"UPLOAD#{upload_id}", "UPLOAD")


class DynamoUploadStore:
    def __init__(self, db: Dynamo) -> None:
        self._db = db

    def put(self, record: UploadRecord) -> None:
        values = {
            **record.model_dump(mode="python", exclude_none=True),
            "part_count": len(record.parts),
            "pk": f"UPLOAD#{record.id}",
            "sk": "UPLOAD",
            "ttl": record.expires_at + _KEEP_SECONDS,
        }
        self._db.put(values, new=True)

    def get(self, upload_id: str) -> UploadRecord | None:
        item = self._db.get(_upload_key(upload_id))
        return parse(UploadRecord, item) if item else None

    def add_part(self, upload_id: str, part_id: str, size: int, *, declared: int, max_parts: int) -> None:
        update = Update().exists().status_in({"pending"})
        # conditions cannot subtract: `received + size <= declared` is written with the declared size known
        update.when(f"{update.path('received_bytes')} <= {update.value(declared - size)}")
        update.when(f"{update.path('part_count')} < {update.value(max_parts)}")
        update.set_paths({f"parts.{part_id}": size}).add(received_bytes=size, part_count=1)
        self._db.update(_upload_key(upload_id), update)

    def set_status(self, upload_id: str, status: str, *, file_id: str | None = None) -> UploadRecord:
        update = Update().exists().status_in({"pending"}).assign(status=status, file_id=file_id)
        return parse(UploadRecord, self._db.update(_upload_key(upload_id), update))
