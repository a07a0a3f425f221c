"""Batches use cases for the API: create (every check of CONTRACT.md sections 4 and 5), read, list, cancel.

Creation never talks to a provider: it stores the batch as `validating` and puts "Batch Created" on
the bus for the submitter. If that event is lost, the poller re-drives the batch.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

from shared import ids, lifecycle, notifications
from shared.auth import Principal
from shared.errors import BudgetExceeded, InvalidRequest, NotFound, StaleState
from shared.files import Files
from shared.jsonl import ENDPOINTS, normalize_endpoint
from shared.providers import check_input
from shared.records import BatchRecord, Counts
from shared.routing import Deployment, RoutingConfig, place
from shared.storage.bus import BATCH_CREATED, Bus, PublishFailed
from shared.storage.table import Page, Table
from shared.wire import CreateBatchRequest

logger = logging.getLogger(__name__)

COMPLETION_WINDOW_SECONDS = 24 * 3600


class Batches:
    def __init__(self, table: Table, files: Files, bus: Bus, routing: RoutingConfig) -> None:
        self._table = table
        self._files = files
        self._bus = bus
        self._routing = routing

    def create(self, principal: Principal, request: CreateBatchRequest) -> BatchRecord:
        file = self._files.get(principal, request.input_file_id, param="input_file_id")
        info = file.batch_input
        if file.purpose != "batch" or info is None:
            raise InvalidRequest(
                f"File {file.id} has purpose '{file.purpose}'; a batch needs a file uploaded with purpose 'batch'.",
                code="invalid_input_file",
                param="input_file_id",
            )
        endpoint = normalize_endpoint(request.endpoint)
        if endpoint is None:
            raise InvalidRequest(
                f"Invalid endpoint '{request.endpoint}': expected one of {', '.join(ENDPOINTS)}.",
                code="invalid_endpoint",
                param="endpoint",
            )
        if endpoint != info.endpoint:
            raise InvalidRequest(
                f"The endpoint '{request.endpoint}' does not match the url of the file's requests ({info.endpoint}).",
                code="url_mismatch",
                param="endpoint",
            )
        deployments = self._routing.deployments_for(info.model)
        if not deployments:
            raise InvalidRequest(
                f"The model '{info.model}' is not served by this gateway.",
                code="model_not_found",
                param="model",
            )
        principal.check_model(info.model)
        self._check_budget(principal)
        for deployment in deployments:
            check_input(deployment, info)
        now = int(time.time())
        record = BatchRecord(
            id=ids.new_id(ids.BATCH),
            owner=principal.owner,
            endpoint=endpoint,
            input_file_id=file.id,
            created_at=now,
            expires_at=now + COMPLETION_WINDOW_SECONDS,
            metadata=request.metadata,
            model=info.model,
            deployment=place(deployments, avoid=self._failing(deployments, now)).key,
            request_counts=Counts(total=info.line_count),
            output_expires_after=request.output_expires_after.seconds if request.output_expires_after else None,
            updated_at=now,
        )
        try:
            self._table.create_batch(record)
        except StaleState:
            raise NotFound(f"No such File object: {file.id}", param="input_file_id") from None
        notifications.status_changed(self._bus, record, None)
        try:
            self._bus.publish(BATCH_CREATED, {"batch_id": record.id})
        except PublishFailed:
            logger.warning(
                "batch created but its event was not published; the poller will re-drive it",
                extra={"batch_id": record.id},
            )
        return record

    def _failing(self, deployments: list[Deployment], now: int) -> set[str]:
        """The deployments that failed a submission lately (looked up only when there is a choice)."""
        return self._table.failing_deployments([d.key for d in deployments], now=now) if len(deployments) > 1 else set()

    def _check_budget(self, principal: Principal) -> None:
        if principal.max_budget is None:
            return
        key = self._table.get_key(principal.owner)
        spend = key.spend if key else Decimal(0)
        if spend >= principal.max_budget:
            raise BudgetExceeded(
                f"This key has spent ${spend:.4f} of its ${principal.max_budget:.2f} budget; "
                "it cannot create batches until the budget is raised."
            )

    def get(self, principal: Principal, batch_id: str) -> BatchRecord:
        """The caller's batch; NotFound for a missing or someone else's batch alike."""
        record = self._table.get_batch(batch_id) if ids.is_id(batch_id, ids.BATCH) else None
        if record is None or not principal.can_see(record.owner):
            raise NotFound(f"No such Batch object: {batch_id}", param="batch_id")
        return record

    def list(self, principal: Principal, *, after: str | None, limit: int) -> Page[BatchRecord]:
        if after is not None and not ids.is_id(after, ids.BATCH):
            raise InvalidRequest(f"Invalid 'after' cursor: {after[:64]!r}", code="invalid_cursor", param="after")
        return self._table.list_batches(principal.scope, after=after, limit=limit)

    def cancel(self, principal: Principal, batch_id: str) -> BatchRecord:
        """Move the batch to `cancelling`; the poller tells the provider and waits for it to confirm."""
        record = self.get(principal, batch_id)
        while True:
            if record.status == "cancelling":
                return record
            if lifecycle.is_terminal(record.status) or record.finalize_to is not None:
                raise InvalidRequest(
                    f"Cannot cancel a batch with status '{record.status}'.", code="batch_not_cancellable"
                )
            now = int(time.time())
            try:
                cancelling = self._table.update_batch(
                    record.id,
                    expect={record.status} & lifecycle.sources("cancelling"),
                    fields={"status": "cancelling", "cancelling_at": now, "updated_at": now},
                    when={"finalize_to": None},
                )
            except StaleState:
                record = self.get(principal, batch_id)
                continue
            notifications.status_changed(self._bus, cancelling, record.status)
            return cancelling
