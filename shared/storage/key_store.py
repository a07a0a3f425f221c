"""The DynamoDB KeyStore: virtual keys, their hash pointers, their budgets and their spend.

A key item carries `spend` (booked cost), `reserved` (the maxima held by its unfinished batches) and their
sum `committed`, which is what one conditional write compares with the budget when a batch is admitted
(DynamoDB conditions cannot add two attributes). Spend rows (`SPEND#{owner}`, `{day}#{model}`) add up
each day's batches per model. The amounts added up are whole picodollars (shared/storage/dynamo.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from shared.records import MASTER_OWNER, KeyGrant, KeyRecord, SpendRow
from shared.storage.dynamo import KIND_INDEX, Dynamo, Item, Update, dollars, from_item, key, parse, picodollars
from shared.storage.ports import Page, SpendEntry

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef


_KEY_AMOUNTS: Final = ("spend", "reserved")
_ROW_AMOUNTS: Final = ("cost", "input_cost", "output_cost")


def _in_dollars(item: Mapping[str, Any], amounts: tuple[str, ...]) -> dict[str, Any]:
    """An item with its picodollar amounts as dollars, as the records hold them."""
    converted = dict(item)
    for name in amounts:
        if name in converted:
            converted[name] = {"N": str(dollars(Decimal(converted[name]["N"])))}
    return converted


def key_key(key_id: str) -> Item:
    return key(f"KEY#{key_id}", "KEY")


def _hash_key(key_hash: str) -> Item:
    return key(f"KEYHASH#{key_hash}", "KEYHASH")


def spend_update(
    db: Dynamo, entries: Sequence[SpendEntry], *, owner: str, released: Decimal
) -> list[TransactWriteItemTypeDef]:
    """The completion transaction's writes for one batch's spend: each model's row of the day, and the key's
    spend with `released` (what the batch had reserved) handed back."""
    ops: list[TransactWriteItemTypeDef] = []
    for spend in entries:
        if not (spend.cost.total or spend.usage.total_tokens):
            continue
        daily = Update().add(
            cost=picodollars(spend.cost.total),
            input_cost=picodollars(spend.cost.input),
            output_cost=picodollars(spend.cost.output),
            input_tokens=spend.usage.input_tokens,
            output_tokens=spend.usage.output_tokens,
            requests=spend.requests,
            batches=1,
        )
        daily.assign(owner=spend.owner, day=spend.day, model=spend.model)
        ops.append(db.update_op(key(f"SPEND#{spend.owner}", f"{spend.day}#{spend.model}"), daily))
    cost, held = sum(picodollars(s.cost.total) for s in entries), picodollars(released)
    if owner != MASTER_OWNER and (cost or held):
        # no existence condition: a missing key item must never stop a batch from completing
        booked = Update().add(spend=cost, reserved=-held, committed=cost - held)
        ops.append(db.update_op(key_key(owner), booked))
    return ops


class DynamoKeyStore:
    def __init__(self, db: Dynamo) -> None:
        self._db = db

    def put(self, record: KeyRecord) -> None:
        values: dict[str, Any] = {
            **record.model_dump(mode="python", exclude_none=True),
            "spend": picodollars(record.spend),
            "reserved": picodollars(record.reserved),
            "committed": picodollars(record.spend + record.reserved),
            "pk": f"KEY#{record.id}",
            "sk": "KEY",
            "gsi2pk": "KEY",
            "gsi2sk": record.id,
        }
        pointer = {
            "pk": f"KEYHASH#{record.key_hash}",
            "sk": "KEYHASH",
            "key_id": record.id,
            **record.grant.model_dump(mode="python", exclude_none=True),
        }
        self._db.transact([self._db.put_op(values, new=True), self._db.put_op(pointer, new=True)])

    def get(self, key_id: str) -> KeyRecord | None:
        item = self._db.get(key_key(key_id))
        return parse(KeyRecord, _in_dollars(item, _KEY_AMOUNTS)) if item and "key_hash" in item else None

    def find(self, key_hash: str) -> KeyGrant | None:
        pointer = self._db.get(_hash_key(key_hash))
        if pointer is None:
            return None
        if "id" in pointer:  # the pointer carries the grant: one read
            return parse(KeyGrant, pointer)
        # a pointer written before pointers carried the grant: the key item says
        record = self.get(str(from_item(pointer)["key_id"]))
        if record is None or record.revoked:
            return None
        return record.grant

    def page(self, *, after: str | None, limit: int) -> Page[KeyRecord]:
        page = self._db.page(
            index=KIND_INDEX, partition=("gsi2pk", "KEY"), sort_name="gsi2sk", after=after, limit=limit, ascending=False
        )
        return Page([parse(KeyRecord, _in_dollars(i, _KEY_AMOUNTS)) for i in page.items], page.has_more)

    def revoke(self, record: KeyRecord) -> None:
        revoke = Update().exists().assign(revoked=True)
        self._db.transact(
            [self._db.update_op(key_key(record.id), revoke), self._db.delete_op(_hash_key(record.key_hash))]
        )

    def spend(self, owner: str) -> list[SpendRow]:
        rows = self._db.query(
            KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": f"SPEND#{owner}"}}
        )
        return [parse(SpendRow, _in_dollars(row, _ROW_AMOUNTS)) for row in rows]
