"""The batches routes over HTTP (ASGI, in-process) against moto: every create check, list, retrieve, cancel."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.integration.conftest import Stack, batch_lines


def upload(stack: Stack, content: bytes, purpose: str = "batch") -> str:
    response = stack.api.post(
        "/v1/files", headers=stack.auth(), data={"purpose": purpose}, files={"file": ("in.jsonl", content)}
    )
    assert response.status_code == 200, response.text
    file_id: str = response.json()["id"]
    return file_id


def create(stack: Stack, file_id: str, **overrides: Any) -> Any:
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **overrides}
    return stack.api.post("/v1/batches", headers=stack.auth(), json=body)


def test_create_batch_answers_validating_with_every_openai_field_and_emits_event(stack: Stack) -> None:
    file_id = upload(stack, batch_lines(3))
    response = create(stack, file_id, metadata={"team": "search"})
    assert response.status_code == 200, response.text
    body = response.json()
    batch = openai.types.Batch.model_validate(body)
    assert batch.status == "validating" and batch.input_file_id == file_id and batch.model == "gpt-4o-mini"
    assert batch.request_counts is not None and batch.request_counts.total == 3
    assert batch.expires_at == batch.created_at + 24 * 3600 and batch.metadata == {"team": "search"}
    assert set(openai.types.Batch.model_fields) <= set(body) and body["cost"] is None
    events = stack.pending("SubmitterFunction")
    assert [e["detail"]["batch_id"] for e in events] == [batch.id]
    assert events[0]["detail-type"] == "Batch Created" and events[0]["source"] == "batchgw"


def test_create_batch_accepts_endpoint_and_urls_without_v1(stack: Stack) -> None:
    file_id = upload(stack, batch_lines(2, url="/chat/completions"))
    response = create(stack, file_id, endpoint="/chat/completions")
    assert response.status_code == 200 and response.json()["endpoint"] == "/v1/chat/completions"


@pytest.mark.parametrize(
    ("content", "overrides", "code"),
    [
        (batch_lines(2), {"endpoint": "/v1/embeddings"}, "url_mismatch"),
        (batch_lines(2), {"endpoint": "/v1/images/generations"}, "invalid_endpoint"),
        (batch_lines(2, model="gpt-unknown"), {}, "model_not_found"),
        (batch_lines(2), {"completion_window": "48h"}, "invalid_value"),
    ],
)
def test_create_batch_refuses_bad_requests_with_400(
    stack: Stack, content: bytes, overrides: dict[str, Any], code: str
) -> None:
    response = create(stack, upload(stack, content), **overrides)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    assert stack.pending("SubmitterFunction") == []


@pytest.mark.parametrize(
    ("metadata", "said"),
    [
        ({f"k{i}": "v" for i in range(17)}, "at most 16 key-value pairs, not 17"),
        ({"k": "v" * 513}, "values must be at most 512 characters; the value of 'k' has 513"),
        ({"k" * 65: "v"}, "keys must be 1 to 64 characters; 'kkkk"),
        ({"": "v"}, "keys must be 1 to 64 characters; '' has 0"),
        ({"k": 1}, "values must be strings; the value of 'k' is 1"),
        ([["k", "v"]], "must be an object"),
    ],
)
def test_bad_metadata_is_400_naming_metadata_as_openai_does(stack: Stack, metadata: Any, said: str) -> None:
    response = create(stack, upload(stack, batch_lines(1)), metadata=metadata)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    # one parameter, `metadata`, never a path into it ("metadata.kkk….[key]") or the validator's wording
    assert error["param"] == "metadata" and error["code"] == "invalid_value"
    assert said in error["message"] and "Value error" not in error["message"], error["message"]
    assert stack.pending("SubmitterFunction") == []


@pytest.mark.parametrize("path", ["/v1/batches", "/v1/batches/estimate", "/admin/keys"])
@pytest.mark.parametrize("body", [b'{"input_file_id":', b"{,}", b"[1, 2"])
def test_a_body_that_is_not_json_is_400_naming_no_parameter(stack: Stack, path: str, body: bytes) -> None:
    headers = {**stack.auth(), "content-type": "application/json"}
    response = stack.api.post(path, headers=headers, content=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    # not "Invalid value for '17'": the position of the parse error is no parameter
    assert error["param"] is None and error["type"] == "invalid_request_error"
    assert error["message"].startswith("We could not parse the JSON body of your request"), error["message"]


def test_create_batch_from_a_non_batch_file_is_400(stack: Stack) -> None:
    response = create(stack, upload(stack, b"plain text", purpose="user_data"))
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_input_file"


def test_create_batch_from_unknown_file_is_404(stack: Stack) -> None:
    response = create(stack, "file-00000000000000000000000000aa")
    assert response.status_code == 404 and response.json()["error"]["param"] == "input_file_id"


def test_retrieve_unknown_batch_is_404(stack: Stack) -> None:
    for batch_id in ("batch_00000000000000000000000000ff", "not-an-id"):
        response = stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth())
        assert response.status_code == 404 and response.json()["error"]["type"] == "invalid_request_error"


def test_list_batches_newest_first_with_cursor_and_exact_has_more(stack: Stack) -> None:
    file_id = upload(stack, batch_lines(1))
    ids = [create(stack, file_id).json()["id"] for _ in range(5)]
    first = stack.api.get("/v1/batches", headers=stack.auth(), params={"limit": 2}).json()
    assert [b["id"] for b in first["data"]] == [ids[4], ids[3]] and first["has_more"] is True
    last = stack.api.get("/v1/batches", headers=stack.auth(), params={"limit": 3, "after": ids[3]}).json()
    assert [b["id"] for b in last["data"]] == [ids[2], ids[1], ids[0]] and last["has_more"] is False
    everything = stack.api.get("/v1/batches", headers=stack.auth()).json()
    assert len(everything["data"]) == 5 and everything["has_more"] is False


@pytest.mark.parametrize("limit", [0, 101])
def test_list_batches_limit_out_of_range_is_400(stack: Stack, limit: int) -> None:
    assert stack.api.get("/v1/batches", headers=stack.auth(), params={"limit": limit}).status_code == 400


def test_cancel_validating_batch_moves_it_to_cancelling_then_cancelled(stack: Stack) -> None:
    batch_id = create(stack, upload(stack, batch_lines(2))).json()["id"]
    response = stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth())
    assert response.status_code == 200 and response.json()["status"] == "cancelling"
    assert response.json()["cancelling_at"] is not None
    # a second cancel is harmless
    assert stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth()).json()["status"] == "cancelling"

    def ended() -> bool:
        return bool(stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth()).json()["status"] == "cancelled")

    stack.run_until(ended)
    batch = stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth()).json()
    assert batch["cancelled_at"] is not None and batch["request_counts"] == {"total": 2, "completed": 0, "failed": 2}
    errors = stack.api.get(f"/v1/files/{batch['error_file_id']}/content", headers=stack.auth()).text
    assert errors.count('"batch_cancelled"') == 2
    # the input file is released once the batch is over
    assert stack.api.delete(f"/v1/files/{batch['input_file_id']}", headers=stack.auth()).status_code == 200


def test_cancel_terminal_batch_is_400_not_409(stack: Stack) -> None:
    batch_id = create(stack, upload(stack, batch_lines(1))).json()["id"]
    stack.run_until(
        lambda: stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth()).json()["status"] == "completed"
    )
    response = stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth())
    assert response.status_code == 400 and response.json()["error"]["code"] == "batch_not_cancellable"


def test_an_estimate_takes_the_create_body_and_checks_it_as_create_does(stack: Stack) -> None:
    # users reuse the body they would create the batch with: its create-only fields are checked, not refused
    file_id = upload(stack, batch_lines(2))
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    extras = {"metadata": {"team": "search"}, "output_expires_after": {"anchor": "created_at", "seconds": 3600}}
    response = stack.api.post("/v1/batches/estimate", headers=stack.auth(), json={**body, **extras})
    assert response.status_code == 200, response.text
    assert response.json()["requests"] == 2
    for bad, param in (({"completion_window": "48h"}, "completion_window"), ({"metadata": {"k": 1}}, "metadata")):
        refused = stack.api.post("/v1/batches/estimate", headers=stack.auth(), json={**body, **bad})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, refused.text
    assert stack.api.get("/v1/batches", headers=stack.auth()).json()["data"] == []


def test_a_key_made_without_a_body_has_every_default(stack: Stack) -> None:
    # every field of POST /admin/keys is optional: `curl -X POST .../admin/keys` makes a key, as `{}` does
    response = stack.api.post("/admin/keys", headers=stack.auth())
    assert response.status_code == 200, response.text
    made = response.json()
    assert made["key"].startswith("sk-") and (made["name"], made["models"], made["max_budget"]) == (None, None, None)
