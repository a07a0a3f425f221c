"""An in-memory Journal for driving provider adapters directly, with claims shared as the table shares them."""

from __future__ import annotations

from collections.abc import Mapping

from shared.errors import ProviderError


class MemoryJournal:
    """What submission's BatchJournal does, in memory. Journals built on one `claims` dict see each other's."""

    def __init__(self, batch_id: str = "batch_test", claims: dict[str, str] | None = None, **refs: str) -> None:
        self.batch_id = batch_id
        self.claims = {} if claims is None else claims
        self._refs = dict(refs)

    @property
    def refs(self) -> Mapping[str, str]:
        return self._refs

    def record(self, **refs: str) -> None:
        provider_batch = refs.get("batch_id")
        if provider_batch is not None and self.claims.setdefault(provider_batch, self.batch_id) != self.batch_id:
            raise ProviderError(f"provider batch {provider_batch} belongs to another batch", retryable=True)
        self._refs.update(refs)

    def claimed_by_another(self, provider_batch_id: str) -> bool:
        return self.claims.get(provider_batch_id, self.batch_id) != self.batch_id
