"""OpenAI wire shapes that batchgw serves and accepts (reference/provider-apis.md section 1).

Responses are the OpenAI types field for field, so the official SDK parses them; requests are
validated here with OpenAI's limits. Stored records live in shared/records.py and are mapped
explicitly (shared/views.py).
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    field_validator,
    model_serializer,
)

from shared.lifecycle import BatchStatus

FilePurpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
StoredFilePurpose = Literal[
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
    "evals",
]


class Wire(BaseModel):
    model_config = ConfigDict(frozen=True)


class Listing(Wire):
    """A list page as OpenAI answers one; subclasses say what `data` holds."""

    object: Literal["list"] = "list"
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(cls, data: Sequence[Any], *, has_more: bool) -> Self:
        """The page holding `data` (objects with an `id`), newest or oldest first as given."""
        first, last = (data[0].id, data[-1].id) if data else (None, None)
        return cls.model_validate({"data": list(data), "first_id": first, "last_id": last, "has_more": has_more})


class Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- errors -------------------------------------------------------------------------------------


class ErrorDetail(Wire):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(Wire):
    error: ErrorDetail


# --- files --------------------------------------------------------------------------------------


class FileObject(Wire):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: StoredFilePurpose
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileList(Listing):
    data: list[FileObject]


class FileDeleted(Wire):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class ExpiresAfter(Request):
    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=2_592_000)


# --- uploads ------------------------------------------------------------------------------------


class CreateUploadRequest(Request):
    bytes: int = Field(ge=1, le=8 * 1024**3, strict=True)  # a number: not true, not "10"
    filename: str = Field(min_length=1, max_length=255)
    mime_type: str = Field(min_length=1, max_length=255)
    purpose: FilePurpose
    expires_after: ExpiresAfter | None = None


class CompleteUploadRequest(Request):
    part_ids: list[str] = Field(min_length=1, max_length=10_000)
    md5: str | None = Field(default=None, max_length=64)


class Upload(Wire):
    id: str
    object: Literal["upload"] = "upload"
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    status: Literal["pending", "completed", "cancelled", "expired"]
    file: FileObject | None = None


class UploadPart(Wire):
    id: str
    object: Literal["upload.part"] = "upload.part"
    created_at: int
    upload_id: str


# --- batches ------------------------------------------------------------------------------------


class CreateBatchRequest(Request):
    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: str = Field(min_length=1, max_length=64)
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = None
    output_expires_after: ExpiresAfter | None = None

    @field_validator("metadata", mode="before")
    @classmethod
    def _openai_metadata(cls, value: Any) -> Any:
        """OpenAI's rules, checked as one parameter (an error names `metadata`, not a path into it): at most
        16 pairs, keys of 1 to 64 characters, string values of at most 512."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError("metadata must be an object of string keys and string values")
        if len(value) > 16:
            raise ValueError(f"metadata can hold at most 16 key-value pairs, not {len(value)}")
        for key, item in value.items():
            if not 1 <= len(key) <= 64:
                raise ValueError(f"metadata keys must be 1 to 64 characters; {reprlib.repr(key)} has {len(key)}")
            if not isinstance(item, str):
                raise ValueError(f"metadata values must be strings; the value of {key!r} is {reprlib.repr(item)}")
            if len(item) > 512:
                raise ValueError(
                    f"metadata values must be at most 512 characters; the value of {key!r} has {len(item)}"
                )
        return value


class EstimateRequest(CreateBatchRequest):
    """What creating the batch would take, checked as create checks it, so a create body can be reused."""

    completion_window: Literal["24h"] = "24h"


class EstimateCost(Wire):
    input: float  # the estimated prompts at batch prices
    max: float  # the most the batch can cost: what creating it holds against the budget
    currency: Literal["usd"] = "usd"


class ModelEstimate(Wire):
    requests: int
    input_tokens: int
    max_output_tokens: int
    cost: EstimateCost


class EstimateBudget(Wire):
    max_budget: float
    spend: float
    reserved: float
    fits: bool


class BatchEstimate(Wire):
    object: Literal["batch.estimate"] = "batch.estimate"
    input_file_id: str
    model: str
    requests: int
    input_tokens: int
    max_output_tokens: int
    cost: EstimateCost
    budget: EstimateBudget | None
    models: dict[str, ModelEstimate] | None = None  # a batch of several models: each one's share


class BatchError(Wire):
    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(Wire):
    object: Literal["list"] = "list"
    data: list[BatchError]


class RequestCounts(Wire):
    total: int = 0
    completed: int = 0
    failed: int = 0


class InputTokensDetails(Wire):
    cached_tokens: int = 0


class OutputTokensDetails(Wire):
    reasoning_tokens: int = 0


class BatchUsage(Wire):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ModelCost(Wire):
    value: float
    input: float
    output: float


class Cost(Wire):
    value: float
    currency: Literal["usd"] = "usd"
    input: float
    output: float
    models: dict[str, ModelCost] | None = None  # a batch of several models: each one's share

    @model_serializer(mode="wrap")
    def _models_only_when_several(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        shown: dict[str, Any] = handler(self)
        if self.models is None:
            shown.pop("models", None)
        return shown


class Batch(Wire):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None
    model: str | None
    usage: BatchUsage | None
    cost: Cost | None


class BatchList(Listing):
    data: list[Batch]


# --- admin keys ---------------------------------------------------------------------------------


class CreateKeyRequest(Request):
    name: str | None = Field(default=None, max_length=128)
    models: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] | None = Field(
        default=None, max_length=256
    )
    # a finite number: not "10", not true, not NaN
    max_budget: float | None = Field(default=None, ge=0, le=1e12, strict=True, allow_inf_nan=False)


class KeyInfo(Wire):
    id: str
    object: Literal["key"] = "key"
    name: str | None
    models: list[str] | None
    max_budget: float | None
    spend: float
    reserved: float
    created_at: int
    revoked: bool = False


class KeyCreated(KeyInfo):
    key: str


class KeyList(Listing):
    data: list[KeyInfo]


class KeyDeleted(Wire):
    id: str
    object: Literal["key"] = "key"
    deleted: bool


class SpendRow(Wire):
    day: str
    model: str
    cost: float
    input_cost: float
    output_cost: float
    input_tokens: int
    output_tokens: int
    requests: int
    batches: int


class SpendList(Wire):
    object: Literal["list"] = "list"
    data: list[SpendRow]


class Health(Wire):
    status: Literal["ok"] = "ok"
