"""The Uploads API and large downloads over HTTP against moto."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import boto3
import pytest

from shared.runtime import reset_runtime
from shared.storage.blobs import READ_BYTES, S3Blobs
from tests.integration.conftest import Stack, batch_lines


def create(stack: Stack, size: int, purpose: str = "batch", **extra: Any) -> dict[str, Any]:
    body = {"bytes": size, "filename": "big.jsonl", "mime_type": "application/jsonl", "purpose": purpose, **extra}
    response = stack.api.post("/v1/uploads", headers=stack.auth(), json=body)
    assert response.status_code == 200, response.text
    upload: dict[str, Any] = response.json()
    return upload


def add_part(stack: Stack, upload_id: str, data: bytes) -> Any:
    return stack.api.post(f"/v1/uploads/{upload_id}/parts", headers=stack.auth(), files={"data": ("blob", data)})


def complete(stack: Stack, upload_id: str, part_ids: list[str], md5: str | None = None) -> Any:
    body: dict[str, Any] = {"part_ids": part_ids, **({"md5": md5} if md5 else {})}
    return stack.api.post(f"/v1/uploads/{upload_id}/complete", headers=stack.auth(), json=body)


def file_objects(stack: Stack) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=stack.rt.settings.bucket_name, Prefix="files/")
    return [o["Key"] for o in listing.get("Contents", [])]


def test_parts_join_in_the_order_given_into_one_validated_file(stack: Stack) -> None:
    lines = batch_lines(30).splitlines(keepends=True)
    chunks = [b"".join(lines[0:10]), b"".join(lines[10:20]), b"".join(lines[20:30])]
    upload = create(stack, sum(map(len, chunks)))
    assert upload["status"] == "pending" and upload["expires_at"] == upload["created_at"] + 3600
    parts = [add_part(stack, upload["id"], chunk).json() for chunk in chunks]
    assert all(p["object"] == "upload.part" and p["upload_id"] == upload["id"] for p in parts)
    order = [parts[2]["id"], parts[0]["id"], parts[1]["id"]]
    whole = chunks[2] + chunks[0] + chunks[1]
    done = complete(stack, upload["id"], order, md5=hashlib.md5(whole).hexdigest())
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "completed" and body["file"]["bytes"] == len(whole) and body["file"]["purpose"] == "batch"
    assert stack.api.get(f"/v1/files/{body['file']['id']}/content", headers=stack.auth()).content == whole
    stored = stack.rt.file_store.get(body["file"]["id"])
    assert stored is not None and stored.batch_input is not None and stored.batch_input.line_count == 30
    # the parts are gone once joined
    parts_left = boto3.client("s3").list_objects_v2(Bucket=stack.rt.settings.bucket_name, Prefix="uploads/")
    assert parts_left.get("KeyCount", 0) == 0


def test_bad_line_in_a_later_part_is_reported_by_its_line_in_the_whole_file(stack: Stack) -> None:
    first = batch_lines(5)
    second = batch_lines(2, prefix="more") + b'{"custom_id": "x", "method": "PUT"}\n'
    upload = create(stack, len(first) + len(second))
    ids = [add_part(stack, upload["id"], part).json()["id"] for part in (first, second)]
    response = complete(stack, upload["id"], ids)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "line 8" in error["message"] and error["code"] == "invalid_method"
    assert file_objects(stack) == [] and stack.api.get("/v1/files", headers=stack.auth()).json()["data"] == []


@pytest.mark.parametrize(
    ("part_ids", "code"),
    [
        (lambda ids: ids[:1], "upload_size_mismatch"),
        (lambda ids: [*ids, "part_x"], "invalid_part_ids"),
        (lambda ids: [ids[0], ids[0]], "invalid_part_ids"),
    ],
)
def test_completion_checks_the_parts(stack: Stack, part_ids: Any, code: str) -> None:
    upload = create(stack, 20, purpose="user_data")
    ids = [add_part(stack, upload["id"], b"0123456789").json()["id"] for _ in range(2)]
    response = complete(stack, upload["id"], part_ids(ids))
    assert response.status_code == 400 and response.json()["error"]["code"] == code


def test_md5_mismatch_leaves_no_file(stack: Stack) -> None:
    upload = create(stack, 10, purpose="user_data")
    part = add_part(stack, upload["id"], b"0123456789").json()["id"]
    response = complete(stack, upload["id"], [part], md5="0" * 32)
    assert response.status_code == 400 and response.json()["error"]["code"] == "md5_mismatch"
    assert file_objects(stack) == []


def test_a_part_larger_than_the_declared_size_is_refused(stack: Stack) -> None:
    upload = create(stack, 5, purpose="user_data")
    response = add_part(stack, upload["id"], b"0123456789")
    assert response.status_code == 400 and response.json()["error"]["code"] == "upload_too_large"


def test_a_resent_part_does_not_stop_the_upload_and_only_the_parts_named_make_the_file(stack: Stack) -> None:
    # every part received counted against the declared bytes: after a retry of part A, part B was refused
    first, second = batch_lines(2), batch_lines(3, prefix="more")
    upload = create(stack, len(first) + len(second))
    lost, retried, rest = (add_part(stack, upload["id"], part) for part in (first, first, second))
    assert rest.status_code == 200, rest.text
    ids = [lost.json()["id"], retried.json()["id"], rest.json()["id"]]
    refused = complete(stack, upload["id"], ids)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "upload_size_mismatch"
    done = complete(stack, upload["id"], ids[1:])
    assert done.status_code == 200, done.text
    file_id = done.json()["file"]["id"]
    assert stack.api.get(f"/v1/files/{file_id}/content", headers=stack.auth()).content == first + second
    parts_left = boto3.client("s3").list_objects_v2(Bucket=stack.rt.settings.bucket_name, Prefix="uploads/")
    assert parts_left.get("KeyCount", 0) == 0  # the spare part too


def test_the_parts_of_an_upload_hold_at_most_twice_its_declared_size(stack: Stack) -> None:
    # room to resend every part once, and no more: what one upload stores stays bounded
    upload = create(stack, 10, purpose="user_data")
    assert all(add_part(stack, upload["id"], b"0123456789").status_code == 200 for _ in range(2))
    response = add_part(stack, upload["id"], b"0")
    assert response.status_code == 400 and response.json()["error"]["code"] == "upload_too_large"


@pytest.mark.parametrize(("winner", "status"), [("cancel", "cancelled"), ("complete", "completed")])
def test_a_completion_whose_parts_go_while_it_reads_them_is_400_and_leaves_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, winner: str, status: str
) -> None:
    # a cancel or another completion deleted the parts while this completion read them: NoSuchKey, a 500
    part = b"x" * (3 * 1024 * 1024)  # by the third part, the file's S3 multipart upload has begun
    upload = create(stack, 3 * len(part), purpose="user_data")
    ids = [add_part(stack, upload["id"], part).json()["id"] for _ in range(3)]
    read = S3Blobs.read
    won: dict[str, Any] = {}

    def read_after_the_winner(self: S3Blobs, key: str, chunk_bytes: int = READ_BYTES) -> Iterator[bytes]:
        if key.endswith(ids[-1]) and "response" not in won:
            won["response"] = None  # set first: the winner reads this part too
            url = f"/v1/uploads/{upload['id']}/{winner}"
            won["response"] = stack.api.post(url, headers=stack.auth(), json={"part_ids": ids})
        return read(self, key, chunk_bytes)

    monkeypatch.setattr(S3Blobs, "read", read_after_the_winner)
    response = complete(stack, upload["id"], ids)
    winner_answer = won["response"].json()
    assert won["response"].status_code == 200 and winner_answer["status"] == status
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "upload_not_pending"
    files = stack.api.get("/v1/files", headers=stack.auth()).json()["data"]
    assert [f["id"] for f in files] == ([winner_answer["file"]["id"]] if winner == "complete" else [])
    assert file_objects(stack) == [f"files/{f['id']}" for f in files]
    s3 = boto3.client("s3")
    assert s3.list_multipart_uploads(Bucket=stack.rt.settings.bucket_name).get("Uploads", []) == []
    assert s3.list_objects_v2(Bucket=stack.rt.settings.bucket_name, Prefix="uploads/").get("KeyCount", 0) == 0


def test_a_part_over_the_request_limit_is_413_saying_the_part_size_that_fits(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the SDK's upload_file_chunked sends 64 MiB parts by default: the 413 only gave the request limit
    monkeypatch.setenv("BATCHGW_MAX_REQUEST_BYTES", "2048")
    reset_runtime()
    upload = create(stack, 4096, purpose="user_data")
    response = add_part(stack, upload["id"], b"x" * 4096)
    assert response.status_code == 413
    message = response.json()["error"]["message"]
    assert "1,024 bytes" in message and "part_size=" in message
    assert add_part(stack, upload["id"], b"x" * 1024).status_code == 200


def test_batch_upload_over_200_mb_is_refused_at_creation(stack: Stack) -> None:
    body = {"bytes": 200_000_001, "filename": "x.jsonl", "mime_type": "application/jsonl", "purpose": "batch"}
    response = stack.api.post("/v1/uploads", headers=stack.auth(), json=body)
    assert response.status_code == 400 and response.json()["error"]["code"] == "file_too_large"


@pytest.mark.parametrize("size", [True, "10", 10.5])
def test_an_upload_s_size_must_be_a_whole_number(stack: Stack, size: Any) -> None:
    # true was taken as 1 byte, "10" as 10
    body = {"bytes": size, "filename": "x.jsonl", "mime_type": "application/jsonl", "purpose": "batch"}
    response = stack.api.post("/v1/uploads", headers=stack.auth(), json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == "bytes"


def test_cancelled_upload_takes_no_more_parts(stack: Stack) -> None:
    upload = create(stack, 10, purpose="user_data")
    add_part(stack, upload["id"], b"01234")
    cancelled = stack.api.post(f"/v1/uploads/{upload['id']}/cancel", headers=stack.auth()).json()
    assert cancelled["status"] == "cancelled"
    response = add_part(stack, upload["id"], b"56789")
    assert response.status_code == 400 and response.json()["error"]["code"] == "upload_not_pending"
    assert stack.api.post(f"/v1/uploads/{upload['id']}/cancel", headers=stack.auth()).status_code == 400


def test_upload_past_its_hour_is_expired(stack: Stack) -> None:
    upload = create(stack, 10, purpose="user_data")
    boto3.client("dynamodb").update_item(
        TableName=stack.rt.settings.table_name,
        Key={"pk": {"S": f"UPLOAD#{upload['id']}"}, "sk": {"S": "UPLOAD"}},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": "1"}},
    )
    response = add_part(stack, upload["id"], b"0123456789")
    assert response.status_code == 400 and "expired" in response.json()["error"]["message"]


def test_content_streams_up_to_the_limit_then_redirects_to_a_presigned_url(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHGW_MAX_RESPONSE_BYTES", "1000")
    reset_runtime()
    small, large = b"s" * 1000, b"l" * 1001
    ids = []
    for content in (small, large):
        response = stack.api.post(
            "/v1/files", headers=stack.auth(), data={"purpose": "user_data"}, files={"file": ("f.bin", content)}
        )
        ids.append(response.json()["id"])
    inline = stack.api.get(f"/v1/files/{ids[0]}/content", headers=stack.auth())
    assert inline.status_code == 200 and inline.content == small
    redirect = stack.api.get(f"/v1/files/{ids[1]}/content", headers=stack.auth(), follow_redirects=False)
    assert redirect.status_code == 307
    location = urlparse(redirect.headers["location"])
    query = parse_qs(location.query)
    assert location.path.endswith(f"/files/{ids[1]}") and query["X-Amz-Expires"] == ["300"]
    assert "f.bin" in query["response-content-disposition"][0]


def test_a_redirected_download_keeps_any_file_name_in_a_header_s3_can_send(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a header is Latin-1: S3 (moto's too) cannot send a raw 日本語 one, so the SDK's download hung on the
    # redirect; RFC 6266 names the file twice, in ASCII and in UTF-8 (RFC 5987), and clients read the latter
    monkeypatch.setenv("BATCHGW_MAX_RESPONSE_BYTES", "10")
    reset_runtime()
    name = "日本語 réponse.jsonl"
    response = stack.api.post(
        "/v1/files", headers=stack.auth(), data={"purpose": "user_data"}, files={"file": (name, b"x" * 11)}
    )
    file_id = response.json()["id"]
    redirect = stack.api.get(f"/v1/files/{file_id}/content", headers=stack.auth(), follow_redirects=False)
    assert redirect.status_code == 307
    disposition = parse_qs(urlparse(redirect.headers["location"]).query)["response-content-disposition"][0]
    assert disposition.isascii()
    ascii_name, utf8_name = disposition.removeprefix("attachment; ").split("; ")
    assert ascii_name == 'filename="___ r_ponse.jsonl"'
    assert unquote(utf8_name.removeprefix("filename*=UTF-8''")) == response.json()["filename"] == name
