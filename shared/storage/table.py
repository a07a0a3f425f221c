"""The DynamoDB adapter: one table holding files, uploads, batches, keys and spend (DESIGN.md data model).

| item   | pk                | sk             | indexes                                                   |
| file   | FILE#{id}         | FILE           | owner-index (OWNER#{owner}#FILE, id), kind-index (FILE, id) |
| batch  | BATCH#{id}        | BATCH          | owner-index, kind-index, active-index while not terminal   |
| upload | UPLOAD#{id}       | UPLOAD         |                                                           |
| key    | KEY#{id}          | KEY            | kind-index (KEY, id)                                      |
| hash   | KEYHASH#{sha256}  | KEYHASH        |                                                           |
| spend  | SPEND#{owner}     | {day}#{model}  |                                                           |

Ids are time-ordered (shared/ids.py), so every index sorts on the id and an `after` cursor is a key
condition. Conditional writes that lose raise StaleState; nothing else of botocore leaks out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from shared.errors import StaleState
from shared.records import (
    MASTER_OWNER,
    BatchRecord,
    Cost,
    FileRecord,
    KeyRecord,
    Record,
    UploadRecord,
    Usage,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, TransactWriteItemTypeDef

OWNER_INDEX = "owner-index"
KIND_INDEX = "kind-index"
ACTIVE_INDEX = "active-index"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

type Item = dict[str, AttributeValueTypeDef]


def _plain(value: Any) -> Any:
    """Python values as DynamoDB's serializer takes them: floats as Decimal, tuples as lists."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _attr(value: Any) -> AttributeValueTypeDef:
    return _serializer.serialize(_plain(value))


def _to_item(values: Mapping[str, Any]) -> Item:
    return {k: _attr(v) for k, v in values.items() if v is not None}


def _from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def _record_values(record: Record) -> dict[str, Any]:
    return record.model_dump(mode="python", exclude_none=True)


@dataclass(frozen=True, slots=True)
class Page[T]:
    items: list[T]
    has_more: bool


@dataclass(frozen=True, slots=True)
class SpendEntry:
    """One batch's contribution to its owner's spend, booked in the completion transaction."""

    owner: str
    day: str
    model: str
    cost: Cost
    usage: Usage
    requests: int


class _Update:
    """Builds one UpdateExpression with its names and values."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: Item = {}
        self._set: list[str] = []
        self._remove: list[str] = []
        self._add: list[str] = []
        self._delete: list[str] = []
        self.conditions: list[str] = []

    def path(self, dotted: str) -> str:
        parts = []
        for part in dotted.split("."):
            placeholder = f"#n{len(self.names)}"
            self.names[placeholder] = part
            parts.append(placeholder)
        return ".".join(parts)

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = _attr(value)
        return placeholder

    def set_fields(self, fields: Mapping[str, Any]) -> _Update:
        for name, value in fields.items():
            if value is None:
                self._remove.append(self.path(name))
            else:
                self._set.append(f"{self.path(name)} = {self.value(value)}")
        return self

    def remove(self, *names: str) -> _Update:
        self._remove.extend(self.path(n) for n in names)
        return self

    def add(self, fields: Mapping[str, Any]) -> _Update:
        self._add.extend(f"{self.path(n)} {self.value(v)}" for n, v in fields.items())
        return self

    def delete_from_set(self, name: str, members: set[str]) -> _Update:
        self._delete.append(f"{self.path(name)} {self.value(members)}")
        return self

    def status_in(self, statuses: Collection[str]) -> _Update:
        if statuses:
            options = ", ".join(self.value(s) for s in sorted(statuses))
            self.conditions.append(f"{self.path('status')} IN ({options})")
        return self

    def equals(self, name: str, value: Any) -> _Update:
        self.conditions.append(f"{self.path(name)} = {self.value(value)}")
        return self

    def exists(self) -> _Update:
        self.conditions.append(f"attribute_exists({self.path('pk')})")
        return self

    def expression(self) -> str:
        clauses = []
        for verb, items in (("SET", self._set), ("REMOVE", self._remove), ("ADD", self._add)):
            if items:
                clauses.append(f"{verb} {', '.join(items)}")
        if self._delete:
            clauses.append(f"DELETE {', '.join(self._delete)}")
        return " ".join(clauses)

    def in_transaction(self, table: str, key: Item) -> TransactWriteItemTypeDef:
        """This update as one item of a TransactWriteItems call."""
        update: dict[str, Any] = {"TableName": table, "Key": key, **self.kwargs()}
        return cast("TransactWriteItemTypeDef", {"Update": update})

    def kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "UpdateExpression": self.expression(),
            "ExpressionAttributeNames": self.names,
        }
        if self.values:
            kwargs["ExpressionAttributeValues"] = self.values
        if self.conditions:
            kwargs["ConditionExpression"] = " AND ".join(self.conditions)
        return kwargs


def _key(pk: str, sk: str) -> Item:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _file_key(file_id: str) -> Item:
    return _key(f"FILE#{file_id}", "FILE")


def _batch_key(batch_id: str) -> Item:
    return _key(f"BATCH#{batch_id}", "BATCH")


def _upload_key(upload_id: str) -> Item:
    return _key(f"UPLOAD#{upload_id}", "UPLOAD")


def _key_key(key_id: str) -> Item:
    return _key(f"KEY#{key_id}", "KEY")


def _hash_key(key_hash: str) -> Item:
    return _key(f"KEYHASH#{key_hash}", "KEYHASH")


def _listing(kind: str, owner: str, record_id: str) -> dict[str, str]:
    return {
        "gsi1pk": f"OWNER#{owner}#{kind}",
        "gsi1sk": record_id,
        "gsi2pk": kind,
        "gsi2sk": record_id,
    }


_INTERNAL = frozenset({"pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "gsi3pk", "gsi3sk", "ttl", "in_use"})


def _fields(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in _from_item(item).items() if k not in _INTERNAL}


class Table:
    """Typed access to the batchgw table. Every status change is conditional on where it comes from."""

    def __init__(self, client: DynamoDBClient, name: str) -> None:
        self._client = client
        self._name = name

    # --- generic --------------------------------------------------------------------------------

    def _get(self, key: Item) -> Mapping[str, Any] | None:
        return self._client.get_item(TableName=self._name, Key=key, ConsistentRead=True).get("Item")

    def _update(self, key: Item, update: _Update) -> Mapping[str, Any]:
        try:
            return self._client.update_item(TableName=self._name, Key=key, ReturnValues="ALL_NEW", **update.kwargs())[
                "Attributes"
            ]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise StaleState(f"{key['pk']['S']}: condition failed") from exc
            raise

    def _put_new(self, values: Mapping[str, Any]) -> None:
        try:
            self._client.put_item(
                TableName=self._name,
                Item=_to_item(values),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise StaleState(f"{values['pk']}: already exists") from exc
            raise

    def _transact(self, items: Sequence[TransactWriteItemTypeDef]) -> None:
        try:
            self._client.transact_write_items(TransactItems=list(items))
        except ClientError as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            message = exc.response["Error"].get("Message", "")
            if exc.response["Error"]["Code"] == "TransactionCanceledException" and (
                "ConditionalCheckFailed" in reasons or (not reasons and "ConditionalCheckFailed" in message)
            ):
                raise StaleState(f"transaction cancelled: {message}") from exc
            raise

    def _page(
        self,
        *,
        index: str,
        pk_name: str,
        pk_value: str,
        sk_name: str,
        after: str | None,
        limit: int,
        ascending: bool,
        filters: Mapping[str, str] | None = None,
        unexpired_at: int | None = None,
    ) -> Page[Mapping[str, Any]]:
        """Up to `limit` items of one index partition after `after`, with an exact `has_more`."""
        names = {"#pk": pk_name}
        values: Item = {":pk": {"S": pk_value}}
        condition = "#pk = :pk"
        if after is not None:
            names["#sk"] = sk_name
            condition += f" AND #sk {'>' if ascending else '<'} :after"
            values[":after"] = {"S": after}
        kwargs: dict[str, Any] = {}
        clauses = []
        for i, (name, value) in enumerate((filters or {}).items()):
            names[f"#f{i}"] = name
            values[f":f{i}"] = {"S": value}
            clauses.append(f"#f{i} = :f{i}")
        if unexpired_at is not None:
            names["#ttl"] = "ttl"
            values[":now"] = {"N": str(unexpired_at)}
            clauses.append("(attribute_not_exists(#ttl) OR #ttl > :now)")
        if clauses:
            kwargs["FilterExpression"] = " AND ".join(clauses)
        found: list[Mapping[str, Any]] = []
        start: Mapping[str, Any] | None = None
        while len(found) <= limit:
            if start is not None:
                kwargs["ExclusiveStartKey"] = start
            response = self._client.query(
                TableName=self._name,
                IndexName=index,
                KeyConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ScanIndexForward=ascending,
                Limit=1000 if clauses else min(limit + 1 - len(found), 1000),
                **kwargs,
            )
            found.extend(response.get("Items", []))
            start = response.get("LastEvaluatedKey")
            if start is None:
                break
        return Page(items=found[:limit], has_more=len(found) > limit)

    def _owned_page(
        self,
        kind: str,
        owner: str | None,
        after: str | None,
        limit: int,
        ascending: bool,
        filters: Mapping[str, str] | None = None,
        unexpired_at: int | None = None,
    ) -> Page[Mapping[str, Any]]:
        """One page of `owner`'s objects of `kind`, or everyone's when `owner` is None."""
        if owner is None:
            index, pk_name, pk_value, sk_name = KIND_INDEX, "gsi2pk", kind, "gsi2sk"
        else:
            index, pk_name, pk_value, sk_name = OWNER_INDEX, "gsi1pk", f"OWNER#{owner}#{kind}", "gsi1sk"
        return self._page(
            index=index,
            pk_name=pk_name,
            pk_value=pk_value,
            sk_name=sk_name,
            after=after,
            limit=limit,
            ascending=ascending,
            filters=filters,
            unexpired_at=unexpired_at,
        )

    # --- files ----------------------------------------------------------------------------------

    @staticmethod
    def _file_values(record: FileRecord) -> dict[str, Any]:
        values: dict[str, Any] = {
            **_record_values(record),
            "pk": f"FILE#{record.id}",
            "sk": "FILE",
            **_listing("FILE", record.owner, record.id),
        }
        if record.expires_at is not None:
            values["ttl"] = record.expires_at
        return values

    def put_file(self, record: FileRecord) -> None:
        self._put_new(self._file_values(record))

    def get_file(self, file_id: str) -> FileRecord | None:
        item = self._get(_file_key(file_id))
        return FileRecord.model_validate(_fields(item)) if item else None

    def list_files(
        self,
        owner: str | None,
        *,
        purpose: str | None,
        after: str | None,
        limit: int,
        ascending: bool,
        now: int,
    ) -> Page[FileRecord]:
        """Files that have not expired, newest or oldest first."""
        filters = {"purpose": purpose} if purpose else None
        page = self._owned_page("FILE", owner, after, limit, ascending, filters, unexpired_at=now)
        return Page([FileRecord.model_validate(_fields(i)) for i in page.items], page.has_more)

    def delete_file(self, file_id: str) -> None:
        """Delete a file's item unless an unfinished batch uses it (StaleState)."""
        try:
            self._client.delete_item(
                TableName=self._name,
                Key=_file_key(file_id),
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(in_use)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise StaleState(f"file {file_id} is in use or gone") from exc
            raise

    # --- batches --------------------------------------------------------------------------------

    def create_batch(self, record: BatchRecord) -> None:
        """Store a new batch and mark its input file in use, atomically (StaleState if the file is gone)."""
        values = {
            **_record_values(record),
            "pk": f"BATCH#{record.id}",
            "sk": "BATCH",
            **_listing("BATCH", record.owner, record.id),
            "gsi3pk": "ACTIVE",
            "gsi3sk": record.id,
        }
        in_use = _Update().add({"in_use": {record.id}}).exists()
        self._transact(
            [
                {
                    "Put": {
                        "TableName": self._name,
                        "Item": _to_item(values),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                in_use.in_transaction(self._name, _file_key(record.input_file_id)),
            ]
        )

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        item = self._get(_batch_key(batch_id))
        return BatchRecord.model_validate(_fields(item)) if item else None

    def list_batches(self, owner: str | None, *, after: str | None, limit: int) -> Page[BatchRecord]:
        page = self._owned_page("BATCH", owner, after, limit, ascending=False)
        return Page([BatchRecord.model_validate(_fields(i)) for i in page.items], page.has_more)

    def active_batches(self) -> Iterator[BatchRecord]:
        """Every batch that is not terminal, from the sparse active index (never a Scan)."""
        start: Mapping[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            response = self._client.query(
                TableName=self._name,
                IndexName=ACTIVE_INDEX,
                KeyConditionExpression="gsi3pk = :active",
                ExpressionAttributeValues={":active": {"S": "ACTIVE"}},
                **kwargs,
            )
            for item in response.get("Items", []):
                yield BatchRecord.model_validate(_fields(item))
            start = response.get("LastEvaluatedKey")
            if start is None:
                return

    def update_batch(
        self,
        batch_id: str,
        *,
        expect: Collection[str],
        fields: Mapping[str, Any] | None = None,
        add: Mapping[str, int] | None = None,
        when: Mapping[str, Any] | None = None,
    ) -> BatchRecord:
        """Set `fields` (None removes) if the batch's status is in `expect` and `when` matches.

        Raises StaleState when the condition fails: another worker moved the batch first.
        """
        if not expect:
            raise StaleState(f"batch {batch_id}: no status may make this change")
        update = _Update().exists().status_in(expect).set_fields(fields or {}).add(add or {})
        for name, value in (when or {}).items():
            if value is None:
                update.conditions.append(f"attribute_not_exists({update.path(name)})")
            else:
                update.equals(name, value)
        attributes = self._update(_batch_key(batch_id), update)
        return BatchRecord.model_validate(_fields(attributes))

    def claim_submission(self, batch_id: str, *, now: int, lease_seconds: int) -> BatchRecord:
        """Take the right to submit a `validating` batch for `lease_seconds` (StaleState if someone holds it)."""
        update = _Update().exists().status_in({"validating"})
        update.conditions.append(f"attribute_not_exists({update.path('finalize_to')})")
        update.conditions.append(f"{update.path('submit_lease_until')} < {update.value(now)}")
        update.set_fields({"submit_lease_until": now + lease_seconds, "updated_at": now}).add({"submit_attempts": 1})
        return BatchRecord.model_validate(_fields(self._update(_batch_key(batch_id), update)))

    def finish_batch(
        self,
        batch: BatchRecord,
        *,
        fields: Mapping[str, Any],
        files: Sequence[FileRecord],
        spend: SpendEntry | None,
    ) -> None:
        """The completion transaction: final status, result files, input release and spend, all or nothing.

        Conditional on the batch still being where `batch` saw it (same status, same `finalize_to`),
        so a repeated or concurrent delivery raises StaleState and books nothing.
        """
        final = _Update().status_in({batch.status}).equals("finalize_to", batch.finalize_to)
        final.set_fields(fields).remove("gsi3pk", "gsi3sk")
        items: list[TransactWriteItemTypeDef] = [
            final.in_transaction(self._name, _batch_key(batch.id)),
            _Update().delete_from_set("in_use", {batch.id}).in_transaction(self._name, _file_key(batch.input_file_id)),
        ]
        items.extend({"Put": {"TableName": self._name, "Item": _to_item(self._file_values(f))}} for f in files)
        if spend is not None and spend.cost.total + spend.usage.total_tokens > 0:
            items.extend(self._spend_updates(spend))
        self._transact(items)

    def _spend_updates(self, spend: SpendEntry) -> list[TransactWriteItemTypeDef]:
        totals = {
            "cost": spend.cost.total,
            "input_cost": spend.cost.input,
            "output_cost": spend.cost.output,
            "input_tokens": spend.usage.input_tokens,
            "output_tokens": spend.usage.output_tokens,
            "requests": spend.requests,
            "batches": 1,
        }
        daily = _Update().add(totals).set_fields({"owner": spend.owner, "day": spend.day, "model": spend.model})
        updates = [daily.in_transaction(self._name, _key(f"SPEND#{spend.owner}", f"{spend.day}#{spend.model}"))]
        if spend.owner != MASTER_OWNER:
            # no existence condition: a missing key item must never block a batch from completing
            on_key = _Update().add({"spend": spend.cost.total})
            updates.append(on_key.in_transaction(self._name, _key_key(spend.owner)))
        return updates

    # --- provider batch claims ------------------------------------------------------------------

    def claim_provider_batch(self, provider_batch_id: str, batch_id: str) -> bool:
        """Reserve a provider batch for one of our batches; False if another of ours already holds it."""
        try:
            self._client.put_item(
                TableName=self._name,
                Item=_to_item({"pk": f"PROVIDERBATCH#{provider_batch_id}", "sk": "CLAIM", "batch_id": batch_id}),
                ConditionExpression="attribute_not_exists(pk) OR batch_id = :mine",
                ExpressionAttributeValues={":mine": {"S": batch_id}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def provider_batch_owner(self, provider_batch_id: str) -> str | None:
        item = self._get(_key(f"PROVIDERBATCH#{provider_batch_id}", "CLAIM"))
        return str(_from_item(item)["batch_id"]) if item else None

    # --- deployment health ----------------------------------------------------------------------

    def mark_deployment_failing(self, key: str, *, until: int, error: str) -> None:
        """Remember that a deployment failed a submission, so placement avoids it until `until`."""
        item = {"pk": f"DEPLOYMENT#{key}", "sk": "HEALTH", "failing_until": until, "error": error[:500], "ttl": until}
        self._client.put_item(TableName=self._name, Item=_to_item(item))

    def failing_deployments(self, keys: Sequence[str], *, now: int) -> set[str]:
        """Which of `keys` are marked failing at `now`."""
        response = self._client.batch_get_item(
            RequestItems={
                self._name: {"Keys": [_key(f"DEPLOYMENT#{k}", "HEALTH") for k in keys], "ConsistentRead": True}
            }
        )
        items = [_from_item(i) for i in response.get("Responses", {}).get(self._name, [])]
        return {str(i["pk"]).removeprefix("DEPLOYMENT#") for i in items if i["failing_until"] > now}

    # --- uploads --------------------------------------------------------------------------------

    def put_upload(self, record: UploadRecord) -> None:
        values = {
            **_record_values(record),
            "pk": f"UPLOAD#{record.id}",
            "sk": "UPLOAD",
            "ttl": record.expires_at,
        }
        self._put_new(values)

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        item = self._get(_upload_key(upload_id))
        return UploadRecord.model_validate(_fields(item)) if item else None

    def add_upload_part(self, upload_id: str, part_id: str, size: int) -> None:
        update = _Update().exists().status_in({"pending"}).set_fields({f"parts.{part_id}": size})
        self._update(_upload_key(upload_id), update)

    def set_upload_status(
        self, upload_id: str, status: str, *, expect: Collection[str], file_id: str | None = None
    ) -> UploadRecord:
        update = _Update().exists().status_in(expect).set_fields({"status": status, "file_id": file_id})
        return UploadRecord.model_validate(_fields(self._update(_upload_key(upload_id), update)))

    # --- keys -----------------------------------------------------------------------------------

    def put_key(self, record: KeyRecord) -> None:
        values = {
            **_record_values(record),
            "pk": f"KEY#{record.id}",
            "sk": "KEY",
            "gsi2pk": "KEY",
            "gsi2sk": record.id,
        }
        pointer = {"pk": f"KEYHASH#{record.key_hash}", "sk": "KEYHASH", "key_id": record.id}
        self._transact(
            [
                {
                    "Put": {
                        "TableName": self._name,
                        "Item": _to_item(values),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Put": {
                        "TableName": self._name,
                        "Item": _to_item(pointer),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )

    def get_key(self, key_id: str) -> KeyRecord | None:
        item = self._get(_key_key(key_id))
        return KeyRecord.model_validate(_fields(item)) if item and "key_hash" in item else None

    def find_key(self, key_hash: str) -> KeyRecord | None:
        """The live key whose secret hashes to `key_hash`, or None (unknown or revoked)."""
        pointer = self._get(_hash_key(key_hash))
        if pointer is None:
            return None
        record = self.get_key(_from_item(pointer)["key_id"])
        return record if record is not None and not record.revoked else None

    def list_keys(self, *, after: str | None, limit: int) -> Page[KeyRecord]:
        page = self._page(
            index=KIND_INDEX,
            pk_name="gsi2pk",
            pk_value="KEY",
            sk_name="gsi2sk",
            after=after,
            limit=limit,
            ascending=False,
        )
        return Page([KeyRecord.model_validate(_fields(i)) for i in page.items], page.has_more)

    def revoke_key(self, record: KeyRecord) -> None:
        """Mark a key revoked and drop its hash pointer, so the next request with it fails."""
        revoke = _Update().exists().set_fields({"revoked": True})
        self._transact(
            [
                revoke.in_transaction(self._name, _key_key(record.id)),
                {"Delete": {"TableName": self._name, "Key": _hash_key(record.key_hash)}},
            ]
        )

    def spend_rows(self, owner: str) -> list[dict[str, Any]]:
        """The per-day, per-model spend rows of one owner."""
        response = self._client.query(
            TableName=self._name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"SPEND#{owner}"}},
        )
        return [_fields(i) for i in response.get("Items", [])]
