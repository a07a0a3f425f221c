"""The EventBridge adapter: batchgw's own events on the stack's bus.

| detail-type     | detail         | consumer                        |
| Batch Created   | {batch_id}     | the submitter                   |
| Batch Ended     | {batch_id}     | the completion function         |
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import orjson
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

from shared.errors import PublishFailed

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

SOURCE: Final = "batchgw"
BATCH_CREATED: Final = "Batch Created"
BATCH_ENDED: Final = "Batch Ended"


class BatchEventDetail(BaseModel):
    """The detail of "Batch Created" and "Batch Ended" events."""

    model_config = ConfigDict(frozen=True)

    batch_id: str = Field(pattern=r"^batch_[0-9a-f]{28}$")
    without_results: bool = False


class BatchEvent(BaseModel):
    """An EventBridge event carrying a BatchEventDetail, as Lambda receives it."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    detail_type: str = Field(alias="detail-type")
    source: str
    detail: BatchEventDetail


class EventBus:
    """The stack's EventBridge bus; every failure to publish is a PublishFailed."""

    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        entry = {
            "Source": SOURCE,
            "DetailType": detail_type,
            "Detail": orjson.dumps(detail).decode(),
            "EventBusName": self._bus_name,
        }
        try:
            response = self._client.put_events(Entries=[entry])  # type: ignore[list-item]
        except (ClientError, BotoCoreError) as exc:
            raise PublishFailed(f"{detail_type}: {exc}") from exc
        if response.get("FailedEntryCount"):
            raise PublishFailed(f"{detail_type}: {response['Entries'][0].get('ErrorMessage', 'failed')}")
