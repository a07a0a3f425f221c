"""Batches use cases for the API: create (every check of CONTRACT.md sections 3 and 4), read, list, cancel.

Creation never talks to a provider. It prices the batch's maximum (the bounds its file's validation
recorded, at batch prices) and admits it in one transaction that stores the batch as `validating`, marks
its input in use and holds the maximum against its key's budget, so concurrent creates cannot overspend.
Then it puts "Batch Created" on the bus for the submitter; the table is the outbox: should that event be
lost, the poller re-drives the batch from the table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shared import ids, lifecycle, notifications
from shared.auth import Principal
from shared.errors import AdmitRefused, BudgetExceeded, InvalidRequest, NotFound, PublishFailed, StaleState
from shared.files import Files, readable
from shared.jsonl import ENDPOINTS, MAX_MODELS, normalize_endpoint
from shared.pricing import input_cost, max_cost, output_bound
from shared.providers.registry import check_input
from shared.records import BatchInputInfo, BatchRecord, Counts, FileRecord
from shared.routing import Deployment, RoutingConfig, place
from shared.runs import Runs
from shared.storage.bus import BATCH_CREATED
from shared.storage.dynamo import money
from shared.storage.ports import BatchStore, Bus, ClaimStore, KeyStore, Page
from shared.wire import CreateBatchRequest, EstimateRequest

logger = logging.getLogger(__name__)

COMPLETION_WINDOW_SECONDS = 24 * 3600
# the most one batch may hold: over ten thousand times what 50,000 requests of 128 answers of 32,768 tokens
# each cost at $300 per million output tokens, and far below what the table's amounts (picodollars, 38 digits)
# and a key's `max_budget` (at most the same $10^12) can hold
MAX_BATCH_COST = Decimal(10**12)


@dataclass(frozen=True, slots=True)
class ModelEstimate:
    requests: int
    input_tokens: int  # estimated (shared/tokens.py)
    max_output_tokens: int
    input_cost: Decimal  # the estimated prompts at batch prices
    max_cost: Decimal  # the bound a create holds against the budget


@dataclass(frozen=True, slots=True)
class BudgetView:
    max_budget: Decimal
    spend: Decimal
    reserved: Decimal
    fits: bool


@dataclass(frozen=True, slots=True)
class Estimate:
    input_file_id: str
    models: dict[str, ModelEstimate]
    budget: BudgetView | None


class Batches:
    def __init__(
        self,
        batches: BatchStore,
        keys: KeyStore,
        claims: ClaimStore,
        files: Files,
        bus: Bus,
        routing: RoutingConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._batches = batches
        self._keys = keys
        self._claims = claims
        self._files = files
        self._bus = bus
        self._routing = routing
        self._clock = clock

    def create(self, principal: Principal, request: CreateBatchRequest) -> BatchRecord:
        file, info, plan = self._runnable(principal, request.input_file_id, request.endpoint)
        maximum = sum(self._maxima(info, plan).values(), Decimal(0))
        self._check_budget(principal, maximum)
        now = int(self._clock())
        fields: dict[str, Any] = {
            "owner": principal.owner,
            "endpoint": info.endpoint,
            "input_file_id": file.id,
            "created_at": now,
            "expires_at": now + COMPLETION_WINDOW_SECONDS,
            "metadata": request.metadata,
            "output_expires_after": request.output_expires_after.seconds if request.output_expires_after else None,
            "updated_at": now,
        }
        batch_id = ids.new_id(ids.BATCH)
        runs = () if len(plan) == 1 else self._runs(batch_id, info, plan, fields)
        record = BatchRecord(
            id=batch_id,
            model=info.model,
            deployment="" if runs else self._place(plan[info.model], now),
            request_counts=Counts(total=info.line_count),
            reserved=maximum,
            runs=tuple(r.id for r in runs),
            **fields,
        )
        try:
            self._batches.admit(record, runs=runs, max_budget=principal.max_budget)
        except AdmitRefused as exc:
            if exc.reason == "budget":  # a concurrent batch took the room
                raise self._over_budget(principal, maximum) from None
            raise NotFound(f"No such File object: {file.id}", param="input_file_id") from None
        notifications.status_changed(self._bus, record, None)
        for submitted in runs or (record,):
            try:
                self._bus.publish(BATCH_CREATED, {"batch_id": submitted.id})
            except PublishFailed:
                logger.warning(
                    "batch created but its event was not published; the poller will submit it",
                    extra={"batch_id": submitted.id},
                )
        return record

    def _runs(
        self, batch_id: str, info: BatchInputInfo, plan: Mapping[str, list[Deployment]], fields: Mapping[str, Any]
    ) -> tuple[BatchRecord, ...]:
        """One run per model of a batch of several models, each placed on a deployment of its model."""
        now = int(self._clock())
        return tuple(
            BatchRecord(
                id=ids.new_id(ids.BATCH),
                parent=batch_id,
                model=model,
                deployment=self._place(deployments, now),
                request_counts=Counts(total=info.models[model].lines),
                **fields,
            )
            for model, deployments in plan.items()
        )

    def estimate(self, principal: Principal, request: EstimateRequest) -> Estimate:
        """What a batch of this file would cost: its prompts' estimated price and the most it can cost (what
        creating it would hold against the budget), checked as creating it would be, creating nothing."""
        file, info, plan = self._runnable(principal, request.input_file_id, request.endpoint)
        maxima = self._maxima(info, plan)
        models = {
            model: ModelEstimate(
                requests=info.models[model].lines,
                input_tokens=info.models[model].estimated_input_tokens,
                max_output_tokens=max(output_bound(d, info.models[model]) for d in deployments),
                input_cost=money(max(input_cost(d, info.models[model].estimated_input_tokens) for d in deployments)),
                max_cost=maxima[model],
            )
            for model, deployments in plan.items()
        }
        budget = None
        if principal.max_budget is not None:
            left, spend, reserved = self._budget_left(principal)
            budget = BudgetView(principal.max_budget, spend, reserved, fits=sum(maxima.values()) <= left)
        return Estimate(input_file_id=file.id, models=models, budget=budget)

    def _maxima(self, info: BatchInputInfo, plan: Mapping[str, list[Deployment]]) -> dict[str, Decimal]:
        """Each model's most expensive deployment's bound: a batch may move between a model's deployments.
        Output limits beyond any model's (JSON integers go to 2**63) are refused, whatever the key's budget."""
        maxima = {model: max(max_cost(d, info.models[model]) for d in deps) for model, deps in plan.items()}
        if sum(maxima.values()) > MAX_BATCH_COST:
            raise InvalidRequest(
                f"This batch could cost more than ${MAX_BATCH_COST:,}, more than batchgw holds for one batch: its "
                "requests' output limits (max_tokens, max_completion_tokens or max_output_tokens, times n) are "
                "beyond what any model answers. Set them lower.",
                code="max_cost_too_large",
                param="input_file_id",
            )
        return {model: money(maximum) for model, maximum in maxima.items()}

    def _place(self, deployments: list[Deployment], now: int) -> str:
        return place(deployments, avoid=self._failing(deployments, now)).key

    def _runnable(
        self, principal: Principal, input_file_id: str, endpoint: str
    ) -> tuple[FileRecord, BatchInputInfo, dict[str, list[Deployment]]]:
        """The input file, what it holds and the deployments that may run each of its models: every check a
        batch must pass."""
        file = self._files.get(principal, input_file_id, param="input_file_id")
        info = file.batch_input
        if file.purpose != "batch" or info is None:
            raise InvalidRequest(
                f"File {file.id} has purpose '{file.purpose}'; a batch needs a file uploaded with purpose 'batch'.",
                code="invalid_input_file",
                param="input_file_id",
            )
        normalized = normalize_endpoint(endpoint)
        if normalized is None:
            raise InvalidRequest(
                f"Invalid endpoint '{endpoint}': expected one of {', '.join(ENDPOINTS)}.",
                code="invalid_endpoint",
                param="endpoint",
            )
        if normalized != info.endpoint:
            raise InvalidRequest(
                f"The endpoint '{endpoint}' does not match the url of the file's requests ({info.endpoint}).",
                code="url_mismatch",
                param="endpoint",
            )
        if len(info.models) > MAX_MODELS:  # a file validated before uploads were held to MAX_MODELS
            raise InvalidRequest(
                f"A batch can name at most {MAX_MODELS} models; this file names {len(info.models)}.",
                code="too_many_models",
                param="input_file_id",
            )
        plan: dict[str, list[Deployment]] = {}
        for model, bounds in info.models.items():
            deployments = self._routing.deployments_for(model)
            if not deployments:
                raise InvalidRequest(
                    f"The model '{model}' is not served by this gateway.", code="model_not_found", param="model"
                )
            principal.check_model(model)
            for deployment in deployments:
                check_input(deployment, endpoint=info.endpoint, model=model, requests=bounds.lines)
            plan[model] = deployments
        return file, info, plan

    def _failing(self, deployments: list[Deployment], now: int) -> set[str]:
        """The deployments that failed a submission lately (looked up only when there is a choice)."""
        return self._claims.failing([d.key for d in deployments], now=now) if len(deployments) > 1 else set()

    def _check_budget(self, principal: Principal, maximum: Decimal) -> None:
        """Refuse a batch whose maximum does not fit in what the key's budget has left (a first look: the
        admitting transaction decides)."""
        if principal.max_budget is not None and maximum > self._budget_left(principal)[0]:
            raise self._over_budget(principal, maximum)

    def _budget_left(self, principal: Principal) -> tuple[Decimal, Decimal, Decimal]:
        """(what is left, spend, reserved) of the key's budget."""
        key = self._keys.get(principal.owner)
        spend, reserved = (key.spend, key.reserved) if key else (Decimal(0), Decimal(0))
        # to the picodollar, as the admitting write counts it (a key created before budgets were rounded may
        # carry a finer one)
        return money(principal.max_budget or Decimal(0)) - spend - reserved, spend, reserved

    def _over_budget(self, principal: Principal, maximum: Decimal) -> BudgetExceeded:
        budget = principal.max_budget or Decimal(0)
        left, spend, reserved = self._budget_left(principal)
        left = max(Decimal(0), left)
        return BudgetExceeded(
            f"This batch may cost up to {_usd(maximum)} at batch prices, but this key has {_usd(left)} left of "
            f"its {_usd(budget)} budget ({_usd(spend)} spent, {_usd(reserved)} held by unfinished batches). Set "
            "max_tokens on the requests to lower the maximum, wait for running batches to finish, or raise "
            "the budget."
        )

    def get(self, principal: Principal, batch_id: str) -> BatchRecord:
        """The caller's batch; NotFound for a missing or someone else's batch alike."""
        record = (
            readable(principal, lambda: self._batches.get(batch_id), what="Batch", object_id=batch_id)
            if ids.is_id(batch_id, ids.BATCH)
            else None
        )
        if record is None or record.parent is not None or not principal.can_see(record.owner):
            raise NotFound(f"No such Batch object: {batch_id}", param="batch_id")
        return self._with_progress(record)

    def _with_progress(self, record: BatchRecord) -> BatchRecord:
        """A running batch of several models shows its runs' progress, summed."""
        if not record.runs or lifecycle.is_terminal(record.status):
            return record
        runs = self._batches.get_many(record.runs)
        counts = Counts(
            total=record.request_counts.total,
            completed=sum(r.request_counts.completed for r in runs),
            failed=sum(r.request_counts.failed for r in runs),
        )
        return record.model_copy(update={"request_counts": counts})

    def list(self, principal: Principal, *, after: str | None, limit: int) -> Page[BatchRecord]:
        if after is not None and not ids.is_id(after, ids.BATCH):
            raise InvalidRequest(f"Invalid 'after' cursor: {after[:64]!r}", code="invalid_cursor", param="after")
        page = self._batches.page(principal.scope, after=after, limit=limit)
        return Page([self._with_progress(b) for b in page.items], page.has_more)

    def cancel(self, principal: Principal, batch_id: str) -> BatchRecord:
        """Move the batch, then its runs, to `cancelling`; the poller tells the providers and waits for them to
        confirm. Repeated, it carries the cancel to the runs an earlier call stopped before reaching."""
        record = self.get(principal, batch_id)
        while record.status != "cancelling":
            if lifecycle.is_terminal(record.status) or record.finalize_to is not None:
                raise InvalidRequest(
                    f"Cannot cancel a batch with status '{record.status}'.", code="batch_not_cancellable"
                )
            try:
                cancelling = self._batches.request_cancel(record, now=int(self._clock()))
            except StaleState:
                record = self.get(principal, batch_id)
                continue
            notifications.status_changed(self._bus, cancelling, record.status)
            record = cancelling
        if record.runs:
            Runs(self._batches, self._bus, self._clock).cancel(self._batches.get_many(record.runs))
        return self._with_progress(record)


def _usd(amount: Decimal) -> str:
    """`amount` in dollars to the picodollar that budgets count in, at least to the cent: "$0.000044775",
    "$10.00"."""
    whole, _, cents = f"{money(amount).normalize():f}".partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"
