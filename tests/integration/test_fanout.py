"""The poller's fan-out through its real handler and SQS (moto): a scheduled run hands one range of the work
index (one deployment's batches) to each message when the work is large, and each message's invocation
polls its range on its own."""

from __future__ import annotations

import time
from typing import Any

import boto3
import orjson
import pytest

from batchgw.devstack import sqs_event
from shared.errors import StorageError
from shared.storage.batch_store import work_ranges
from shared.storage.ports import EVERYTHING, WorkRange
from shared.storage.queue import work_range
from tests.integration.conftest import TERMINAL, Stack, batch, batch_lines, started


def handed_out(stack: Stack) -> list[Any]:
    """The range messages waiting on the poller's queue, taken off it."""
    sqs = boto3.client("sqs")
    url = stack.queues["PollerFunction:SQS"]
    taken = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            taken.append(message)
    return taken


def test_large_work_fans_out_one_deployment_per_message_and_every_batch_ends(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.runtime import reset_runtime

    monkeypatch.setenv("BATCHGW_FANOUT_THRESHOLD", "1")
    reset_runtime()
    batch_ids = [started(stack, batch_lines(1, prefix=f"b{i}")) for i in range(12)]
    stack.deliver("SubmitterFunction")
    # one as an earlier release wrote it: sorted by its id alone, not after its deployment
    boto3.client("dynamodb").update_item(
        TableName=stack.rt.settings.table_name,
        Key={"pk": {"S": f"BATCH#{batch_ids[0]}"}, "sk": {"S": "BATCH"}},
        UpdateExpression="SET gsi3sk = :id",
        ExpressionAttributeValues={":id": {"S": batch_ids[0]}},
    )
    ranges = work_ranges(d.key for d in stack.rt.routing.models)

    fanned_out = 0
    for _ in range(30):
        outcomes = stack.poll()
        messages = handed_out(stack)
        if outcomes.get("fanned_out"):
            # more than the threshold left: the scheduled run polls nothing itself, one message per deployment
            fanned_out += 1
            assert outcomes["fanned_out"] == len(ranges) and outcomes.get("ended", 0) == 0
            assert [work_range(m["Body"]) for m in messages] == ranges
        else:
            # the last batch, within the threshold: the scheduled run polled it, handing nothing out
            assert messages == [] and sum(batch(stack, b)["status"] not in TERMINAL for b in batch_ids) <= 1
        for message in messages:
            answer = stack.invoke("PollerFunction", sqs_event(message, stack.queues["PollerFunction:SQS"]))
            assert answer == {"batchItemFailures": []}
        stack.deliver("CompletionFunction")
        if all(batch(stack, b)["status"] in TERMINAL for b in batch_ids):
            break
    assert fanned_out >= 1 and all(batch(stack, b)["status"] == "completed" for b in batch_ids)


def test_a_range_message_that_fails_is_reported_alone_for_a_retry(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.storage.batch_store import DynamoBatchStore

    real = DynamoBatchStore.work

    def work(self: DynamoBatchStore, shard: int, within: WorkRange = EVERYTHING):  # type: ignore[no-untyped-def]
        if within.start == "m":
            raise RuntimeError("a fault in polling this range")
        if shard == 3:
            raise StorageError("throttled")  # a shard that cannot be read now fails no message
        return real(self, shard, within)

    monkeypatch.setattr(DynamoBatchStore, "work", work)
    bodies = {"m1": {"start": None, "stop": "m"}, "m2": {"start": "m", "stop": "t"}, "m3": {"start": "t", "stop": None}}
    event = {
        "Records": [{"messageId": m, "body": orjson.dumps(b).decode(), "receiptHandle": "r"} for m, b in bodies.items()]
    }
    assert stack.invoke("PollerFunction", event) == {"batchItemFailures": [{"itemIdentifier": "m2"}]}


def test_a_range_holding_more_than_one_invocation_polls_is_handed_on_in_work_key_order(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.runtime import reset_runtime
    from shared.storage.batch_store import work_key

    # Given one deployment's 8 running batches, and invocations that each poll at most 3
    monkeypatch.setenv("BATCHGW_FANOUT_THRESHOLD", "1")
    monkeypatch.setenv("BATCHGW_SPLIT_THRESHOLD", "3")
    reset_runtime()
    batch_ids = [started(stack, batch_lines(1, prefix=f"b{i}")) for i in range(8)]
    stack.deliver("SubmitterFunction")
    time.sleep(0.5)  # the mock's runs take gpt-4o-mini's `delay` from submission: every one is over when polled
    (deployment,) = {record.deployment for record in map(stack.rt.batch_store.get, batch_ids) if record}
    ranges = work_ranges(d.key for d in stack.rt.routing.models)
    (theirs,) = [r for r in ranges if r.holds(work_key(deployment, batch_ids[0]))]

    # When the scheduled run hands the work out and each message's invocation runs, the ones it hands on too
    assert stack.poll()["fanned_out"] == len(ranges)
    handed: list[WorkRange] = []
    waiting = handed_out(stack)
    while waiting:
        message = waiting.pop(0)
        handed.append(work_range(message["Body"]))
        answer = stack.invoke("PollerFunction", sqs_event(message, stack.queues["PollerFunction:SQS"]))
        assert answer == {"batchItemFailures": []}
        waiting += handed_out(stack)

    # Then the deployment's range was polled in three invocations, the second and third from the 4th and 7th
    # of its batches in work-key order, each to the end of the range
    ordered = sorted(work_key(deployment, b) for b in batch_ids)
    assert handed[: len(ranges)] == ranges
    assert handed[len(ranges) :] == [WorkRange(ordered[3], theirs.stop), WorkRange(ordered[6], theirs.stop)]
    stack.deliver("CompletionFunction")
    assert all(batch(stack, b)["status"] == "completed" for b in batch_ids)
