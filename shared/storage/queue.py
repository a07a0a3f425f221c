"""The SQS adapter: the queue the scheduled poller fans shards of the work index out through."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import PublishFailed

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

_PER_CALL: Final = 10  # SQS takes at most ten messages per SendMessageBatch


class SqsShardQueue:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, shards: Iterable[int]) -> None:
        entries = [{"Id": str(shard), "MessageBody": orjson.dumps({"shard": shard}).decode()} for shard in shards]
        for start in range(0, len(entries), _PER_CALL):
            try:
                response = self._client.send_message_batch(
                    QueueUrl=self._queue_url,
                    Entries=entries[start : start + _PER_CALL],  # type: ignore[arg-type]
                )
            except (ClientError, BotoCoreError) as exc:
                raise PublishFailed(f"poll shards: {exc}") from exc
            if response.get("Failed"):
                raise PublishFailed(f"poll shards: {response['Failed'][0].get('Message', 'refused')}")
