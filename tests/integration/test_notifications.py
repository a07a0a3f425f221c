"""Events for users: every status change and each completion, as they reach the stack's bus."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import orjson
import pytest

from tests.integration.conftest import Stack, batch_lines


@pytest.fixture
def observer(stack: Stack) -> Iterator[Any]:
    """An SQS queue behind a rule on the bus, as a user would subscribe to batchgw's events."""
    events, sqs = boto3.client("events"), boto3.client("sqs")
    queue = sqs.create_queue(QueueName="observer")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = {"source": ["batchgw"], "detail-type": ["Batch Status Changed", "Batch Completed"]}
    bus = stack.rt.settings.event_bus_name
    events.put_rule(Name="observer", EventBusName=bus, EventPattern=orjson.dumps(pattern).decode())
    events.put_targets(Rule="observer", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])

    def received() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while messages := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                found.append(orjson.loads(message["Body"]))
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        return found

    yield received


def create(stack: Stack, content: bytes) -> str:
    file_id = stack.api.post(
        "/v1/files", headers=stack.auth(), data={"purpose": "batch"}, files={"file": ("in.jsonl", content)}
    ).json()["id"]
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch_id: str = stack.api.post("/v1/batches", headers=stack.auth(), json=body).json()["id"]
    return batch_id


def test_a_batch_reports_each_status_change_then_its_completion(stack: Stack, observer: Any) -> None:
    batch_id = create(stack, batch_lines(3))

    def completed() -> bool:
        return bool(stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth()).json()["status"] == "completed")

    stack.run_until(completed)
    events = [e for e in observer() if e["detail"]["batch_id"] == batch_id]
    changes = [e["detail"] for e in events if e["detail-type"] == "Batch Status Changed"]
    assert [(c["previous_status"], c["status"]) for c in changes] == [
        (None, "validating"),
        ("validating", "in_progress"),
        ("in_progress", "finalizing"),
        ("finalizing", "completed"),
    ]
    assert all(c["owner"] == "master" and c["model"] == "gpt-4o-mini" and c["at"] > 0 for c in changes)
    (done,) = [e for e in events if e["detail-type"] == "Batch Completed"]
    batch = stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth()).json()
    assert done["source"] == "batchgw"
    detail = done["detail"]
    assert detail["status"] == "completed" and detail["request_counts"] == batch["request_counts"]
    assert detail["usage"]["input_tokens"] == batch["usage"]["input_tokens"]
    assert detail["usage"]["total_tokens"] == batch["usage"]["total_tokens"]
    assert detail["cost"] == batch["cost"] and detail["output_file_id"] == batch["output_file_id"]


def test_cancellation_is_reported_through_cancelling(stack: Stack, observer: Any) -> None:
    batch_id = create(stack, batch_lines(2, model="mock-slow"))
    stack.deliver("SubmitterFunction")
    stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth())

    def cancelled() -> bool:
        return bool(stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth()).json()["status"] == "cancelled")

    stack.run_until(cancelled)
    statuses = [e["detail"]["status"] for e in observer() if e["detail-type"] == "Batch Status Changed"]
    assert statuses == ["validating", "in_progress", "cancelling", "cancelled"]
