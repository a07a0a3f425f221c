"""API latency in-process: `GET /v1/batches/{id}` through the batches function's Lambda handler.

Run as `python -m bench.api_latency AWS_ENDPOINT CALLS`; prints p50 and p99 in ms. Each call is what
Lambda does on a warm invocation: an API Gateway event through Mangum and FastAPI, a virtual key
checked against the table (two reads), the batch read, the JSON answer.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import orjson

from batchgw.devstack import LambdaContext
from bench.common import use_stack
from functions.batches_api.app import handler
from shared.auth import MASTER, Principal
from shared.batches import Batches
from shared.files import Files
from shared.keys import Keys
from shared.runtime import runtime
from shared.wire import CreateBatchRequest


def event(path: str, key: str) -> dict[str, Any]:
    return {
        "version": "2.0",
        "routeKey": "GET /v1/batches/{batch_id}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"authorization": f"Bearer {key}", "host": "api.example.com"},
        "requestContext": {
            "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "requestId": "bench",
            "stage": "$default",
            "routeKey": "GET /v1/batches/{batch_id}",
        },
        "isBase64Encoded": False,
    }


def main(endpoint: str, calls: int) -> None:
    use_stack(endpoint)
    rt = runtime()
    created = Keys(rt.key_store).create(MASTER, name="bench", models=None, max_budget=None)
    caller = Principal(owner=created.record.id)
    files = Files(rt.file_store, rt.blobs)
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini"}}\n'
    file = files.store(caller.owner, purpose="batch", filename="a.jsonl", chunks=[line], expires_after=None)
    request = CreateBatchRequest(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    batch = Batches(rt.batch_store, rt.key_store, rt.claim_store, files, rt.bus, rt.routing).create(caller, request)

    call = event(f"/v1/batches/{batch.id}", created.secret)
    context = LambdaContext("BatchesApiFunction")
    assert handler(call, context)["statusCode"] == 200  # warm: the first call builds the context
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        response = handler(call, context)
        timings.append((time.perf_counter() - started) * 1000)
        assert response["statusCode"] == 200
    timings.sort()
    print(
        orjson.dumps(
            {"calls": calls, "p50_ms": statistics.median(timings), "p99_ms": timings[int(len(timings) * 0.99) - 1]}
        ).decode()
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
