"""Tenancy: model allowlists, budgets, list cursors that stay in their owner's lane, and logs free of secrets."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest

from batchgw import template
from batchgw.devstack import import_handler
from shared.pricing import max_cost
from shared.storage.dynamo import money
from tests.integration.conftest import MASTER_KEY, Stack, batch_lines
from tests.integration.test_authorization import batch_of, file_of, new_key


def create_batch(stack: Stack, key: str, file_id: str) -> Any:
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    return stack.api.post("/v1/batches", headers=stack.auth(key), json=body)


def test_key_limited_to_one_model_is_refused_another_with_403(stack: Stack) -> None:
    key = new_key(stack, name="mini-only", models=["gpt-4o-mini"])["key"]
    assert create_batch(stack, key, file_of(stack, key)).status_code == 200
    other = file_of(stack, key, batch_lines(2, model="mock-slow"))
    response = create_batch(stack, key, other)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "model_not_allowed" and "mock-slow" in error["message"]
    assert error["type"] == "permission_error"


def bounded_lines(n: int, max_tokens: int = 100) -> bytes:
    """`n` chat requests on the mock's gpt-4o-mini, each capped at `max_tokens` output tokens."""
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"b-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        for i in range(n)
    )


def maximum_of(stack: Stack, file_id: str) -> Decimal:
    """What the budget holds for a batch of this file: its bounds at the mock's batch prices."""
    file = stack.rt.file_store.get(file_id)
    assert file is not None and file.batch_input is not None
    (deployment,) = stack.rt.routing.deployments_for("gpt-4o-mini")
    return money(max_cost(deployment, file.batch_input.models["gpt-4o-mini"]))


def test_budget_holds_each_batchs_maximum_and_books_the_real_cost_at_the_end(stack: Stack) -> None:
    # Given a key whose budget holds one batch's maximum and a half
    probe = file_of(stack, MASTER_KEY, bounded_lines(2))
    maximum = maximum_of(stack, probe)
    created = new_key(stack, name="tight", max_budget=float(maximum * 3 / 2))
    key = created["key"]

    # When it creates a first batch, the maximum is held against the budget
    first = create_batch(stack, key, file_of(stack, key, bounded_lines(2)))
    assert first.status_code == 200
    held = stack.api.get(f"/admin/keys/{created['id']}", headers=stack.auth()).json()
    assert held["reserved"] == pytest.approx(float(maximum)) and held["spend"] == 0

    # Then a second one whose maximum does not fit in what is left is refused, saying both to the picodollar
    # that budgets count in (a budget of less than a cent read "$0.00", and amounts a picodollar apart the same)
    refused = create_batch(stack, key, file_of(stack, key, bounded_lines(2)))
    assert refused.status_code == 400
    error = refused.json()["error"]
    budget = Decimal(str(created["max_budget"]))
    assert error["code"] == "budget_exceeded" and f"up to ${maximum.normalize():f} " in error["message"]
    assert f"${(budget - maximum).normalize():f} left of its ${budget.normalize():f} budget" in error["message"]

    # And once the first is finished, its real cost is booked and its reservation released, once
    batch_id = first.json()["id"]
    stack.run_until(
        lambda: stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth(key)).json()["status"] == "completed"
    )
    done = stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth(key)).json()
    booked = stack.api.get(f"/admin/keys/{created['id']}", headers=stack.auth()).json()
    assert booked["reserved"] == 0 and booked["spend"] == pytest.approx(done["cost"]["value"])
    assert 0 < booked["spend"] < float(maximum)
    # so a batch that fits in the rest is admitted again
    assert create_batch(stack, key, file_of(stack, key, bounded_lines(2))).status_code == 200


def test_a_budget_holds_against_images_whose_bytes_are_few(stack: Stack) -> None:
    # Given a key with a budget of a hundredth of a cent, and a one-line file of ten images by URL: about 1 KB
    # of bytes, far more in tokens (at gpt-4o-mini's rates, 2,833 + 5,667 a tile each at high detail)
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}}
    body = {"model": "gpt-4o-mini", "max_tokens": 1, "messages": [{"role": "user", "content": [image] * 10}]}
    line = orjson.dumps({"custom_id": "i", "method": "POST", "url": "/v1/chat/completions", "body": body})
    created = new_key(stack, name="images", max_budget=0.0001)
    file_id = file_of(stack, created["key"], line)

    # Then the estimate's maximum is above its own estimate of the prompt (it was below: $0.000076 against
    # $0.00057, the bytes taken as the tokens), and the batch does not fit
    estimate = stack.api.post(
        "/v1/batches/estimate",
        headers=stack.auth(created["key"]),
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
    ).json()
    assert estimate["cost"]["max"] > estimate["cost"]["input"] > 0
    assert estimate["budget"]["fits"] is False
    refused = create_batch(stack, created["key"], file_id)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "budget_exceeded"
    shown = stack.api.get(f"/admin/keys/{created['id']}", headers=stack.auth()).json()
    assert shown["reserved"] == 0


def test_output_limits_no_model_answers_are_a_400_not_a_fault(stack: Stack) -> None:
    # Given a tenant's line asking for 2**63 - 1 answers of 2**63 - 1 tokens each, the largest JSON integers
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 2**63 - 1,
        "n": 2**63 - 1,
        "messages": [{"role": "user", "content": "hi"}],
    }
    line = orjson.dumps({"custom_id": "huge", "method": "POST", "url": "/v1/chat/completions", "body": body})
    created = new_key(stack, name="huge")
    file_id = file_of(stack, created["key"], line)

    # Then its estimate and its create are refused in OpenAI's shape, saying what to lower (they were 500s),
    # and nothing is held
    estimate = stack.api.post(
        "/v1/batches/estimate",
        headers=stack.auth(created["key"]),
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"},
    )
    refused = create_batch(stack, created["key"], file_id)
    for answer in (estimate, refused):
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["code"] == "max_cost_too_large" and error["param"] == "input_file_id"
        assert "max_tokens" in error["message"] and "times n" in error["message"], error
    assert stack.api.get(f"/admin/keys/{created['id']}", headers=stack.auth()).json()["reserved"] == 0


@pytest.mark.parametrize(
    ("models", "rule"),
    [
        ([f"model-{i:05d}-" + "m" * 200 for i in range(5_000)], "too_many_models"),  # what the file learns outgrew
        (["m" * 500_000], "invalid_model"),  # one model whose name outgrew the item that describes the file
    ],
    ids=["5000-models", "a-500-kb-model-name"],
)
def test_a_file_naming_more_models_than_a_batch_can_run_is_a_400_naming_the_line(
    stack: Stack, models: list[str], rule: str
) -> None:
    # Given a tenant's file whose lines name models no batch can run: more than 20, or one with a name of
    # 500 KB (the file's record outgrew a table item, and the upload was a 500)
    content = b"".join(
        orjson.dumps(
            {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": {"model": model}},
            option=orjson.OPT_APPEND_NEWLINE,
        )
        for i, model in enumerate(models)
    )

    # When it is uploaded, then it is refused in OpenAI's shape, naming the first line past the rule
    refused = stack.api.post(
        "/v1/files", headers=stack.auth(), data={"purpose": "batch"}, files={"file": ("f.jsonl", content)}
    )
    assert refused.status_code == 400, refused.text[:500]
    error = refused.json()["error"]
    assert error["code"] == rule and ("line 21" if len(models) > 1 else "line 1") in error["message"], error


@pytest.mark.parametrize("off", ["-0.4e-12", "0.4e-12"])
def test_a_budget_given_finer_than_a_picodollar_admits_what_it_shows(stack: Stack, off: str) -> None:
    # Given a budget of two batches' maxima, give or take a fraction of the picodollar that budgets count in
    # (as `3 * reserved` in floating point gives): the key shows it rounded to what it holds
    maximum = maximum_of(stack, file_of(stack, MASTER_KEY, bounded_lines(2)))
    created = new_key(stack, name="fine", max_budget=float(2 * maximum + Decimal(off)))
    key = created["key"]
    assert created["max_budget"] == float(2 * maximum)

    # Then both are admitted, one after the other (the create's first look at the budget counted the
    # fraction that the admitting write does not, and refused the second), and a third is refused
    for _ in range(2):
        assert create_batch(stack, key, file_of(stack, key, bounded_lines(2))).status_code == 200
    refused = create_batch(stack, key, file_of(stack, key, bounded_lines(2)))
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "budget_exceeded"


def test_a_key_without_a_budget_holds_reservations_too(stack: Stack) -> None:
    created = new_key(stack, name="open")
    response = create_batch(stack, created["key"], file_of(stack, created["key"], bounded_lines(3)))
    assert response.status_code == 200
    shown = stack.api.get(f"/admin/keys/{created['id']}", headers=stack.auth()).json()
    assert shown["reserved"] > 0 and shown["max_budget"] is None


def test_list_cursors_never_reach_another_keys_objects(stack: Stack) -> None:
    key_a, key_b = new_key(stack, name="a")["key"], new_key(stack, name="b")["key"]
    a_batches = [batch_of(stack, key_a) for _ in range(3)]
    b_batches = [batch_of(stack, key_b) for _ in range(2)]
    a_files = stack.api.get("/v1/files", headers=stack.auth(key_a)).json()["data"]

    for cursor in (a_batches[0], a_batches[-1]):
        page = stack.api.get("/v1/batches", headers=stack.auth(key_b), params={"after": cursor}).json()
        assert {b["id"] for b in page["data"]} <= set(b_batches)
    for file in a_files:
        page = stack.api.get("/v1/files", headers=stack.auth(key_b), params={"after": file["id"]}).json()
        assert not {f["id"] for f in page["data"]} & {f["id"] for f in a_files}
    everything = stack.api.get("/v1/batches", headers=stack.auth(key_b), params={"limit": 100}).json()
    assert {b["id"] for b in everything["data"]} == set(b_batches)
    # the master key sees every key's batches
    master = stack.api.get("/v1/batches", headers=stack.auth(), params={"limit": 100}).json()
    assert set(a_batches) | set(b_batches) <= {b["id"] for b in master["data"]}


def test_provider_ids_are_not_accepted_in_place_of_ours(stack: Stack) -> None:
    key_a = new_key(stack, name="a")["key"]
    batch_id = create_batch(stack, key_a, file_of(stack, key_a, batch_lines(2, model="upstream-gpt-4o-mini"))).json()
    stack.deliver("SubmitterFunction")
    record = stack.rt.batch_store.get(batch_id["id"])
    assert record is not None
    provider_id = record.provider_refs["batch_id"]
    for path in (f"/v1/batches/{provider_id}", f"/v1/files/{record.provider_refs['input_file_id']}"):
        assert stack.api.get(path, headers=stack.auth(key_a)).status_code == 404
    assert provider_id not in str(stack.api.get(f"/v1/batches/{batch_id['id']}", headers=stack.auth(key_a)).json())


def test_revoked_key_is_refused_on_the_next_request(stack: Stack) -> None:
    created = new_key(stack, name="short-lived")
    assert stack.api.get("/v1/batches", headers=stack.auth(created["key"])).status_code == 200
    assert stack.api.delete(f"/admin/keys/{created['id']}", headers=stack.auth()).status_code == 200
    assert stack.api.get("/v1/batches", headers=stack.auth(created["key"])).status_code == 401
    listed = stack.api.get("/admin/keys", headers=stack.auth()).json()["data"]
    assert [k["revoked"] for k in listed if k["id"] == created["id"]] == [True]
    assert all("key" not in k for k in listed)


def test_keys_are_stored_only_as_hashes(stack: Stack) -> None:
    import boto3

    created = new_key(stack, name="hashed")
    items = boto3.client("dynamodb").scan(TableName=stack.rt.settings.table_name)["Items"]
    assert created["key"] not in str(items)


class Everything(logging.Handler):
    """Keeps every record as the functions print it (Powertools JSON, correlation id and extras included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{self.format(record)} {record.__dict__}")


@pytest.fixture
def all_logs() -> Iterator[Everything]:
    """Every log record of batchgw's loggers (Powertools stops some from propagating to the root)."""
    for function in template.functions():  # the handlers create their Powertools loggers at import
        import_handler(function.handler)
    handler = Everything()
    handler.setFormatter(logging.getLogger("batchgw").handlers[0].formatter)
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("shared", "functions", "batchgw")]
    loggers = [logging.getLogger(n) for n in names] + [logging.getLogger()]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_logs_hold_no_keys_auth_headers_or_file_contents(stack: Stack, all_logs: Everything) -> None:
    secret_content = "TOP-SECRET-PROMPT-CONTENT"
    created = new_key(stack, name="logged")
    key = created["key"]
    content = batch_lines(2, model="upstream-gpt-4o-mini").replace(b"question", secret_content.encode())
    batch_id = create_batch(stack, key, file_of(stack, key, content)).json()["id"]
    stack.api.get("/v1/batches", headers={"Authorization": "Bearer sk-wrong-key-in-logs"})

    def done() -> bool:
        return bool(stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth(key)).json()["status"] == "completed")

    stack.run_until(done)
    logged = "\n".join(all_logs.records)
    assert "batch completed" in logged and batch_id in logged  # the handlers did log, with the batch id
    for secret in (key, MASTER_KEY, "sk-wrong-key-in-logs", "sk-fake-upstream", secret_content, "Bearer"):
        assert secret not in logged
