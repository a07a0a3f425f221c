"""Domain errors. Each names what went wrong; shared/http/app.py maps them to HTTP in one place."""

from __future__ import annotations


class BatchgwError(Exception):
    """An error the caller should see, with OpenAI's `code` and `param` where they apply."""

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


class InvalidRequest(BatchgwError):
    """The request is malformed or asks for something that cannot be done (400)."""


class BudgetExceeded(InvalidRequest):
    """The key has spent its budget (400, not 429: a retry cannot fix it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="budget_exceeded")


class NotFound(BatchgwError):
    """No such object for this caller (404); another key's object is indistinguishable from none."""


class AuthenticationFailed(BatchgwError):
    """Missing, malformed, unknown or revoked key (401)."""


class PermissionDenied(BatchgwError):
    """The key exists but may not do this, e.g. use this model (403)."""


class PayloadTooLarge(BatchgwError):
    """The request body is over what one request can carry (413)."""


class InvalidBatchInput(InvalidRequest):
    """A batch input file broke a rule of CONTRACT.md section 4 at `line` (1-based)."""

    def __init__(self, line: int, rule: str, detail: str) -> None:
        super().__init__(f"Invalid batch input file, line {line}: {detail}", code=rule, param="file")
        self.line = line
        self.rule = rule


class StaleState(Exception):
    """A conditional write lost: another worker already moved the object on. Log and move on."""


class AdmitRefused(StaleState):
    """A new batch was not stored: its input file is gone, or its key's budget cannot hold its maximum."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"batch not admitted: {reason}")
        self.reason = reason


class UnreadableRecord(Exception):
    """A stored item exists but cannot be read back as a record. `owner` is its owner when that much is known."""

    def __init__(self, key: str, reason: str, *, owner: str | None) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason
        self.owner = owner


class StorageError(Exception):
    """The store failed in a way a retry of the whole operation may fix (throttling, a network fault)."""


class PublishFailed(Exception):
    """An event could not be put on the bus; the state it reports stays, and the poller re-drives it."""


class ProviderError(Exception):
    """A provider call failed. `retryable` says whether the same call may succeed later."""

    def __init__(self, message: str, *, retryable: bool, code: str = "provider_error") -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.code = code


class ProviderBusy(ProviderError):
    """The provider asks to be asked again later (its queue is full, an uploaded file is not processed yet).

    Not a failure: the batch waits, at least `retry_after` seconds, until its completion window closes.
    """

    def __init__(self, message: str, *, retry_after: float = 60.0, code: str = "provider_busy") -> None:
        super().__init__(message, retryable=True, code=code)
        self.retry_after = retry_after
