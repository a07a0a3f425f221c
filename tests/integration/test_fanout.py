"""The poller's fan-out through its real handler and SQS (moto): a scheduled run hands one shard to each
message when the work is large, and each message's invocation polls its shard on its own."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from batchgw.devstack import sqs_event
from tests.integration.conftest import TERMINAL, Stack, batch, batch_lines, started


def handed_out(stack: Stack) -> list[Any]:
    """The shard messages waiting on the poller's queue, taken off it."""
    sqs = boto3.client("sqs")
    url = stack.queues["PollerFunction:SQS"]
    taken = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            taken.append(message)
    return taken


def test_large_work_fans_out_one_shard_per_message_and_every_batch_ends(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.runtime import reset_runtime

    monkeypatch.setenv("BATCHGW_FANOUT_THRESHOLD", "1")
    reset_runtime()
    batch_ids = [started(stack, batch_lines(1, prefix=f"b{i}")) for i in range(12)]
    stack.deliver("SubmitterFunction")

    fanned_out = 0
    for _ in range(30):
        outcomes = stack.poll()
        messages = handed_out(stack)
        if outcomes.get("fanned_out"):
            # more than the threshold left: the scheduled run polls nothing itself, one message per shard
            fanned_out += 1
            assert outcomes["fanned_out"] == 8 and outcomes.get("ended", 0) == 0
            assert sorted(int(m["Body"].split(":")[1].strip(" }")) for m in messages) == list(range(8))
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


def test_a_shard_message_that_fails_is_reported_alone_for_a_retry(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.storage.batch_store import DynamoBatchStore
    from shared.storage.dynamo import StorageError

    real = DynamoBatchStore.work

    def work(self: DynamoBatchStore, shard: int):  # type: ignore[no-untyped-def]
        if shard == 3:
            raise StorageError("throttled")
        return real(self, shard)

    monkeypatch.setattr(DynamoBatchStore, "work", work)
    event = {
        "Records": [
            {"messageId": f"m{shard}", "body": f'{{"shard": {shard}}}', "receiptHandle": "r"} for shard in (2, 3, 4)
        ]
    }
    assert stack.invoke("PollerFunction", event) == {"batchItemFailures": [{"itemIdentifier": "m3"}]}
