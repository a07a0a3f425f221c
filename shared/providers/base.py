"""The one interface every provider adapter implements, in OpenAI's vocabulary.

An adapter submits a batch in steps and records each step's ids in a journal before taking the next,
so a retried submission resumes instead of starting over; refreshes the provider's status; cancels;
and streams results back as OpenAI output lines with their usage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from shared.records import Counts, ErrorEntry

# OpenAI statuses an adapter reports; the terminal ones end the provider run
TERMINAL_STATES = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """What a provider needs to run one batch. `open_input` streams our stored input file, anew each call."""

    batch_id: str
    endpoint: str
    model: str
    line_count: int
    open_input: Callable[[], Iterator[bytes]]
    metadata: Mapping[str, str] = field(default_factory=dict)


class Journal(Protocol):
    """Where an adapter records provider ids as it goes (a conditional write on the batch item).

    Recording `batch_id` also claims that provider batch for this batch, once and for all: recording a
    provider batch another of our batches holds raises a retryable ProviderError. Adapters whose create
    is not idempotent record `create_started` before creating, and on a retry look for the batch an
    earlier attempt made, skipping those `claimed_by_another`.
    """

    @property
    def refs(self) -> Mapping[str, str]: ...

    def record(self, **refs: str) -> None: ...

    def claimed_by_another(self, provider_batch_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """A provider batch's state in OpenAI's vocabulary."""

    state: str
    counts: Counts | None = None
    errors: tuple[ErrorEntry, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class LineUsage(NamedTuple):
    """One request's token usage (a tuple: this is made once per result line, so it must be cheap)."""

    input_tokens: int = 0  # every prompt token, cached and cache-written ones included
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(slots=True)
class ResultLine:
    """One request's result as an OpenAI output line, and its usage when it succeeded."""

    custom_id: str
    response: dict[str, Any] | None
    error: dict[str, Any] | None = None
    usage: LineUsage | None = None
    id: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.response is not None and 200 <= self.response["status_code"] < 300


class BatchProvider(Protocol):
    """A provider's batch API, behind batchgw's one interface."""

    def submit(self, request: SubmitRequest, journal: Journal) -> None:
        """Upload the input and create the provider batch, recording ids in `journal` before each next step.

        Must be safe to call again after a crash at any point: it resumes from `journal.refs` and never
        creates a second provider batch. Raises ProviderError.
        """

    def refresh(self, refs: Mapping[str, str]) -> ProviderStatus:
        """The provider batch's current status. Raises ProviderError."""

    def cancel(self, refs: Mapping[str, str]) -> None:
        """Ask the provider to cancel. Raises ProviderError."""

    def results(self, refs: Mapping[str, str], request: SubmitRequest) -> Iterator[ResultLine]:
        """Stream every result the provider has, as OpenAI output lines. Raises ProviderError."""

    def close(self) -> None:
        """Release connections."""
