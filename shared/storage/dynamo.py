"""The DynamoDB core every store shares: item serialization, update expressions, conditional writes,
transactions and paged queries, with botocore's failures translated into domain errors.

One table holds every kind of record (the stores name their items):

| item    | pk                 | sk             | indexes                                                     |
| file    | FILE#{id}          | FILE           | owner-, kind-listing; work-index (EXPIRES) while it may expire |
| batch   | BATCH#{id}         | BATCH          | owner-, kind-listing; work-index (WORK#{shard}) until finished |
| upload  | UPLOAD#{id}        | UPLOAD         |                                                             |
| key     | KEY#{id}           | KEY            | kind-listing                                                |
| hash    | KEYHASH#{sha256}   | KEYHASH        |                                                             |
| spend   | SPEND#{owner}      | {day}#{model}  |                                                             |
| claim   | PROVIDERBATCH#{id} | CLAIM          |                                                             |
| health  | DEPLOYMENT#{key}   | HEALTH         |                                                             |

Ids are time-ordered (shared/ids.py), so the owner and kind listings sort on the id and an `after` cursor
is a key condition. The listings project only keys and what a listing filters on: a page is a query of
its keys, then one read of its items.

Numbers are written in plain decimal notation (never `6E-7`). Money is exact to the picodollar
(MONEY_PLACES); amounts the table adds up (a key's spend and reservations, spend rows) are kept as whole
picodollars, so DynamoDB and its emulators add them as integers: exactly, from $0.000000000001 to $10^26,
with no decimal exponent for an emulator to stumble on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, cast

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ValidationError

from shared.errors import StaleState, StorageError, UnreadableRecord
from shared.storage.ports import Page

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, TransactWriteItemTypeDef

OWNER_INDEX: Final = "owner-listing"
KIND_INDEX: Final = "kind-listing"
WORK_INDEX: Final = "work-index"
_BATCH_GET: Final = 100  # keys DynamoDB takes per BatchGetItem
_UNPROCESSED_TRIES: Final = 5  # BatchGetItem calls for one set of keys before giving up

MONEY_PLACES: Final = 12
_MONEY_QUANTUM: Final = Decimal(1).scaleb(-MONEY_PLACES)
_TRANSACTION_TRIES: Final = 5

_deserializer = TypeDeserializer()

type Item = dict[str, AttributeValueTypeDef]


def money(value: Decimal) -> Decimal:
    """`value` rounded to MONEY_PLACES decimal places, as every stored amount is."""
    return value.quantize(_MONEY_QUANTUM)


def picodollars(value: Decimal) -> int:
    """An amount as the whole picodollars the table adds up."""
    return int(value.scaleb(MONEY_PLACES).to_integral_value())


def dollars(units: Decimal | int) -> Decimal:
    """Whole picodollars as an amount in dollars."""
    return Decimal(units).scaleb(-MONEY_PLACES)


def _number(value: Decimal | int) -> str:
    """A number in plain decimal notation: `0.0000006`, never `6E-7`."""
    if isinstance(value, int):
        return str(value)
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def attr(value: Any) -> AttributeValueTypeDef:
    """One Python value as a DynamoDB attribute value (floats as exact decimals)."""
    match value:
        case None:
            return {"NULL": True}
        case bool():
            return {"BOOL": value}
        case int():
            return {"N": str(value)}
        case Decimal():
            return {"N": _number(value)}
        case float():
            return {"N": _number(Decimal(str(value)))}
        case str():
            return {"S": value}
        case bytes():
            return {"B": value}
        case dict():
            return {"M": {str(k): attr(v) for k, v in value.items() if v is not None}}
        case list() | tuple():
            return {"L": [attr(v) for v in value]}
        case set() | frozenset() if all(isinstance(v, str) for v in value):
            return {"SS": sorted(value)}
    raise TypeError(f"cannot store {type(value).__name__}")


def to_item(values: Mapping[str, Any]) -> Item:
    return {k: attr(v) for k, v in values.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def key(pk: str, sk: str) -> Item:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


INTERNAL: Final = frozenset(
    {"pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "gsi3pk", "gsi3sk", "ttl", "in_use", "committed"}
)


def fields(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item's record fields, without the table's own attributes."""
    return {k: v for k, v in from_item(item).items() if k not in INTERNAL}


def parse[R: BaseModel](model: type[R], item: Mapping[str, Any]) -> R:
    """An item as a `model` record; UnreadableRecord (naming its owner when it has one) when it is not one."""
    values = fields(item)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problem = exc.errors()[0]
        reason = f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}"
        owner = values.get("owner")
        pk = item.get("pk", {})
        raise UnreadableRecord(
            str(pk.get("S") if isinstance(pk, dict) else pk), reason, owner=owner if isinstance(owner, str) else None
        ) from None


def listing(kind: str, owner: str, record_id: str) -> dict[str, str]:
    """The owner-listing and kind-listing attributes of an owned record."""
    return {"gsi1pk": f"OWNER#{owner}#{kind}", "gsi1sk": record_id, "gsi2pk": kind, "gsi2sk": record_id}


class Update:
    """Builds one UpdateExpression with its names, values and condition."""

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
        self.values[placeholder] = attr(value)
        return placeholder

    def assign(self, **values: Any) -> Update:
        """SET each name to its value; None removes it."""
        return self.set_paths(values)

    def set_paths(self, values: Mapping[str, Any]) -> Update:
        for name, value in values.items():
            if value is None:
                self._remove.append(self.path(name))
            else:
                self._set.append(f"{self.path(name)} = {self.value(value)}")
        return self

    def remove(self, *names: str) -> Update:
        self._remove.extend(self.path(n) for n in names)
        return self

    def add(self, **values: Any) -> Update:
        self._add.extend(f"{self.path(n)} {self.value(v)}" for n, v in values.items())
        return self

    def delete_from_set(self, name: str, members: set[str]) -> Update:
        self._delete.append(f"{self.path(name)} {self.value(members)}")
        return self

    def when(self, condition: str) -> Update:
        """Add a condition written with this update's `path()` and `value()` placeholders."""
        self.conditions.append(condition)
        return self

    def exists(self) -> Update:
        return self.when(f"attribute_exists({self.path('pk')})")

    def status_in(self, statuses: Collection[str]) -> Update:
        if not statuses:
            raise StaleState("no status may make this change")
        options = ", ".join(self.value(s) for s in sorted(statuses))
        self.conditions.append(f"{self.path('status')} IN ({options})")
        return self

    def equals(self, name: str, value: Any) -> Update:
        """`name` equals `value`; a None `value` means the attribute must be absent."""
        if value is None:
            return self.when(f"attribute_not_exists({self.path(name)})")
        self.conditions.append(f"{self.path(name)} = {self.value(value)}")
        return self

    def expression(self) -> str:
        clauses = []
        for verb, items in (("SET", self._set), ("REMOVE", self._remove), ("ADD", self._add)):
            if items:
                clauses.append(f"{verb} {', '.join(items)}")
        if self._delete:
            clauses.append(f"DELETE {', '.join(self._delete)}")
        return " ".join(clauses)

    def kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"UpdateExpression": self.expression(), "ExpressionAttributeNames": self.names}
        if self.values:
            kwargs["ExpressionAttributeValues"] = self.values
        if self.conditions:
            kwargs["ConditionExpression"] = " AND ".join(f"({c})" for c in self.conditions)
        return kwargs


def _identity(item_key: Mapping[str, Any]) -> tuple[str, str]:
    return item_key["pk"]["S"], item_key["sk"]["S"]


class _ReadAhead(threading.local):
    """One thread's items to read along with its next `get`, and those read but not yet asked for."""

    def __init__(self) -> None:
        self.active = False
        self.keys: list[Item] = []
        self.read: dict[tuple[str, str], Mapping[str, Any] | None] = {}


class Dynamo:
    """The one table, and the operations every store is built from."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self.client = client
        self.table = table
        self._ahead = _ReadAhead()

    @contextmanager
    def reading_ahead(self, *item_keys: Item) -> Iterator[None]:
        """Within it, this thread's next `get` reads `item_keys` in the same request (BatchGetItem, strongly
        consistent like every `get`), and a `get` of one of them is answered from that read, once: two items
        read in turn, the second only if the first allows it, for one round trip and one request."""
        ahead = self._ahead
        if ahead.active:
            raise RuntimeError("reading_ahead does not nest")
        ahead.active, ahead.keys = True, list(item_keys)
        try:
            yield
        finally:
            ahead.active, ahead.keys, ahead.read = False, [], {}

    def get(self, item_key: Item, *, only: str | None = None) -> Mapping[str, Any] | None:
        """The item, or `only` its attribute of that name (of an item that may hold what cannot be read)."""
        ahead, wanted = self._ahead, _identity(item_key)
        if only is None and wanted in ahead.read:
            return ahead.read.pop(wanted)
        if only is None and ahead.keys:
            along = [k for k in ahead.keys if _identity(k) != wanted]
            ahead.keys = []
            if along:
                found = {_identity(item): item for item in self.get_many([item_key, *along])}
                ahead.read = {_identity(k): found.get(_identity(k)) for k in along}
                return found.get(wanted)
        with _translated(f"read {item_key['pk']['S']}"):
            if only is None:
                answer = self.client.get_item(TableName=self.table, Key=item_key, ConsistentRead=True)
            else:
                answer = self.client.get_item(
                    TableName=self.table,
                    Key=item_key,
                    ConsistentRead=True,
                    ProjectionExpression="#a",
                    ExpressionAttributeNames={"#a": only},
                )
            return answer.get("Item")

    def update(self, item_key: Item, update: Update) -> Mapping[str, Any]:
        """Apply `update`; StaleState when its condition fails. Returns the item as it now is."""
        with _translated(f"update {item_key['pk']['S']}"):
            response = self.client.update_item(
                TableName=self.table, Key=item_key, ReturnValues="ALL_NEW", **update.kwargs()
            )
        return response["Attributes"]

    def put(self, values: Mapping[str, Any], *, new: bool = False) -> None:
        kwargs: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"} if new else {}
        with _translated(f"put {values['pk']}"):
            self.client.put_item(TableName=self.table, Item=to_item(values), **kwargs)

    def delete(self, item_key: Item, *, condition: str | None = None) -> None:
        kwargs: dict[str, Any] = {"ConditionExpression": condition} if condition else {}
        with _translated(f"delete {item_key['pk']['S']}"):
            self.client.delete_item(TableName=self.table, Key=item_key, **kwargs)

    # --- transactions -------------------------------------------------------------------------------

    def update_op(self, item_key: Item, update: Update) -> TransactWriteItemTypeDef:
        return cast(
            "TransactWriteItemTypeDef", {"Update": {"TableName": self.table, "Key": item_key, **update.kwargs()}}
        )

    def put_op(self, values: Mapping[str, Any], *, new: bool = False) -> TransactWriteItemTypeDef:
        op: dict[str, Any] = {"TableName": self.table, "Item": to_item(values)}
        if new:
            op["ConditionExpression"] = "attribute_not_exists(pk)"
        return cast("TransactWriteItemTypeDef", {"Put": op})

    def delete_op(self, item_key: Item) -> TransactWriteItemTypeDef:
        return cast("TransactWriteItemTypeDef", {"Delete": {"TableName": self.table, "Key": item_key}})

    def transact(self, ops: Sequence[TransactWriteItemTypeDef]) -> None:
        """All of `ops` or none. A failed condition raises TransactionRefused with the index of each op
        that failed; a conflict with a concurrent transaction is retried, as DynamoDB's guide advises."""
        for attempt in range(_TRANSACTION_TRIES):
            try:
                self.client.transact_write_items(TransactItems=list(ops))
                return
            except ClientError as exc:
                error = exc.response["Error"]
                if error["Code"] != "TransactionCanceledException":
                    raise StorageError(f"transaction: {exc}") from exc
                message = error.get("Message", "")
                codes = _cancellation_codes(exc.response, message, len(ops))
                failed = [i for i, c in enumerate(codes) if c == "ConditionalCheckFailed"]
                if failed or "ConditionalCheckFailed" in message:
                    raise TransactionRefused(failed) from exc
                if attempt == _TRANSACTION_TRIES - 1:
                    raise StorageError(f"transaction kept conflicting: {error.get('Message', '')}") from exc
                time.sleep(0.02 * 2**attempt)
            except BotoCoreError as exc:
                raise StorageError(f"transaction: {exc}") from exc

    # --- queries --------------------------------------------------------------------------------------

    def query(self, **kwargs: Any) -> Iterator[Mapping[str, Any]]:
        """Every item a query matches, page after page."""
        start: Mapping[str, Any] | None = None
        while True:
            page_kwargs = {**kwargs, **({"ExclusiveStartKey": start} if start else {})}
            with _translated("query"):
                response = self.client.query(TableName=self.table, **page_kwargs)
            yield from response.get("Items", [])
            start = response.get("LastEvaluatedKey")
            if start is None:
                return

    def page(
        self,
        *,
        index: str,
        partition: tuple[str, str],
        sort_name: str,
        after: str | None,
        limit: int,
        ascending: bool,
        filters: Mapping[str, str] | None = None,
        unexpired_at: int | None = None,
    ) -> Page[Mapping[str, Any]]:
        """Up to `limit` items of one index partition after `after`, with an exact `has_more`."""
        names = {"#pk": partition[0]}
        values: Item = {":pk": {"S": partition[1]}}
        condition = "#pk = :pk"
        if after is not None:
            names["#sk"] = sort_name
            condition += f" AND #sk {'>' if ascending else '<'} :after"
            values[":after"] = {"S": after}
        kwargs: dict[str, Any] = {}
        clauses = []
        for i, (name, value) in enumerate((filters or {}).items()):
            names[f"#f{i}"] = name
            values[f":f{i}"] = {"S": value}
            clauses.append(f"#f{i} = :f{i}")
        if unexpired_at is not None:
            names["#exp"] = "expires_at"
            values[":now"] = {"N": str(unexpired_at)}
            clauses.append("(attribute_not_exists(#exp) OR #exp > :now)")
        if clauses:
            kwargs["FilterExpression"] = " AND ".join(clauses)
        found: list[Mapping[str, Any]] = []
        for item in self.query(
            IndexName=index,
            KeyConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ScanIndexForward=ascending,
            Limit=1000 if clauses else min(limit + 1, 1000),
            **kwargs,
        ):
            found.append(item)
            if len(found) > limit:
                break
        return Page(
            items=self.get_many([key(i["pk"]["S"], i["sk"]["S"]) for i in found[:limit]]), has_more=len(found) > limit
        )

    def get_many(self, keys: Sequence[Item]) -> list[Mapping[str, Any]]:
        """The items of `keys` that exist, in the order of `keys`: BatchGetItem, 100 keys a call, the keys it
        leaves unprocessed (throttled) asked again after a pause."""
        got: dict[tuple[str, str], Mapping[str, Any]] = {}
        for first in range(0, len(keys), _BATCH_GET):
            wanted: Any = keys[first : first + _BATCH_GET]
            what = f"read {wanted[0]['pk']['S']} and {len(wanted) - 1} more"  # a page, or a key's check and a batch
            for attempt in range(_UNPROCESSED_TRIES):
                with _translated(what):
                    response = self.client.batch_get_item(
                        RequestItems={self.table: {"Keys": wanted, "ConsistentRead": True}}
                    )
                for item in response.get("Responses", {}).get(self.table, []):
                    got[_identity(item)] = item
                left: Any = response.get("UnprocessedKeys", {})
                wanted = left.get(self.table, {}).get("Keys")
                if not wanted:
                    break
                time.sleep(0.05 * 2**attempt)
            else:
                raise StorageError(f"{what}: {len(wanted)} items left unread after {_UNPROCESSED_TRIES} tries")
        return [got[k] for k in map(_identity, keys) if k in got]


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """botocore's failures as the store's: a failed condition is StaleState, anything else StorageError."""
    try:
        yield
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            raise StaleState(f"{what}: condition failed") from exc
        raise StorageError(f"{what}: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"{what}: {exc}") from exc


class TransactionRefused(StaleState):
    """A transaction's condition failed on the ops at `failed` (their indexes in the transaction; empty when
    the answer did not say which)."""

    def __init__(self, failed: list[int]) -> None:
        super().__init__(f"transaction cancelled: conditions failed on items {failed}")
        self.failed = failed


def _cancellation_codes(response: Mapping[str, Any], message: str, count: int) -> list[str]:
    """Each op's cancellation code, from CancellationReasons or, where an emulator leaves them out, the message
    ("... reasons [None, ConditionalCheckFailed]")."""
    reasons = response.get("CancellationReasons")
    if reasons:
        return [str(r.get("Code") or "None") for r in reasons]
    codes = [c.strip() for c in message.rpartition("[")[2].rstrip("]").split(",")]
    return codes if len(codes) == count else []
