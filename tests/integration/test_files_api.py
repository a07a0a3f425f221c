"""The files routes over HTTP (ASGI, in-process) against moto: storage, validation, listing, download, delete."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from tests.integration.conftest import Stack, batch_lines, finish, started


def upload(
    stack: Stack, content: bytes, *, purpose: str = "batch", key: str | None = None, **fields: str
) -> dict[str, Any]:
    response = stack.api.post(
        "/v1/files",
        headers=stack.auth(key) if key else stack.auth(),
        data={"purpose": purpose, **fields},
        files={"file": ("requests.jsonl", content, "application/octet-stream")},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def stored_objects(stack: Stack) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=stack.rt.settings.bucket_name, Prefix="files/")
    return [o["Key"] for o in listing.get("Contents", [])]


def test_upload_batch_file_stores_bytes_and_returns_file_object(stack: Stack) -> None:
    content = batch_lines(3)
    body = upload(stack, content)
    assert body["object"] == "file" and body["purpose"] == "batch" and body["status"] == "processed"
    assert body["id"].startswith("file-") and body["bytes"] == len(content) and body["filename"] == "requests.jsonl"
    # batch files expire after 30 days by default, as on OpenAI
    assert body["expires_at"] == body["created_at"] + 30 * 24 * 3600
    assert stack.api.get(f"/v1/files/{body['id']}/content", headers=stack.auth()).content == content


def test_upload_invalid_batch_file_is_rejected_with_line_and_leaves_nothing(stack: Stack) -> None:
    content = batch_lines(2) + b'{"custom_id": "x", "method": "GET", "url": "/v1/chat/completions", "body": {}}\n'
    response = stack.api.post(
        "/v1/files", headers=stack.auth(), data={"purpose": "batch"}, files={"file": ("bad.jsonl", content)}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (
        "line 3" in error["message"] and error["code"] == "invalid_method" and error["type"] == "invalid_request_error"
    )
    assert response.headers["x-request-id"].startswith("req_")
    assert stored_objects(stack) == []
    assert stack.api.get("/v1/files", headers=stack.auth()).json()["data"] == []


@pytest.mark.parametrize("style", ["brackets", "dots"])
def test_upload_expires_after_in_both_forms_sets_expires_at(stack: Stack, style: str) -> None:
    fields = (
        {"expires_after[anchor]": "created_at", "expires_after[seconds]": "7200"}
        if style == "brackets"
        else {"expires_after.anchor": "created_at", "expires_after.seconds": "7200"}
    )
    body = upload(stack, b"notes", purpose="user_data", **fields)
    assert body["expires_at"] == body["created_at"] + 7200


def test_upload_expires_after_out_of_range_is_400(stack: Stack) -> None:
    response = stack.api.post(
        "/v1/files",
        headers=stack.auth(),
        data={"purpose": "user_data", "expires_after[anchor]": "created_at", "expires_after[seconds]": "10"},
        files={"file": ("a.txt", b"x")},
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "expires_after"


def test_upload_unknown_purpose_is_400(stack: Stack) -> None:
    response = stack.api.post(
        "/v1/files", headers=stack.auth(), data={"purpose": "nonsense"}, files={"file": ("a.txt", b"x")}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "purpose"


def test_list_files_orders_filters_and_pages_with_exact_has_more(stack: Stack) -> None:
    ids = [upload(stack, batch_lines(1))["id"] for _ in range(3)]
    other = upload(stack, b"plain", purpose="user_data")["id"]

    newest_first = stack.api.get("/v1/files", headers=stack.auth()).json()
    assert [f["id"] for f in newest_first["data"]] == [other, *reversed(ids)]
    assert newest_first["has_more"] is False and newest_first["object"] == "list"
    assert newest_first["first_id"] == other and newest_first["last_id"] == ids[0]

    page = stack.api.get("/v1/files", headers=stack.auth(), params={"purpose": "batch", "limit": 2}).json()
    assert [f["id"] for f in page["data"]] == [ids[2], ids[1]] and page["has_more"] is True
    rest = stack.api.get(
        "/v1/files", headers=stack.auth(), params={"purpose": "batch", "limit": 2, "after": ids[1]}
    ).json()
    assert [f["id"] for f in rest["data"]] == [ids[0]] and rest["has_more"] is False

    oldest_first = stack.api.get("/v1/files", headers=stack.auth(), params={"order": "asc", "limit": 2}).json()
    assert [f["id"] for f in oldest_first["data"]] == ids[:2] and oldest_first["has_more"] is True


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 10_001}, {"order": "sideways"}, {"after": "nope"}, {"purpose": "batches"}]
)
def test_list_files_bad_params_are_400(stack: Stack, params: dict[str, Any]) -> None:
    response = stack.api.get("/v1/files", headers=stack.auth(), params=params)
    assert response.status_code == 400 and response.json()["error"]["param"] == next(iter(params))


@pytest.mark.parametrize("purpose", ["fine-tune-results", "assistants_output", "evals"])
def test_list_files_takes_every_purpose_a_file_can_have(stack: Stack, purpose: str) -> None:
    # a purpose no upload here can be given is a filter, not a typo: it matches none of the files there are
    upload(stack, batch_lines(1))
    upload(stack, b"plain", purpose="user_data")
    response = stack.api.get("/v1/files", headers=stack.auth(), params={"purpose": purpose})
    assert response.status_code == 200 and response.json()["data"] == []


def test_list_files_by_batch_output_finds_a_batch_s_output_alone(stack: Stack) -> None:
    (ended,) = finish(stack, started(stack, batch_lines(2)))
    response = stack.api.get("/v1/files", headers=stack.auth(), params={"purpose": "batch_output"})
    assert response.status_code == 200
    assert [f["id"] for f in response.json()["data"]] == [ended["output_file_id"]]


def test_retrieve_unknown_file_is_404_in_openai_shape(stack: Stack) -> None:
    response = stack.api.get("/v1/files/file-00000000000000000000000000ff", headers=stack.auth())
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_delete_file_removes_item_and_object(stack: Stack) -> None:
    file_id = upload(stack, b"hello", purpose="user_data")["id"]
    response = stack.api.delete(f"/v1/files/{file_id}", headers=stack.auth())
    assert response.json() == {"id": file_id, "object": "file", "deleted": True}
    assert stack.api.get(f"/v1/files/{file_id}", headers=stack.auth()).status_code == 404
    assert stored_objects(stack) == []


def test_delete_file_used_by_unfinished_batch_is_400(stack: Stack) -> None:
    file_id = upload(stack, batch_lines(2))["id"]
    created = stack.api.post(
        "/v1/batches",
        headers=stack.auth(),
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    )
    assert created.status_code == 200
    response = stack.api.delete(f"/v1/files/{file_id}", headers=stack.auth())
    assert response.status_code == 400 and response.json()["error"]["code"] == "file_in_use"
    assert stack.api.get(f"/v1/files/{file_id}", headers=stack.auth()).status_code == 200


def test_body_over_the_request_limit_is_413_pointing_to_uploads(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.runtime import reset_runtime

    monkeypatch.setenv("BATCHGW_MAX_REQUEST_BYTES", "1000")
    reset_runtime()
    response = stack.api.post(
        "/v1/files", headers=stack.auth(), data={"purpose": "batch"}, files={"file": ("big.jsonl", batch_lines(40))}
    )
    assert response.status_code == 413
    assert "/v1/uploads" in response.json()["error"]["message"]
    assert stored_objects(stack) == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer sk-wrong"}, 401),
        ({"Authorization": "Basic abc"}, 401),
        ({"api-key": "sk-test-master"}, 200),
    ],
)
def test_auth_headers(stack: Stack, headers: dict[str, str], status: int) -> None:
    response = stack.api.get("/v1/files", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_health_needs_no_key(stack: Stack) -> None:
    response = stack.api.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_health_answers_head_as_uptime_checks_send_it(stack: Stack) -> None:
    response = stack.api.head("/health")
    assert response.status_code == 200 and response.content == b""
