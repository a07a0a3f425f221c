"""The API functions' Lambda handlers (Mangum) with the API Gateway HTTP API events in events/."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.testclient import TestClient

from batchgw.devstack import LambdaContext
from functions.batches_api.app import handler as batches_handler
from functions.files_api.app import handler as files_handler
from shared.http.app import create_app
from shared.http.lambda_handler import lambda_handler
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


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_unexpected_error_is_a_500_in_openais_shape_logged_once(stack: Stack) -> None:
    router = APIRouter()

    @router.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("the table is on fire")

    handler = lambda_handler(create_app(router))
    health = load_event("api_health.json")
    http = {**health["requestContext"]["http"], "path": "/v1/boom"}
    event = {**health, "rawPath": "/v1/boom", "requestContext": {**health["requestContext"], "http": http}}
    collected = Collected()
    # ours, and those of the layers an error passed through on its way out: Mangum (Lambda), uvicorn (dev)
    loggers = [logging.getLogger(name) for name in ("shared.http.app", "mangum", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(collected)
    try:
        response = handler(event, CONTEXT)
    finally:
        for logger in loggers:
            logger.removeHandler(collected)
    assert response["statusCode"] == 500
    assert orjson.loads(response["body"])["error"]["type"] == "server_error"
    assert response["headers"]["x-request-id"] == "req_c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    # one log line with the traceback and the request id, not one more from each layer it crossed
    (logged,) = collected.records
    assert logged.exc_info is not None and str(logged.exc_info[1]) == "the table is on fire"
    assert getattr(logged, "request_id", None) == response["headers"]["x-request-id"]


def test_an_error_after_the_answer_started_ends_it_without_a_second_answer(stack: Stack) -> None:
    # a download whose bytes stop coming: the 200 is already sent, so no 500 can follow it; the error goes on
    # to the server, which ends the connection (and logs it)
    router = APIRouter()

    def chunks() -> Iterator[bytes]:
        yield b"first"
        raise RuntimeError("the bucket went away")

    @router.get("/v1/half")
    def half() -> StreamingResponse:
        return StreamingResponse(chunks())

    # Starlette's test client, like a server, refuses a second answer's start after the first
    with TestClient(create_app(router)) as client, pytest.raises(RuntimeError, match="the bucket went away"):
        client.get("/v1/half")
