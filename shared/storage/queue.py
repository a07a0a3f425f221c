"""The SQS adapters: the queue the scheduled poller fans ranges of the work index out through, and the FIFO
queue sync deployments' chunks of requests wait in for the sync worker."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import PublishFailed
from shared.storage.ports import FifoMessage, WorkRange

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

_PER_CALL: Final = 10  # SQS takes at most ten messages per SendMessageBatch


class SqsWorkQueue:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, ranges: Iterable[WorkRange]) -> None:
        entries = [
            {"Id": str(n), "MessageBody": orjson.dumps({"start": r.start, "stop": r.stop}).decode()}
            for n, r in enumerate(ranges)
        ]
        _send_batches(self._client, self._queue_url, entries, what="poll ranges")


def work_range(body: str) -> WorkRange:
    """The range a message of the work queue names (a message without one: all of the work index)."""
    named = orjson.loads(body)
    return WorkRange(named.get("start"), named.get("stop"))


class SqsFifoQueue:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, messages: Sequence[FifoMessage]) -> None:
        entries = [
            {"Id": str(n), "MessageBody": m.body, "MessageGroupId": m.group, "MessageDeduplicationId": m.dedup_id}
            for n, m in enumerate(messages)
        ]
        _send_batches(self._client, self._queue_url, entries, what="sync chunks")


def _send_batches(client: SQSClient, queue_url: str, entries: list[dict[str, Any]], *, what: str) -> None:
    """Send `entries` in order, ten per SendMessageBatch call."""
    for start in range(0, len(entries), _PER_CALL):
        try:
            response = client.send_message_batch(
                QueueUrl=queue_url,
                Entries=entries[start : start + _PER_CALL],  # type: ignore[arg-type]
            )
        except (ClientError, BotoCoreError) as exc:
            raise PublishFailed(f"{what}: {exc}") from exc
        if response.get("Failed"):
            raise PublishFailed(f"{what}: {response['Failed'][0].get('Message', 'refused')}")
