"""The smaller holes of "Nothing lost", through the real handlers against moto: upload ownership, concurrent
parts, over-limit chunked bodies, inputs that expire under a running batch, items that cannot be read."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from shared.auth import hash_key
from shared.files import Files
from shared.runtime import reset_runtime
from tests.integration.conftest import MASTER_KEY, Stack, batch_lines, finish, started
from tests.integration.test_authorization import new_key


def create_upload(stack: Stack, key: str, size: int) -> dict[str, Any]:
    body = {"bytes": size, "filename": "in.jsonl", "mime_type": "application/jsonl", "purpose": "batch"}
    response = stack.api.post("/v1/uploads", headers=stack.auth(key), json=body)
    assert response.status_code == 200, response.text
    upload: dict[str, Any] = response.json()
    return upload


def test_an_upload_completed_by_the_master_key_belongs_to_the_tenant_that_created_it(stack: Stack) -> None:
    tenant = new_key(stack, name="tenant")["key"]
    content = batch_lines(3)
    upload = create_upload(stack, tenant, len(content))
    part = stack.api.post(
        f"/v1/uploads/{upload['id']}/parts", headers=stack.auth(tenant), files={"data": ("p", content)}
    ).json()
    done = stack.api.post(
        f"/v1/uploads/{upload['id']}/complete", headers=stack.auth(MASTER_KEY), json={"part_ids": [part["id"]]}
    )
    assert done.status_code == 200, done.text
    file_id = done.json()["file"]["id"]
    assert stack.api.get(f"/v1/files/{file_id}", headers=stack.auth(tenant)).status_code == 200
    assert file_id in [f["id"] for f in stack.api.get("/v1/files", headers=stack.auth(tenant)).json()["data"]]


def test_concurrent_parts_never_exceed_the_uploads_byte_cap(stack: Stack) -> None:
    # Given an upload declaring 10 parts' worth of bytes (its parts may hold twice that: room to resend each
    # once), and 30 parts sent at once
    part = b"x" * 1000
    upload = create_upload(stack, MASTER_KEY, 10 * len(part))
    statuses: list[int] = []

    def send() -> None:
        response = stack.api.post(
            f"/v1/uploads/{upload['id']}/parts", headers=stack.auth(), files={"data": ("p", part)}
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=send) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then exactly 20 are taken, the rest refused with a 400, and the upload holds no more than its cap
    assert statuses.count(200) == 20 and statuses.count(400) == 10
    stored = stack.rt.upload_store.get(upload["id"])
    assert stored is not None and len(stored.parts) == 20 and stored.received_bytes == 20 * len(part)


def test_a_chunked_body_over_the_limit_is_a_413_in_openais_error_shape(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHGW_MAX_REQUEST_BYTES", "1024")
    reset_runtime()

    def chunks() -> Iterator[bytes]:
        yield b'{"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "metadata": {"k": "'
        for _ in range(10):
            yield b"v" * 500
        yield b'"}, "completion_window": "24h"}'

    response = stack.api.post(
        "/v1/batches", headers={**stack.auth(), "content-type": "application/json"}, content=chunks()
    )
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and "larger than 1,024 bytes" in error["message"]
    assert "/v1/uploads" not in error["message"]  # no file is sent here: the Uploads API is no way out
    assert response.headers["x-request-id"].startswith("req_")
    # a file over the limit is pointed to the Uploads API
    upload = stack.api.post(
        "/v1/files", headers=stack.auth(), data={"purpose": "batch"}, files={"file": ("in.jsonl", b"x" * 4096)}
    )
    assert upload.status_code == 413 and "/v1/uploads" in upload.json()["error"]["message"]


def test_an_input_past_its_expiry_stays_while_its_batch_runs_and_goes_with_its_objects_after(stack: Stack) -> None:
    # Given a running batch, and a batch file nobody uses; both expire in 30 days
    batch_id = started(stack, batch_lines(2, model="mock-slow"))
    stack.deliver("SubmitterFunction")
    input_id = stack.rt.batch_store.get(batch_id).input_file_id  # type: ignore[union-attr]
    loose = stack.api.post(
        "/v1/files", headers=stack.auth(), data={"purpose": "batch"}, files={"file": ("x.jsonl", batch_lines(1))}
    ).json()
    later = time.time() + 31 * 24 * 3600

    # When the sweep runs a month later, only the unused file goes, with its bytes
    files = Files(stack.rt.file_store, stack.rt.blobs, clock=lambda: later)
    assert files.sweep() == 1
    assert stack.rt.file_store.get(loose["id"]) is None and stack.rt.blobs.get(f"files/{loose['id']}") is None
    # Then the running batch's input and its bytes are untouched
    assert stack.rt.file_store.get(input_id) is not None and stack.rt.blobs.get(f"files/{input_id}") is not None
    # And once the batch is over, the next sweep removes the input's item and its objects together
    stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth())
    finish(stack, batch_id)
    assert files.sweep() >= 1  # the input, and the result files that are a month old by then too
    assert stack.rt.file_store.get(input_id) is None
    keys = boto3.client("s3").list_objects_v2(Bucket=stack.rt.settings.bucket_name, Prefix=f"files/{input_id}")
    assert keys.get("KeyCount", 0) == 0


def broken_batch(stack: Stack, owner: str) -> str:
    """A batch item of `owner` that cannot be read back (a status no batch has)."""
    batch_id = "batch_" + "0" * 27 + "1"
    boto3.client("dynamodb").put_item(
        TableName=stack.rt.settings.table_name,
        Item={
            "pk": {"S": f"BATCH#{batch_id}"},
            "sk": {"S": "BATCH"},
            "id": {"S": batch_id},
            "owner": {"S": owner},
            "status": {"S": "lost"},
        },
    )
    return batch_id


def test_an_item_that_cannot_be_read_is_a_clear_400_to_its_owner_and_a_404_to_anyone_else(stack: Stack) -> None:
    owner, other = new_key(stack, name="owner"), new_key(stack, name="other")
    batch_id = broken_batch(stack, owner["id"])
    mine = stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth(owner["key"]))
    assert mine.status_code == 400 and mine.json()["error"]["code"] == "unreadable_object"
    theirs = stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth(other["key"]))
    assert theirs.status_code == 404 and theirs.json()["error"]["message"] == f"No such Batch object: {batch_id}"


def test_a_key_whose_record_cannot_be_read_gets_a_clear_401(stack: Stack) -> None:
    created = new_key(stack, name="broken")
    boto3.client("dynamodb").update_item(  # what the check reads: the key's hash pointer
        TableName=stack.rt.settings.table_name,
        Key={"pk": {"S": f"KEYHASH#{hash_key(created['key'])}"}, "sk": {"S": "KEYHASH"}},
        UpdateExpression="SET models = :bad",
        ExpressionAttributeValues={":bad": {"S": "not a list"}},
    )
    response = stack.api.get("/v1/batches", headers=stack.auth(created["key"]))
    assert response.status_code == 401 and "cannot be read" in response.json()["error"]["message"]
