"""The API functions' Lambda handlers (Mangum) with the API Gateway HTTP API events in events/."""

from __future__ import annotations

from typing import Any

import orjson

from batchgw.devstack import LambdaContext
from functions.batches_api.app import handler as batches_handler
from functions.files_api.app import handler as files_handler
from tests.integration.conftest import MASTER_KEY, Stack, load_event

CONTEXT = LambdaContext("ApiFunction")


def with_key(event: dict[str, Any], key: str = MASTER_KEY) -> dict[str, Any]:
    return {**event, "headers": {**event["headers"], "authorization": f"Bearer {key}"}}


def test_health_event_answers_ok(stack: Stack) -> None:
    response = files_handler(load_event("api_health.json"), CONTEXT)
    assert response["statusCode"] == 200 and orjson.loads(response["body"]) == {"status": "ok"}


def test_create_file_event_stores_a_validated_batch_file(stack: Stack) -> None:
    response = files_handler(with_key(load_event("api_create_file.json")), CONTEXT)
    assert response["statusCode"] == 200, response["body"]
    file = orjson.loads(response["body"])
    assert file["purpose"] == "batch" and file["filename"] == "requests.jsonl"
    stored = stack.rt.file_store.get(file["id"])
    assert stored is not None and stored.batch_input is not None and stored.batch_input.line_count == 2


def test_create_and_list_batch_events(stack: Stack) -> None:
    file = orjson.loads(files_handler(with_key(load_event("api_create_file.json")), CONTEXT)["body"])
    create = with_key(load_event("api_create_batch.json"))
    body = orjson.loads(create["body"]) | {"input_file_id": file["id"]}
    created = batches_handler({**create, "body": orjson.dumps(body).decode()}, CONTEXT)
    assert created["statusCode"] == 200, created["body"]
    batch = orjson.loads(created["body"])
    assert batch["status"] == "validating" and batch["metadata"] == {"team": "search"}
    response = batches_handler(with_key(load_event("api_list_batches.json")), CONTEXT)
    listing = orjson.loads(response["body"])
    assert response["statusCode"] == 200 and [b["id"] for b in listing["data"]] == [batch["id"]]
    assert response["headers"]["x-request-id"].startswith("req_")


def test_wrong_key_event_is_401_with_request_id(stack: Stack) -> None:
    response = batches_handler(with_key(load_event("api_list_batches.json"), "sk-nope"), CONTEXT)
    assert response["statusCode"] == 401
    assert orjson.loads(response["body"])["error"]["code"] == "invalid_api_key"
    assert response["headers"]["x-request-id"].startswith("req_")
