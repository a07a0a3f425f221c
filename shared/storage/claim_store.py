"""The DynamoDB ClaimStore: which of our batches holds a provider batch, and which deployments failed lately."""

from __future__ import annotations

from collections.abc import Sequence

from shared.errors import StaleState
from shared.storage.dynamo import Dynamo, Update, from_item, key


class DynamoClaimStore:
    def __init__(self, db: Dynamo) -> None:
        self._db = db

    def claim(self, provider_batch_id: str, batch_id: str) -> bool:
        update = Update().assign(batch_id=batch_id)
        mine = update.path("batch_id")
        update.when(f"attribute_not_exists({mine}) OR {mine} = {update.value(batch_id)}")
        try:
            self._db.update(key(f"PROVIDERBATCH#{provider_batch_id}", "CLAIM"), update)
        except StaleState:
            return False
        return True

    def owner(self, provider_batch_id: str) -> str | None:
        item = self._db.get(key(f"PROVIDERBATCH#{provider_batch_id}", "CLAIM"))
        return str(from_item(item)["batch_id"]) if item else None

    def mark_failing(self, deployment: str, *, until: int, error: str) -> None:
        self._db.put(
            {
                "pk": f"DEPLOYMENT#{deployment}",
                "sk": "HEALTH",
                "failing_until": until,
                "error": error[:500],
                "ttl": until,
            }
        )

    def failing(self, deployments: Sequence[str], *, now: int) -> set[str]:
        failing = set()
        for deployment in deployments:
            item = self._db.get(key(f"DEPLOYMENT#{deployment}", "HEALTH"))
            if item and from_item(item)["failing_until"] > now:
                failing.add(deployment)
        return failing
