"""Stored records: what the table holds about files, uploads, batches and keys.

These are the domain's view; the stores (shared/storage/) map them to DynamoDB items and shared/views.py
to the OpenAI wire shapes. Money is Decimal (exact, and DynamoDB's number type).
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from shared.lifecycle import BatchStatus, Outcome

MASTER_OWNER = "master"


class Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class ModelBounds(Record):
    """What one model's requests in a batch input file may cost at most, in tokens, and an estimate.

    `input_tokens` bounds the prompt: the UTF-8 bytes of each request line (a byte-level tokenizer never
    makes more tokens than bytes). `output_tokens` sums the lines' own `max_tokens`-like limits, times the
    answers each asks for (`n`); `unbounded_lines` counts the answers of the lines without one (a line asking
    for `n` counts n), each bounded by its deployment's `max_output_tokens` at creation.
    `images` and `files` count the image and file (document) parts of the requests, whose tokens their bytes
    do not bound: each is bounded by its deployment's `max_media_tokens` at creation (shared/pricing.py).
    `estimated_input_tokens` is shared/tokens.py's estimate of the prompts, for `POST /v1/batches/estimate`.
    """

    lines: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    unbounded_lines: int = 0
    images: int = 0
    files: int = 0
    estimated_input_tokens: int = 0


class BatchInputInfo(Record):
    """What validation learned about a `purpose=batch` file; batch creation needs nothing else."""

    line_count: int
    endpoint: str
    models: dict[str, ModelBounds]  # each model the file names, in the order it first names them

    @property
    def model(self) -> str:
        """The model a batch of this file shows: its one model, or its models joined by commas."""
        return ",".join(self.models)


class FileRecord(Record):
    id: str
    owner: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    expires_at: int | None = None
    s3_key: str
    batch_input: BatchInputInfo | None = None
    batch_id: str | None = None  # for batch_output files: the batch that wrote it


class UploadRecord(Record):
    id: str
    owner: str
    bytes: int
    filename: str
    mime_type: str
    purpose: str
    created_at: int
    expires_at: int
    status: str = "pending"
    file_expires_after: int | None = None
    file_id: str | None = None
    parts: dict[str, int] = Field(default_factory=dict)  # part id -> bytes
    received_bytes: int = 0


class Counts(Record):
    total: int = 0
    completed: int = 0
    failed: int = 0


class Usage(Record):
    """Token usage summed over a batch's result lines."""

    input_tokens: int = 0  # all prompt tokens, cached and cache-written ones included
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Cost(Record):
    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)

    @property
    def total(self) -> Decimal:
        return self.input + self.output


class ErrorEntry(Record):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchRecord(Record):
    id: str
    owner: str
    endpoint: str
    input_file_id: str
    completion_window: str = "24h"
    status: BatchStatus = "validating"
    created_at: int
    expires_at: int
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    metadata: dict[str, str] | None = None
    model: str
    deployment: str
    request_counts: Counts = Counts()
    errors: tuple[ErrorEntry, ...] = ()
    output_file_id: str | None = None
    error_file_id: str | None = None
    output_expires_after: int | None = None
    usage: Usage | None = None
    cost: Cost | None = None
    cost_by_model: dict[str, Cost] | None = None  # a batch of several models: each one's share of `cost`
    # a batch of several models runs as one run per model (`runs`, their ids); a run names its batch (`parent`),
    # is never shown to users, and books nothing itself: its batch merges their results and books them once
    runs: tuple[str, ...] = ()
    parent: str | None = None
    # the most this batch can cost, held against its key's budget until the batch is finished
    reserved: Decimal = Decimal(0)
    # the provider side: ids the adapter recorded, step by step
    provider_refs: dict[str, str] = Field(default_factory=dict)
    # requests refused before the provider run (they cannot be translated for the provider); -1: not screened
    rejected: int = -1
    submit_attempts: int = 0
    submit_redrives: int = 0
    submit_lease_until: int = 0
    retry_at: int = 0  # a provider asked to be asked again later (its queue is full, its file not ready)
    tried_deployments: tuple[str, ...] = ()  # deployments a submission failed on, in order
    cancel_sent: bool = False
    expiring: bool = False  # past expires_at: cancelled at the provider, to end `expired`
    # set when the provider run has ended: the final status, and the ids the completion step will use
    finalize_to: Outcome | None = None
    finalize_redrives: int = 0
    reserved_output_file_id: str | None = None
    reserved_error_file_id: str | None = None
    updated_at: int = 0


class KeyGrant(Record):
    """What a live key may do: all that authenticating it needs, kept on its hash pointer too, so that a
    request's key check is one read."""

    id: str
    models: tuple[str, ...] | None = None
    max_budget: Decimal | None = None


class KeyRecord(Record):
    id: str
    name: str | None = None
    models: tuple[str, ...] | None = None
    max_budget: Decimal | None = None
    spend: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)
    created_at: int
    revoked: bool = False
    key_hash: str

    @property
    def grant(self) -> KeyGrant:
        return KeyGrant(id=self.id, models=self.models, max_budget=self.max_budget)


class SpendRow(Record):
    """One owner's spend on one day and model."""

    day: str
    model: str
    cost: Decimal = Decimal(0)
    input_cost: Decimal = Decimal(0)
    output_cost: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0
    batches: int = 0
