"""Counting what the functions ask of AWS, in the units AWS bills, while they run in the local stack.

- Every AWS call made through the runtime's boto3 session is counted by botocore event hooks
  (`shared.runtime.SESSION_HOOKS`), by function, service and operation.
- DynamoDB request units: moto answers `ReturnConsumedCapacity` with fixed figures (0.5 or 1 per call,
  whatever the item), so the units are computed here from the items, by DynamoDB's rules: a write is 1 WRU
  per KB of the larger of the item before and after it (2 in a transaction), plus a write to each global
  secondary index whose entry it changes (an index key change is a delete and a put), and a failed
  condition still costs the item's size; a read is 1 RRU per 4 KB read (strongly consistent; half for the
  eventually consistent index queries), a query's items added up before rounding, and a query's filtered-out
  items count too. The before and after images are read with a separate, uncounted client.
- S3 requests by price class, EventBridge events and SQS requests in 64 KB chunks.
- Each Lambda invocation runs the function's real handler: its duration (billed by the ms) at the memory
  template.yaml gives the function, its log output (stdout and stderr, captured at the file descriptors,
  as Lambda does) and the custom metrics it emits (EMF lines).
- HTTP API requests: the functions' API handlers are reached through `LambdaApiTransport`, which turns each
  HTTP request into the API Gateway event Lambda would get, and meters it in 512 KB increments.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import boto3
import httpx
import orjson

from batchgw import template
from batchgw.devstack import LambdaContext, import_handler
from bench.prices import HTTP_API_METERING_BYTES
from shared import runtime

CHUNK_64KB: Final = 64 * 1024
# what Lambda itself writes to the log for each invocation (START, END, and REPORT with its X-Ray line),
# about 400 bytes; CloudWatch Logs also bills 26 bytes of each log event
PLATFORM_LOG_BYTES: Final = 400
EVENT_OVERHEAD_BYTES: Final = 26
_S3_FREE: Final = frozenset({"DeleteObject", "DeleteObjects", "AbortMultipartUpload"})
_S3_PUT_CLASS: Final = ("Put", "Copy", "Post", "List", "Create", "Upload", "Complete")
_TOKEN = re.compile(r"[#:][A-Za-z0-9_]+")

type Item = Mapping[str, Any]
type Metric = tuple[str, str, tuple[tuple[str, str], ...]]  # a custom metric: namespace, name, dimensions


@dataclass(frozen=True)
class Function:
    """A function of template.yaml as Lambda bills it."""

    logical_id: str
    handler: str
    memory_mb: int
    timeout_s: int


def functions() -> dict[str, Function]:
    """Every function of template.yaml, with the memory and timeout it runs with."""
    loaded = template.load_template()
    defaults = loaded["Globals"]["Function"]
    found = {}
    for function in template.functions():
        props = loaded["Resources"][function.logical_id]["Properties"]
        found[function.logical_id] = Function(
            function.logical_id,
            function.handler,
            int(props.get("MemorySize", defaults["MemorySize"])),
            int(props.get("Timeout", defaults["Timeout"])),
        )
    return found


# --- DynamoDB item sizes and request units ----------------------------------------------------------------


def _number_bytes(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").strip("0") or "0"
    return math.ceil(len(digits) / 2) + 1


def value_bytes(value: Mapping[str, Any]) -> int:
    """An attribute value's size as DynamoDB counts it."""
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        return _number_bytes(v)
    if kind == "B":
        return len(v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in v)
    if kind == "NS":
        return sum(_number_bytes(n) for n in v)
    if kind == "BS":
        return sum(len(b) for b in v)
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_bytes(x) + 1 for k, x in v.items())
    if kind == "L":
        return 3 + sum(value_bytes(x) + 1 for x in v)
    raise ValueError(f"unknown attribute type {kind}")


def item_bytes(item: Item | None) -> int:
    """An item's size as DynamoDB counts it: names and values."""
    return sum(len(name.encode()) + value_bytes(v) for name, v in (item or {}).items())


@dataclass(frozen=True)
class Index:
    """A global secondary index, for what a write to the table costs in it."""

    keys: tuple[str, ...]  # the table's key and the index's
    projected: frozenset[str] | None  # None: every attribute

    def entry(self, item: Item | None) -> dict[str, Any] | None:
        """The item's entry in this index; None when it has none (an index key is missing)."""
        if item is None or any(k not in item for k in self.keys):
            return None
        return {k: v for k, v in item.items() if self.projected is None or k in self.keys or k in self.projected}

    def write_units(self, before: Item | None, after: Item | None) -> int:
        old, new = self.entry(before), self.entry(after)
        if old == new:
            return 0
        if old is not None and new is not None and all(old[k] == new[k] for k in self.keys):
            return max(1, math.ceil(max(item_bytes(old), item_bytes(new)) / 1024))
        return sum(max(1, math.ceil(item_bytes(e) / 1024)) for e in (old, new) if e is not None)


def indexes(table_name: str) -> tuple[tuple[str, ...], list[Index]]:
    """The table's key attributes and its global secondary indexes, from template.yaml."""
    definition = template.table_definition(table_name)
    table_keys = tuple(k["AttributeName"] for k in definition["KeySchema"])
    found = []
    for gsi in definition["GlobalSecondaryIndexes"]:
        projection = gsi["Projection"]
        kind = projection["ProjectionType"]
        projected = None if kind == "ALL" else frozenset(projection.get("NonKeyAttributes", ()))
        found.append(Index(table_keys + tuple(k["AttributeName"] for k in gsi["KeySchema"]), projected))
    return table_keys, found


class DynamoUnits:
    """Request units of each DynamoDB call, computed from the items it read and wrote."""

    def __init__(self, table_name: str) -> None:
        self._table = table_name
        self._keys, self._indexes = indexes(table_name)
        self._images = boto3.session.Session().client("dynamodb")  # uncounted: outside the runtime's session
        self.unpriced: Counter[str] = Counter()

    def _image(self, key: Item) -> Item | None:
        item: Item | None = self._images.get_item(TableName=self._table, Key=dict(key), ConsistentRead=True).get("Item")
        return item

    def _key(self, item: Item) -> dict[str, Any]:
        return {k: item[k] for k in self._keys}

    def _writes(self, operation: str, params: Mapping[str, Any]) -> list[tuple[dict[str, Any], bool]]:
        """The keys a write touches, each with whether it writes through a transaction."""
        if operation == "PutItem":
            return [(self._key(params["Item"]), False)]
        if operation in ("UpdateItem", "DeleteItem"):
            return [(dict(params["Key"]), False)]
        if operation == "TransactWriteItems":
            keys = []
            for op in params["TransactItems"]:
                ((kind, spec),) = op.items()
                keys.append((self._key(spec["Item"]) if kind == "Put" else dict(spec["Key"]), True))
            return keys
        return []

    def before(self, operation: str, params: Mapping[str, Any]) -> list[Item | None]:
        """The images of the items a write is about to change."""
        return [self._image(key) for key, _ in self._writes(operation, params)]

    def units(
        self, operation: str, params: Mapping[str, Any], parsed: Mapping[str, Any], before: list[Item | None]
    ) -> tuple[float, float]:
        """(RRU, WRU) of one call, once answered."""
        failed = "Error" in parsed
        if operation == "GetItem":
            size = item_bytes(parsed.get("Item"))
            return max(1, math.ceil(size / 4096)) * (1.0 if params.get("ConsistentRead") else 0.5), 0.0
        if operation == "Query":
            return self._query_units(params, parsed), 0.0
        if operation == "BatchGetItem":
            return self._batch_get_units(params, parsed), 0.0
        writes = self._writes(operation, params)
        if not writes:
            self.unpriced[operation] += 1
            return 0.0, 0.0
        wru = 0.0
        for (key, transactional), old in zip(writes, before, strict=True):
            new = old if failed else self._image(key)
            size = max(item_bytes(old), item_bytes(new))
            wru += max(1, math.ceil(size / 1024)) * (2 if transactional else 1)
            if not failed:
                wru += sum(index.write_units(old, new) for index in self._indexes)
        return 0.0, wru

    def _batch_get_units(self, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> float:
        """Each key read (not left unprocessed) as the GetItem it stands for: its item's size rounded up to 4 KB
        on its own, a missing item the least a read costs."""

        def identity(item: Item) -> bytes:
            return orjson.dumps(self._key(item), option=orjson.OPT_SORT_KEYS)

        units = 0.0
        for table, asked in params["RequestItems"].items():
            left = {identity(k) for k in parsed.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])}
            found = {identity(item): item for item in parsed.get("Responses", {}).get(table, [])}
            per_unit = 1.0 if asked.get("ConsistentRead") else 0.5
            for wanted in map(identity, asked["Keys"]):
                if wanted not in left:
                    units += max(1, math.ceil(item_bytes(found.get(wanted)) / 4096)) * per_unit
        return units

    def _query_units(self, params: Mapping[str, Any], parsed: Mapping[str, Any]) -> float:
        items = parsed.get("Items", [])
        if "FilterExpression" in params and parsed.get("ScannedCount", 0) > len(items):
            items = self._unfiltered(params)
        size = sum(item_bytes(i) for i in items)
        return max(1, math.ceil(size / 4096)) * (1.0 if params.get("ConsistentRead") else 0.5)

    def _unfiltered(self, params: Mapping[str, Any]) -> list[Item]:
        """What a filtered query page read before its filter: the same page without it."""
        used = set(_TOKEN.findall(params["KeyConditionExpression"] + params.get("ProjectionExpression", "")))
        kwargs = {k: v for k, v in params.items() if k not in ("FilterExpression", "ReturnConsumedCapacity")}
        for name in ("ExpressionAttributeNames", "ExpressionAttributeValues"):
            if name in kwargs:
                kwargs[name] = {k: v for k, v in kwargs[name].items() if k in used}
                if not kwargs[name]:
                    del kwargs[name]
        return [item for item in self._images.query(**kwargs).get("Items", [])]


# --- the meter ----------------------------------------------------------------------------------------------


@dataclass
class Invocation:
    function: str
    ms: float
    memory_mb: int
    log_bytes: int
    log_events: int

    @property
    def gb_seconds(self) -> float:
        return math.ceil(self.ms) / 1000 * self.memory_mb / 1024


@contextlib.contextmanager
def captured_output() -> Iterator[list[bytes]]:
    """What this process writes to stdout and stderr in the block, as Lambda would ship it to CloudWatch Logs."""
    lines: list[bytes] = []
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            lines.extend(line for line in sink.read().splitlines() if line.strip())


def emf_metrics(line: bytes) -> set[Metric]:
    """The custom metrics an Embedded Metric Format log line defines: (namespace, name, dimensions)."""
    if b'"_aws"' not in line:
        return set()
    blob = orjson.loads(line)
    found = set()
    for directive in blob["_aws"]["CloudWatchMetrics"]:
        for dimensions in directive["Dimensions"] or [[]]:
            dims = tuple((d, str(blob[d])) for d in dimensions)
            found |= {(directive["Namespace"], m["Name"], dims) for m in directive["Metrics"]}
    return found


@dataclass
class AwsMeter:
    """Counts AWS calls, request units, invocations, logs and metrics; attributes them to `function`."""

    table_name: str
    # compute DynamoDB request units: reads the images of every item written, so it slows the calls it meters
    units_on: bool = True
    function: str = "-"
    calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    units: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    by_function: dict[str, defaultdict[str, float]] = field(default_factory=dict)
    invocations: list[Invocation] = field(default_factory=list)
    metrics: set[Metric] = field(default_factory=set)
    last_log: list[bytes] = field(default_factory=list)  # the log lines of the latest invocation
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _dynamo: DynamoUnits | None = None
    _functions: dict[str, Function] = field(default_factory=functions)

    def install(self) -> None:
        """Count the calls of the process's runtime, built afresh from now on."""
        self._dynamo = DynamoUnits(self.table_name)
        runtime.SESSION_HOOKS.append(self.attach)
        runtime.reset_runtime()

    def attach(self, session: boto3.session.Session) -> None:
        session.events.register("before-parameter-build", self._before)
        session.events.register("after-call", self._after)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.units.clear()
            self.by_function.clear()
            self.invocations.clear()
            self.metrics.clear()
            if self._dynamo is not None:
                self._dynamo.unpriced.clear()

    def add(self, name: str, amount: float, function: str | None = None) -> None:
        with self._lock:
            self.units[name] += amount
            self.by_function.setdefault(function or self.function, defaultdict(float))[name] += amount

    # --- botocore hooks ---

    def _before(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        context["bench.params"] = params
        if self.units_on and self._dynamo is not None and model.service_model.service_id == "DynamoDB":
            context["bench.before"] = self._dynamo.before(model.name, params)

    def _after(self, parsed: Mapping[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        service, operation = model.service_model.service_id, model.name
        params: Mapping[str, Any] = context.get("bench.params", {})
        with self._lock:
            self.calls[(self.function, service, operation)] += 1
        if service == "DynamoDB":
            if self._dynamo is None or "bench.before" not in context:  # units not on when it was sent
                return
            rru, wru = self._dynamo.units(operation, params, parsed, context["bench.before"])
            self.add("dynamodb_rru", rru)
            self.add("dynamodb_wru", wru)
        elif service == "S3" and operation not in _S3_FREE:
            self.add("s3_put_class" if operation.startswith(_S3_PUT_CLASS) else "s3_get_class", 1)
        elif service == "EventBridge" and operation == "PutEvents":
            for entry in params["Entries"]:
                self.add("eventbridge_events", math.ceil(len(orjson.dumps(entry)) / CHUNK_64KB))
                if entry.get("DetailType") == "Batch Completed":
                    self.add("sns_publishes", 1)  # template.yaml's BatchCompletedRule sends it to SNS
        elif service == "SQS":
            payload = sum(len(e.get("MessageBody", "")) for e in params.get("Entries", [])) or len(
                params.get("MessageBody", "")
            )
            self.add("sqs_requests", max(1, math.ceil(payload / CHUNK_64KB)))

    # --- Lambda ---

    def invoke(self, function: str, event: dict[str, Any], *, timeout_s: int | None = None) -> Any:
        """Invoke `function`'s real handler with `event`, as Lambda would, metering the invocation; with the
        function's timeout from template.yaml unless `timeout_s` says otherwise."""
        spec = self._functions[function]
        handler = import_handler(spec.handler)
        previous, self.function = self.function, function
        try:
            with captured_output() as lines:
                started = time.perf_counter()
                try:
                    return handler(event, LambdaContext(function, timeout_seconds=timeout_s or spec.timeout_s))
                finally:
                    ms = (time.perf_counter() - started) * 1000
        finally:
            self.function = previous
            invocation = Invocation(function, ms, spec.memory_mb, sum(len(x) for x in lines), len(lines))
            with self._lock:
                self.invocations.append(invocation)
                self.last_log = lines
                for line in lines:
                    self.metrics |= emf_metrics(line)

    def usage(self, function: str | None = None) -> dict[str, float]:
        """The counted usage (of `function` alone, if given), in the units bench/prices.py prices. With the
        template's EnableTracing on, one X-Ray trace per invocation: at this volume the default sampling rule
        (one a second, then 5 %) records all; off (its default), none."""
        invocations = [i for i in self.invocations if function is None or i.function == function]
        log_bytes = sum(
            i.log_bytes + PLATFORM_LOG_BYTES + EVENT_OVERHEAD_BYTES * (i.log_events + 3) for i in invocations
        )
        units = dict(self.units if function is None else self.by_function.get(function, defaultdict(float)))
        sent = units.pop("transfer_out_bytes", 0)
        unpriced = sum(self._dynamo.unpriced.values()) if self._dynamo is not None and function is None else 0
        return {
            **units,
            **({"dynamodb_calls_without_units": unpriced} if unpriced else {}),
            "transfer_out_gb": sent / 1e9,
            "lambda_requests": len(invocations),
            "lambda_gb_seconds": sum(i.gb_seconds for i in invocations),
            "log_gb": log_bytes / 1e9,
            "xray_traces": len(invocations) if template.value({"Ref": "EnableTracing"}) == "true" else 0,
        }

    def dynamodb_calls(self) -> Counter[str]:
        return Counter({op: n for (_, service, op), n in self.calls.items() if service == "DynamoDB"})


# --- API Gateway ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    pattern: re.Pattern[str]
    function: str


def routes() -> list[Route]:
    return [
        Route(props["Method"].upper(), props["Path"], template.route_pattern(props["Path"]), function.logical_id)
        for function in template.functions()
        for _, props in function.events_of("HttpApi")
    ]


class LambdaApiTransport(httpx.BaseTransport):
    """HTTP API in front of the API functions: each request to `host` becomes the event API Gateway sends
    the function its route names, through `meter`; requests elsewhere (a presigned S3 URL the API redirected
    to) go out over HTTP, counted as the client's S3 GETs. Both count their bodies as data sent out."""

    def __init__(self, meter: AwsMeter, host: str) -> None:
        self._meter = meter
        self._host = host
        self._routes = routes()
        self._outside = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        if request.url.host != self._host:
            response = self._outside.handle_request(request)
            content = response.read()
            self._meter.add("s3_get_class", 1)
            self._meter.add("transfer_out_bytes", len(content))
            return httpx.Response(response.status_code, headers=response.headers, content=content)
        path = request.url.path
        route = next(r for r in self._routes if r.method == request.method and r.pattern.match(path))
        route_key = f"{route.method} {route.path}"
        event = {
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": path,
            "rawQueryString": request.url.query.decode(),
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "requestContext": {
                "http": {"method": request.method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
                "requestId": uuid.uuid4().hex,
                "stage": "$default",
                "routeKey": route_key,
                "timeEpoch": int(time.time() * 1000),
            },
            "body": base64.b64encode(body).decode(),
            "isBase64Encoded": True,
        }
        answer = self._meter.invoke(route.function, event)
        text: str = answer.get("body") or ""
        data = base64.b64decode(text) if answer.get("isBase64Encoded") else text.encode()
        metered = max(1, math.ceil((len(body) + len(data)) / HTTP_API_METERING_BYTES))
        self._meter.add("api_requests", metered, route.function)
        self._meter.add("transfer_out_bytes", len(data), route.function)
        headers = [(k, v) for k, v in answer.get("headers", {}).items() if k.lower() != "content-length"]
        headers += [(k, v) for k, vs in answer.get("multiValueHeaders", {}).items() for v in vs]
        return httpx.Response(answer["statusCode"], headers=headers, content=data)

    def close(self) -> None:
        self._outside.close()
