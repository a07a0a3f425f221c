"""The authorization matrix: every route x every kind of caller, generated from the route table.

The routes come from the function apps themselves and must equal the HttpApi routes of template.yaml;
every route must have a row here, so a new route cannot ship without its authorization cells.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from batchgw import template
from functions.batches_api.app import app as batches_app
from functions.files_api.app import app as files_app
from tests.integration.conftest import MASTER_KEY, Stack, batch_lines

CALLERS = ("none", "malformed", "revoked", "key_a", "key_b", "master")
UNAUTHENTICATED = {"none": 401, "malformed": 401, "revoked": 401}


@dataclass
class Keys:
    a: str
    b: str
    revoked: str

    def headers(self, caller: str) -> dict[str, str]:
        return {
            "none": {},
            "malformed": {"Authorization": "Token not-a-bearer"},
            "revoked": {"Authorization": f"Bearer {self.revoked}"},
            "key_a": {"Authorization": f"Bearer {self.a}"},
            "key_b": {"Authorization": f"Bearer {self.b}"},
            "master": {"Authorization": f"Bearer {MASTER_KEY}"},
        }[caller]


@dataclass
class Request:
    path: dict[str, str] = field(default_factory=dict)
    json: Any = None
    data: dict[str, str] | None = None
    files: dict[str, Any] | None = None


def new_key(stack: Stack, **body: Any) -> dict[str, Any]:
    response = stack.api.post("/admin/keys", headers=stack.auth(), json=body)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.mark.parametrize("budget", ["10", True, "ten", None])
def test_a_budget_that_is_not_a_number_is_400(stack: Stack, budget: Any) -> None:
    # "10" and true were taken as $10 and $1; null is no budget, as it is left out
    response = stack.api.post("/admin/keys", headers=stack.auth(), json={"name": "b", "max_budget": budget})
    if budget is None:
        assert response.status_code == 200 and response.json()["max_budget"] is None
        return
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "max_budget"


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_budget_that_is_not_a_finite_number_is_400_saying_so(stack: Stack, raw: bytes) -> None:
    # Python's JSON reader takes these; NaN was refused as "less than or equal to 1000000000000"
    headers = {**stack.auth(), "content-type": "application/json"}
    response = stack.api.post("/admin/keys", headers=headers, content=b'{"max_budget": ' + raw + b"}")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "max_budget" and "finite number" in error["message"], error


def test_a_budget_may_be_a_whole_or_a_fractional_number(stack: Stack) -> None:
    assert new_key(stack, max_budget=10)["max_budget"] == 10
    assert new_key(stack, max_budget=2.5)["max_budget"] == 2.5


def file_of(stack: Stack, key: str, content: bytes = b"", purpose: str = "batch") -> str:
    response = stack.api.post(
        "/v1/files",
        headers=stack.auth(key),
        data={"purpose": purpose},
        files={"file": ("f.jsonl", content or batch_lines(2))},
    )
    assert response.status_code == 200, response.text
    file_id: str = response.json()["id"]
    return file_id


def batch_of(stack: Stack, key: str) -> str:
    body = {"input_file_id": file_of(stack, key), "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    response = stack.api.post("/v1/batches", headers=stack.auth(key), json=body)
    assert response.status_code == 200, response.text
    batch_id: str = response.json()["id"]
    return batch_id


def upload_of(stack: Stack, key: str) -> str:
    body = {"bytes": 10, "filename": "f.jsonl", "mime_type": "application/jsonl", "purpose": "batch"}
    response = stack.api.post("/v1/uploads", headers=stack.auth(key), json=body)
    assert response.status_code == 200, response.text
    upload_id: str = response.json()["id"]
    return upload_id


def owned(a: int, b: int = 404, master: int = 200) -> dict[str, int]:
    """Expected statuses for a route on one of key A's objects."""
    return {**UNAUTHENTICATED, "key_a": a, "key_b": b, "master": master}


def open_to_keys(status: int = 200) -> dict[str, int]:
    return {**UNAUTHENTICATED, "key_a": status, "key_b": status, "master": status}


def master_only() -> dict[str, int]:
    return {**UNAUTHENTICATED, "key_a": 403, "key_b": 403, "master": 200}


@dataclass
class Row:
    make: Callable[[Stack, Keys], Request]
    expected: dict[str, int]


MATRIX: dict[tuple[str, str], Row] = {
    ("GET", "/health"): Row(lambda s, k: Request(), dict.fromkeys(CALLERS, 200)),
    ("HEAD", "/health"): Row(lambda s, k: Request(), dict.fromkeys(CALLERS, 200)),
    ("POST", "/v1/files"): Row(
        lambda s, k: Request(data={"purpose": "batch"}, files={"file": ("f.jsonl", batch_lines(1))}), open_to_keys()
    ),
    ("GET", "/v1/files"): Row(lambda s, k: Request(), open_to_keys()),
    ("GET", "/v1/files/{file_id}"): Row(lambda s, k: Request({"file_id": file_of(s, k.a)}), owned(200)),
    ("GET", "/v1/files/{file_id}/content"): Row(lambda s, k: Request({"file_id": file_of(s, k.a)}), owned(200)),
    ("DELETE", "/v1/files/{file_id}"): Row(lambda s, k: Request({"file_id": file_of(s, k.a)}), owned(200)),
    ("POST", "/v1/uploads"): Row(
        lambda s, k: Request(json={"bytes": 5, "filename": "f.jsonl", "mime_type": "text/jsonl", "purpose": "batch"}),
        open_to_keys(),
    ),
    ("POST", "/v1/uploads/{upload_id}/parts"): Row(
        lambda s, k: Request({"upload_id": upload_of(s, k.a)}, files={"data": ("part", b"12345")}), owned(200)
    ),
    ("POST", "/v1/uploads/{upload_id}/complete"): Row(
        # an upload with no parts cannot complete: the owner learns that (400), others learn nothing (404)
        lambda s, k: Request(
            {"upload_id": upload_of(s, k.a)}, json={"part_ids": ["part_00000000000000000000000000ff"]}
        ),
        owned(400, master=400),
    ),
    ("POST", "/v1/uploads/{upload_id}/cancel"): Row(lambda s, k: Request({"upload_id": upload_of(s, k.a)}), owned(200)),
    ("POST", "/v1/batches"): Row(
        # key B names key A's file: to B it does not exist
        lambda s, k: Request(
            json={"input_file_id": file_of(s, k.a), "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        ),
        owned(200),
    ),
    ("POST", "/v1/batches/estimate"): Row(
        # as create: key B names key A's file, which to B does not exist
        lambda s, k: Request(json={"input_file_id": file_of(s, k.a), "endpoint": "/v1/chat/completions"}),
        owned(200),
    ),
    ("GET", "/v1/batches"): Row(lambda s, k: Request(), open_to_keys()),
    ("GET", "/v1/batches/{batch_id}"): Row(lambda s, k: Request({"batch_id": batch_of(s, k.a)}), owned(200)),
    ("POST", "/v1/batches/{batch_id}/cancel"): Row(lambda s, k: Request({"batch_id": batch_of(s, k.a)}), owned(200)),
    ("POST", "/admin/keys"): Row(lambda s, k: Request(json={"name": "x"}), master_only()),
    ("GET", "/admin/keys"): Row(lambda s, k: Request(), master_only()),
    ("GET", "/admin/keys/{key_id}"): Row(lambda s, k: Request({"key_id": new_key(s)["id"]}), master_only()),
    ("DELETE", "/admin/keys/{key_id}"): Row(lambda s, k: Request({"key_id": new_key(s)["id"]}), master_only()),
    ("GET", "/admin/keys/{key_id}/spend"): Row(lambda s, k: Request({"key_id": new_key(s)["id"]}), master_only()),
}


def app_routes() -> set[tuple[str, str]]:
    """Every route the function apps serve, from their OpenAPI documents."""
    return {
        (method.upper(), path)
        for app in (files_app, batches_app)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }


def template_routes() -> set[tuple[str, str]]:
    return {
        (props["Method"].upper(), props["Path"])
        for function in template.functions()
        for _, props in function.events_of("HttpApi")
    }


def test_every_route_is_in_the_template_and_in_the_matrix() -> None:
    assert app_routes() - {("GET", "/health"), ("HEAD", "/health")} <= template_routes() <= app_routes()
    assert set(MATRIX) == template_routes()


@pytest.fixture
def keys(stack: Stack) -> Keys:
    revoked = new_key(stack, name="revoked")
    assert stack.api.delete(f"/admin/keys/{revoked['id']}", headers=stack.auth()).status_code == 200
    return Keys(a=new_key(stack, name="a")["key"], b=new_key(stack, name="b")["key"], revoked=revoked["key"])


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_authorization_matrix(stack: Stack, keys: Keys, route: tuple[str, str]) -> None:
    method, path = route
    row = MATRIX[route]
    seen: dict[str, int] = {}
    for caller in CALLERS:
        request = row.make(stack, keys)
        response = stack.api.request(
            method,
            path.format(**request.path),
            headers=keys.headers(caller),
            json=request.json,
            data=request.data,
            files=request.files,
        )
        seen[caller] = response.status_code
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}
            assert response.headers["x-request-id"].startswith("req_")
    assert seen == row.expected
