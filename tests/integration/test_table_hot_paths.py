"""The table's reads and writes on the hot paths (moto, the table from the template): a listing index holds
keys and what a listing filters on, so the writes that happen often (a batch's progress, a key's spend)
cost nothing in it, and a page is one query of keys and one read of its items, in order; a virtual key's
check is one read."""

from __future__ import annotations

import threading
from typing import Any

import boto3
import orjson
import pytest

from bench.metering import DynamoUnits, indexes
from shared.auth import authenticate, hash_key
from shared.errors import AuthenticationFailed, StaleState, StorageError
from shared.records import Counts
from shared.storage.dynamo import Dynamo, key
from tests.integration.conftest import EVENTS, Stack, batch_lines, started


def test_a_batchs_progress_costs_a_write_in_the_work_index_alone(stack: Stack) -> None:
    # with the listings projecting every attribute, each progress write the poller made cost 4 WRU, not 2
    batch_id = started(stack, batch_lines(2))
    stack.deliver("SubmitterFunction")
    table = stack.rt.settings.table_name
    client = boto3.client("dynamodb")

    def item() -> dict[str, Any]:
        return client.get_item(TableName=table, Key=key(f"BATCH#{batch_id}", "BATCH"))["Item"]

    before = item()
    record = stack.rt.batch_store.get(batch_id)
    assert record is not None
    stack.rt.batch_store.record_counts(record, Counts(total=2, completed=1, failed=0), now=record.updated_at + 60)
    after = item()
    _, table_indexes = indexes(table)
    assert len(table_indexes) == 3
    assert sum(index.write_units(before, after) for index in table_indexes) == 1


def test_a_batchs_progress_is_written_only_forwards(stack: Stack) -> None:
    batch_id = started(stack, batch_lines(4))
    stack.deliver("SubmitterFunction")
    store = stack.rt.batch_store
    seen = store.get(batch_id)
    assert seen is not None
    store.record_counts(seen, Counts(total=4, completed=2, failed=1), now=seen.updated_at + 60)
    for older in (Counts(total=4, completed=1, failed=1), Counts(total=4, completed=3, failed=0)):
        with pytest.raises(StaleState):  # a stale poller's answer: nothing written
            store.record_counts(seen, older, now=seen.updated_at + 61)
    store.record_counts(seen, Counts(total=4, completed=2, failed=2), now=seen.updated_at + 62)
    after = store.get(batch_id)
    assert after is not None and after.request_counts == Counts(total=4, completed=2, failed=2)


def test_a_page_reads_its_items_in_order_past_one_batch_get(stack: Stack) -> None:
    table = stack.rt.settings.table_name
    client = boto3.client("dynamodb")
    keys = [key(f"TEST#{n:04d}", "TEST") for n in range(250)]
    for n, k in enumerate(keys):
        if n != 7:  # one asked for and absent: left out
            client.put_item(TableName=table, Item={**k, "n": {"N": str(n)}})
    got = Dynamo(client, table).get_many(list(reversed(keys)))
    assert [int(i["n"]["N"]) for i in got] == [n for n in reversed(range(250)) if n != 7]


class _Throttled:
    """A client whose BatchGetItem leaves every key but the first unprocessed, `times` times."""

    def __init__(self, times: int) -> None:
        self.times, self.calls = times, 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        ((table, asked),) = RequestItems.items()
        wanted = asked["Keys"]
        if self.times:
            self.times -= 1
            done, left = wanted[:1], wanted[1:]
        else:
            done, left = wanted, []
        answer: dict[str, Any] = {"Responses": {table: [dict(k) for k in done]}}
        if left:
            answer["UnprocessedKeys"] = {table: {"Keys": left}}
        return answer


def test_keys_left_unprocessed_are_asked_again_and_a_page_never_comes_back_short() -> None:
    keys = [key(f"K#{n}", "K") for n in range(5)]
    client = _Throttled(times=2)
    assert Dynamo(client, "t").get_many(keys) == keys  # type: ignore[arg-type]
    assert client.calls == 3
    with pytest.raises(StorageError, match="left unread"):  # throttled throughout: an error, not a short page
        Dynamo(_Throttled(times=99), "t").get_many(keys * 2)  # type: ignore[arg-type]


def test_a_virtual_keys_check_is_one_read_and_a_revoked_key_fails_at_once(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the check read the hash pointer, then the key item: two of the three reads of every GET by a key
    created = stack.api.post("/admin/keys", headers=stack.auth(), json={"name": "k", "models": ["gpt-4o-mini"]})
    secret, key_id = created.json()["key"], created.json()["id"]
    reads = []
    real_get = Dynamo.get

    def get(self: Dynamo, item_key: Any) -> Any:
        reads.append(item_key["pk"]["S"])
        return real_get(self, item_key)

    monkeypatch.setattr(Dynamo, "get", get)
    principal = authenticate(secret, master_key="not-this", keys=stack.rt.key_store)
    assert (principal.owner, principal.models) == (key_id, ("gpt-4o-mini",))
    assert len(reads) == 1 and reads[0].startswith("KEYHASH#")
    assert stack.api.delete(f"/admin/keys/{key_id}", headers=stack.auth()).status_code == 200
    with pytest.raises(AuthenticationFailed):
        authenticate(secret, master_key="not-this", keys=stack.rt.key_store)


def _counted_dynamodb_calls(stack: Stack) -> list[str]:
    """The DynamoDB operations the runtime's client is asked for from now on, in order."""
    calls: list[str] = []
    events = stack.rt.batch_store._db.client.meta.events
    events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
    return calls


def _two_keys_and_a_file(stack: Stack, content: bytes) -> tuple[str, str, str, str]:
    """A key (its secret and id), another key's secret, and a batch input file of the first."""
    created = stack.api.post("/admin/keys", headers=stack.auth(), json={"name": "k"}).json()
    secret, key_id = created["key"], created["id"]
    file_id = stack.api.post(
        "/v1/files", headers=stack.auth(secret), data={"purpose": "batch"}, files={"file": ("in.jsonl", content)}
    ).json()["id"]
    other = stack.api.post("/admin/keys", headers=stack.auth(), json={"name": "other"}).json()["key"]
    return secret, key_id, other, file_id


def test_a_batch_retrieved_with_a_virtual_key_is_one_request_to_the_table(stack: Stack) -> None:
    # every poll of a batch by a key read the key's pointer, then the batch: two requests to DynamoDB in
    # turn, the most frequent call of the API paying two round trips and twice botocore's CPU
    secret, key_id, other, file_id = _two_keys_and_a_file(stack, batch_lines(2))
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch_id = stack.api.post("/v1/batches", headers=stack.auth(secret), json=body).json()["id"]
    calls = _counted_dynamodb_calls(stack)

    mine = stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth(secret))
    assert mine.status_code == 200 and mine.json()["id"] == batch_id
    assert calls == ["BatchGetItem"]
    calls.clear()
    assert stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth()).status_code == 200  # the master key
    assert calls == ["GetItem"]
    # read along with the key or not, someone else's batch is missing, and a bad key is a 401 before all
    theirs = stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth(other))
    assert (theirs.status_code, theirs.json()["error"]["code"]) == (404, None), theirs.text
    unknown = stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth("sk-" + "x" * 48))
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (401, "invalid_api_key")
    missing = stack.api.get("/v1/batches/batch_" + "0" * 24, headers=stack.auth(secret))
    assert missing.status_code == 404
    assert stack.api.delete(f"/admin/keys/{key_id}", headers=stack.auth()).status_code == 200
    revoked = stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth(secret))
    assert (revoked.status_code, revoked.json()["error"]["code"]) == (401, "invalid_api_key")


def test_a_file_and_its_content_retrieved_with_a_virtual_key_are_one_request_to_the_table_each(stack: Stack) -> None:
    # as for a batch: the key's pointer, then the file, were two requests in turn
    content = batch_lines(2)
    secret, key_id, other, file_id = _two_keys_and_a_file(stack, content)
    calls = _counted_dynamodb_calls(stack)

    mine = stack.api.get(f"/v1/files/{file_id}", headers=stack.auth(secret))
    assert mine.status_code == 200 and mine.json()["id"] == file_id
    assert calls == ["BatchGetItem"]
    calls.clear()
    download = stack.api.get(f"/v1/files/{file_id}/content", headers=stack.auth(secret))
    assert download.status_code == 200 and download.content == content
    assert calls == ["BatchGetItem"]
    calls.clear()
    assert stack.api.get(f"/v1/files/{file_id}", headers=stack.auth()).status_code == 200  # the master key
    assert calls == ["GetItem"]
    for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content"):
        theirs = stack.api.get(path, headers=stack.auth(other))
        assert theirs.status_code == 404, theirs.text
        unknown = stack.api.get(path, headers=stack.auth("sk-" + "x" * 48))
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (401, "invalid_api_key")
    assert stack.api.delete(f"/admin/keys/{key_id}", headers=stack.auth()).status_code == 200
    for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content"):
        revoked = stack.api.get(path, headers=stack.auth(secret))
        assert (revoked.status_code, revoked.json()["error"]["code"]) == (401, "invalid_api_key")


def test_items_read_ahead_are_answered_once_in_the_thread_that_asked(stack: Stack) -> None:
    table, client = stack.rt.settings.table_name, boto3.client("dynamodb")
    first, second, absent = (key(f"TEST#{name}", "TEST") for name in ("first", "second", "absent"))
    for n, item_key in enumerate((first, second)):
        client.put_item(TableName=table, Item={**item_key, "n": {"N": str(n)}})
    db, calls = Dynamo(client, table), []
    client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
    seen_elsewhere: list[Any] = []
    with db.reading_ahead(second, absent, first):
        assert db.get(first) == {**first, "n": {"N": "0"}}
        assert calls == ["BatchGetItem"]  # the three in one request
        worker = threading.Thread(target=lambda: seen_elsewhere.append(db.get(second)))
        worker.start()
        worker.join()
        assert calls == ["BatchGetItem", "GetItem"]  # another thread reads for itself
        assert db.get(second) == {**second, "n": {"N": "1"}} and db.get(absent) is None
        assert db.get(second, only="n") == {"n": {"N": "1"}}
        assert db.get(second) is not None  # once answered, read again
        assert calls == ["BatchGetItem", "GetItem", "GetItem", "GetItem"]
        with pytest.raises(RuntimeError), db.reading_ahead(first):
            pass
    assert seen_elsewhere == [{**second, "n": {"N": "1"}}]
    with db.reading_ahead(first):  # only the item asked for: an ordinary read
        assert db.get(first) is not None and db.get(second) is not None
    assert calls[4:] == ["GetItem", "GetItem"]


def test_the_cost_model_bills_a_batch_get_as_the_reads_it_stands_for(stack: Stack) -> None:
    # the benchmarks' meter priced BatchGetItem at nothing (a listing's page, a read along with a key's check)
    table, client = stack.rt.settings.table_name, boto3.client("dynamodb")
    small, large, absent, unread = (key(f"TEST#{name}", "TEST") for name in ("small", "large", "absent", "unread"))
    client.put_item(TableName=table, Item={**small, "v": {"S": "x"}})
    client.put_item(TableName=table, Item={**large, "v": {"S": "x" * 5000}})  # two 4 KB units
    asked = [small, large, absent, unread]
    params = {"RequestItems": {table: {"Keys": asked, "ConsistentRead": True}}}
    parsed = client.batch_get_item(RequestItems={table: {"Keys": asked[:3], "ConsistentRead": True}})
    parsed["UnprocessedKeys"] = {table: {"Keys": [unread]}}  # left for the next call: not read, not billed
    units = DynamoUnits(table)
    assert units.units("BatchGetItem", params, parsed, []) == (1.0 + 2.0 + 1.0, 0.0)
    eventually = {"RequestItems": {table: {"Keys": asked}}}  # half a unit per 4 KB
    assert units.units("BatchGetItem", eventually, parsed, [])[0] == 0.5 + 1.0 + 0.5
    assert not units.unpriced


def test_a_key_whose_pointer_was_written_by_an_earlier_release_still_authenticates(stack: Stack) -> None:
    created = stack.api.post("/admin/keys", headers=stack.auth(), json={"name": "old"}).json()
    table, client = stack.rt.settings.table_name, boto3.client("dynamodb")
    pointer = key(f"KEYHASH#{hash_key(created['key'])}", "KEYHASH")
    client.put_item(TableName=table, Item={**pointer, "key_id": {"S": created["id"]}})  # as pointers were
    assert authenticate(created["key"], master_key="not-this", keys=stack.rt.key_store).owner == created["id"]
    client.update_item(
        TableName=table,
        Key=key(f"KEY#{created['id']}", "KEY"),
        UpdateExpression="SET revoked = :t",
        ExpressionAttributeValues={":t": {"BOOL": True}},
    )
    with pytest.raises(AuthenticationFailed):
        authenticate(created["key"], master_key="not-this", keys=stack.rt.key_store)


def test_metrics_that_are_off_do_not_pile_up_across_invocations(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # with metrics off (the local stack, the tests) nothing flushed them, and the functions share one metric set
    # in a process: they piled up across invocations until Powertools printed them all (off or not) and emptied
    # them at a metric's 100th value, in the middle of an invocation
    event = orjson.loads((EVENTS / "batch_created.json").read_bytes())
    stack.invoke("SubmitterFunction", event)  # its cold start's own metric is printed whatever the setting
    capsys.readouterr()
    for _ in range(101):
        stack.invoke("SubmitterFunction", event)
    assert "CloudWatchMetrics" not in capsys.readouterr().out
