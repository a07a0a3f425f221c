"""Virtual keys: created by the master key, shown once, stored only as a SHA-256 hash, revoked by marking."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from shared import ids
from shared.auth import KEY_PREFIX, Principal, hash_key
from shared.errors import InvalidRequest, NotFound
from shared.records import MASTER_OWNER, KeyRecord, SpendRow
from shared.storage.dynamo import money
from shared.storage.ports import KeyStore, Page


@dataclass(frozen=True, slots=True)
class NewKey:
    record: KeyRecord
    secret: str  # returned to the caller once, never stored


class Keys:
    def __init__(self, keys: KeyStore, *, clock: Callable[[], float] = time.time) -> None:
        self._keys = keys
        self._clock = clock

    def create(
        self, principal: Principal, *, name: str | None, models: list[str] | None, max_budget: float | None
    ) -> NewKey:
        principal.require_master()
        secret = f"{KEY_PREFIX}batchgw-{secrets.token_urlsafe(32)}"
        record = KeyRecord(
            id=ids.new_id(ids.KEY),
            name=name,
            models=tuple(dict.fromkeys(models)) if models is not None else None,
            # kept to the picodollar the budget is counted in, so the key shows what admission compares
            max_budget=money(Decimal(str(max_budget))) if max_budget is not None else None,
            created_at=int(self._clock()),
            key_hash=hash_key(secret),
        )
        self._keys.put(record)
        return NewKey(record, secret)

    def get(self, principal: Principal, key_id: str) -> KeyRecord:
        principal.require_master()
        record = self._keys.get(key_id) if ids.is_id(key_id, ids.KEY) else None
        if record is None:
            raise NotFound(f"No such key: {key_id}", param="key_id")
        return record

    def list(self, principal: Principal, *, after: str | None, limit: int) -> Page[KeyRecord]:
        principal.require_master()
        if after is not None and not ids.is_id(after, ids.KEY):
            raise InvalidRequest(f"Invalid 'after' cursor: {after[:64]!r}", code="invalid_cursor", param="after")
        return self._keys.page(after=after, limit=limit)

    def revoke(self, principal: Principal, key_id: str) -> KeyRecord:
        """Revoke a key: the next request with it is refused. Its objects and spend stay."""
        record = self.get(principal, key_id)
        if not record.revoked:
            self._keys.revoke(record)
        return record

    def spend(self, principal: Principal, key_id: str) -> Sequence[SpendRow]:
        """A key's spend per day and model (the master key's own under the id `master`)."""
        principal.require_master()
        if key_id != MASTER_OWNER:
            self.get(principal, key_id)
        return sorted(self._keys.spend(key_id), key=lambda row: (row.day, row.model))
