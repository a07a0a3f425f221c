"""An in-memory Journal for driving provider adapters directly, with claims shared as the table shares them."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from shared.errors import ProviderError
from shared.providers.base import InputLine, SubmitRequest


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


def submit_request(
    batch_id: str, model: str, content: bytes, *, endpoint: str = "/v1/chat/completions"
) -> SubmitRequest:
    """What submission hands an adapter for a batch whose input is `content` (JSONL), every line sent."""
    lines = [orjson.loads(raw) for raw in content.splitlines() if raw.strip()]
    return SubmitRequest(
        batch_id=batch_id,
        endpoint=endpoint,
        model=model,
        line_count=len(lines),
        open_lines=lambda: iter([InputLine(line["custom_id"], line["body"]) for line in lines]),
    )


def custom_ids(content: bytes) -> list[str]:
    """The custom_ids of a JSONL input, in order: what completion hands an adapter's `results`."""
    return [orjson.loads(raw)["custom_id"] for raw in content.splitlines() if raw.strip()]
