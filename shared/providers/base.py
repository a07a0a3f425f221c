"""The one interface every provider adapter implements, in OpenAI's vocabulary.

An adapter submits a batch in steps and records each step's ids in a journal before taking the next,
so a retried submission resumes instead of starting over; refreshes the provider's status; cancels;
streams results back as OpenAI output lines with their usage, given the custom_ids it was sent in order;
and removes what it put at the provider once batchgw holds the results.

A result line an adapter cannot read becomes an `Unreadable` for its custom_id (or for none, when even
that cannot be read): one bad line never stops the others.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, Protocol, runtime_checkable

from shared.lifecycle import OUTCOMES, BatchStatus
from shared.records import Counts, ErrorEntry


class TranslationError(ValueError):
    """A request that cannot be expressed in a provider's format; it fails alone, as `invalid_request`."""


def refuse_choices_and_logprobs(body: Mapping[str, Any], api: str) -> None:
    """Raise TranslationError for `n` other than 1 or `logprobs: true`: `api` answers one choice and no log
    probabilities, and answering anyway would bill an answer that is not what was asked."""
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise TranslationError(
            f"n={n!r}: {api} answers one choice per request; send one request per choice, each with its own custom_id"
        )
    if body.get("logprobs") is True:
        raise TranslationError(f"logprobs: {api} does not return log probabilities")


def own_output_limit(body: Mapping[str, Any]) -> int | None:
    """A chat request's own output limit: `max_completion_tokens`, else `max_tokens` (OpenAI's newer name wins);
    None when it sets neither. TranslationError when the one it sets is not a positive integer, as OpenAI refuses
    it: budgets read past such a limit (shared/jsonl.py `output_limit`), and a provider may read 0 as no limit."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TranslationError(f"{name} must be a positive integer, not {value!r}")
        return value
    return None


def named_function(tool_choice: Any) -> str | None:
    """The function an OpenAI `tool_choice` names (`{"type": "function", "function": {"name": ...}}`), if any."""
    if not isinstance(tool_choice, dict) or tool_choice.get("type", "function") != "function":
        return None
    function = tool_choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else None


def unmatched_tool_choice(tool_choice: Any, api: str) -> str:
    """Why a `tool_choice` that is none of auto, none, required or a named function fails its request."""
    return (
        f"tool_choice {reprlib.repr(tool_choice)} has no equivalent in {api}: use auto, none, required or "
        '{"type": "function", "function": {"name": ...}}'
    )


class InputLine(NamedTuple):
    """One request of our input: its custom_id and its OpenAI request body."""

    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """What a provider needs to run one batch. `open_lines` streams the requests to send, anew each call:
    requests refused before the run (shared/screening.py) are not among them."""

    batch_id: str
    endpoint: str
    model: str
    line_count: int
    open_lines: Callable[[], Iterator[InputLine]]
    expires_at: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)


# the refs of one provider run, which its create records (shared/providers/http.py `create_once`): forgotten
# when the provider fails the run only because it was busy, so that the next try creates another
RUN_REFS: Final = ("batch_id", "create_started")


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
    """A provider batch's state in OpenAI's vocabulary. `retry_after` > 0: the provider failed the batch
    without running a request only because it was busy (Azure's enqueued-token quota was full when it
    validated it): the batch is to be submitted again, after at least that many seconds."""

    state: BatchStatus
    counts: Counts | None = None
    errors: tuple[ErrorEntry, ...] = ()
    retry_after: float = 0.0

    @property
    def terminal(self) -> bool:
        return self.state in OUTCOMES


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


@dataclass(frozen=True, slots=True)
class Verbatim:
    """Answered requests' results that an OpenAI-compatible provider already wrote as batchgw's output lines,
    one line or a run of them (those of one chunk of its file, read at once): each request succeeded, each
    line has an id, and each was read only as far as pricing needs (its usage). They are stored as the
    provider wrote them (`raw`: the lines, each ended by a LF), neither parsed in full nor rendered again. An
    adapter that must change a line reads it in full first (`openai_results.in_full`)."""

    custom_ids: list[str]
    usages: list[LineUsage | None]  # line by line, as custom_ids
    raw: bytes

    def lines(self) -> list[bytes]:
        """Each line, without its LF."""
        return self.raw.split(b"\n")[:-1]

    def each(self) -> Iterator[tuple[str, LineUsage | None, bytes]]:
        """Each line's custom_id, usage and bytes."""
        return zip(self.custom_ids, self.usages, self.lines(), strict=True)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A provider result line that cannot be read or priced; `custom_id` when that much could be read."""

    custom_id: str | None
    reason: str


def guarded[**P](
    custom_id: str, translate: Callable[P, ResultLine], *args: P.args, **kwargs: P.kwargs
) -> ResultLine | Unreadable:
    """`translate(*args, **kwargs)`, or an Unreadable for `custom_id` if the provider's line broke it."""
    try:
        return translate(*args, **kwargs)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        return Unreadable(custom_id, f"the provider's line cannot be translated ({type(exc).__name__}: {exc})")


class BatchProvider(Protocol):
    """A provider's batch API, behind batchgw's one interface."""

    def submit(self, request: SubmitRequest, journal: Journal) -> None:
        """Upload the input and create the provider batch, recording ids in `journal` before each next step.

        Must be safe to call again after a crash at any point: it resumes from `journal.refs` and never
        creates a second provider batch. Raises ProviderError (ProviderBusy: ask again later).
        """

    def refresh(self, refs: Mapping[str, str]) -> ProviderStatus:
        """The provider batch's current status. Raises ProviderError."""

    def cancel(self, refs: Mapping[str, str]) -> None:
        """Ask the provider to cancel. Raises ProviderError."""

    def results(
        self, refs: Mapping[str, str], custom_ids: Sequence[str]
    ) -> Iterator[ResultLine | Verbatim | Unreadable]:
        """Stream every result the provider has, as OpenAI output lines; `custom_ids` are the requests
        sent, in the order sent. Raises ProviderError when the results cannot be fetched at all."""

    def cleanup(self, refs: Mapping[str, str]) -> None:
        """Remove what batchgw put at the provider for this batch (input and result files, bucket objects).
        Idempotent. Raises ProviderError."""

    def close(self) -> None:
        """Release connections."""


@runtime_checkable
class ListsBatches(Protocol):
    """A provider whose batch list pages the poller reads instead of retrieving each batch on its own."""

    def list_statuses(self, refs: Sequence[Mapping[str, str]]) -> dict[str, ProviderStatus]:
        """The statuses of these provider batches (by provider batch id) that its list pages show, read as far
        back as the oldest of them and no further. Batches the pages did not show are left out: the poller
        retrieves those one by one. Raises ProviderError."""
