"""moto's server for the benchmarks: as `batchgw dev` runs it (batchgw/emulator.py), with two DynamoDB hot
paths made linear.

Stock moto (5.2) spends about 20 ms of CPU on each item a query of the work index returns: it rebuilds the
whole item once per projected attribute (the index projects 26), then writes the answer through its
generic, reflective serializer. At 10,000 running batches that is minutes per poll, all of it in the
emulator. Here an index entry is projected from one copy of the item, and the DynamoDB answers are written
straight as JSON, as moto did before 5.x. What DynamoDB does (conditions, transactions, indexes, paging) is
moto's, unchanged; `make bench` also times a tick on stock moto and reports how much of it is moto's.

Run as `python -m bench.emulator PORT`.
"""

from __future__ import annotations

import base64
import json
import sys
from datetime import datetime
from typing import Any

from moto import server
from moto.core.utils import merge_dicts
from moto.dynamodb.models.dynamo_type import DynamoType, Item, serializer
from moto.dynamodb.models.utilities import find_nested_key
from moto.dynamodb.responses import DynamoHandler, DynamoResult

from batchgw import emulator


def _project(self: Item, projection_expressions: list[list[str]]) -> Item:
    whole = self.to_regular_json()
    result: dict[str, Any] = {}
    for expression in projection_expressions:
        merge_dicts(result, find_nested_key(expression, whole))
    projected = Item(hash_key=self.hash_key, range_key=self.range_key, attrs={})
    # a part of an item within DynamoDB's size limit is within it too: set without re-measuring the whole
    # entry at each attribute
    dict.update(projected.attrs, {k: DynamoType(v) for k, v in serializer.serialize(result)["M"].items()})
    return projected


def _json_value(value: object) -> str | float:
    """What JSON cannot hold as it is: binary as base64, times as epoch seconds (as DynamoDB answers)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(f"cannot write {type(value).__name__}")


_stock_serialized = DynamoHandler.serialized


def _serialized(self: DynamoHandler, action_result: Any) -> Any:
    if not isinstance(action_result, DynamoResult) or isinstance(action_result.result, Exception):
        return _stock_serialized(self, action_result)
    headers = {"Content-Type": "application/x-amz-json-1.0", **self.response_headers}
    return 200, headers, json.dumps(action_result.result, default=_json_value)


def main(port: int) -> None:
    emulator.prepare()
    Item.project = _project  # type: ignore[method-assign]
    DynamoHandler.serialized = _serialized  # type: ignore[method-assign,assignment]
    server.main(["-H", "127.0.0.1", "-p", str(port)])


if __name__ == "__main__":
    main(int(sys.argv[1]))
