"""Stored records as the OpenAI wire objects clients see."""

from __future__ import annotations

from decimal import Decimal

from shared import wire
from shared.batches import Estimate
from shared.records import BatchRecord, FileRecord, KeyRecord, SpendRow, UploadRecord


def file_object(record: FileRecord) -> wire.FileObject:
    return wire.FileObject(
        id=record.id,
        bytes=record.bytes,
        created_at=record.created_at,
        filename=record.filename,
        purpose=record.purpose,  # type: ignore[arg-type]  # validated on the way in
        expires_at=record.expires_at,
    )


def upload_object(record: UploadRecord, file: FileRecord | None = None) -> wire.Upload:
    return wire.Upload(
        id=record.id,
        bytes=record.bytes,
        created_at=record.created_at,
        expires_at=record.expires_at,
        filename=record.filename,
        purpose=record.purpose,
        status=record.status,  # type: ignore[arg-type]
        file=file_object(file) if file else None,
    )


def batch_object(record: BatchRecord) -> wire.Batch:
    usage = record.usage
    cost = record.cost
    return wire.Batch(
        id=record.id,
        endpoint=record.endpoint,
        errors=wire.BatchErrors(data=[wire.BatchError(**e.model_dump()) for e in record.errors])
        if record.errors
        else None,
        input_file_id=record.input_file_id,
        completion_window=record.completion_window,
        status=record.status,
        output_file_id=record.output_file_id,
        error_file_id=record.error_file_id,
        created_at=record.created_at,
        in_progress_at=record.in_progress_at,
        expires_at=record.expires_at,
        finalizing_at=record.finalizing_at,
        completed_at=record.completed_at,
        failed_at=record.failed_at,
        expired_at=record.expired_at,
        cancelling_at=record.cancelling_at,
        cancelled_at=record.cancelled_at,
        request_counts=wire.RequestCounts(**record.request_counts.model_dump()),
        metadata=record.metadata,
        model=record.model,
        usage=wire.BatchUsage(
            input_tokens=usage.input_tokens,
            input_tokens_details=wire.InputTokensDetails(cached_tokens=usage.cached_tokens),
            output_tokens=usage.output_tokens,
            output_tokens_details=wire.OutputTokensDetails(reasoning_tokens=usage.reasoning_tokens),
            total_tokens=usage.total_tokens,
        )
        if usage
        else None,
        cost=wire.Cost(
            value=float(cost.total),
            input=float(cost.input),
            output=float(cost.output),
            models={
                model: wire.ModelCost(value=float(part.total), input=float(part.input), output=float(part.output))
                for model, part in record.cost_by_model.items()
            }
            if record.cost_by_model
            else None,
        )
        if cost
        else None,
    )


def spend_row(row: SpendRow) -> wire.SpendRow:
    return wire.SpendRow(
        day=row.day,
        model=row.model,
        cost=float(row.cost),
        input_cost=float(row.input_cost),
        output_cost=float(row.output_cost),
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        requests=row.requests,
        batches=row.batches,
    )


def key_info(record: KeyRecord) -> wire.KeyInfo:
    return wire.KeyInfo(
        id=record.id,
        name=record.name,
        models=list(record.models) if record.models is not None else None,
        max_budget=float(record.max_budget) if record.max_budget is not None else None,
        spend=float(record.spend),
        reserved=float(record.reserved),
        created_at=record.created_at,
        revoked=record.revoked,
    )


def estimate_object(estimate: Estimate) -> wire.BatchEstimate:
    def cost(input_cost: Decimal, max_cost: Decimal) -> wire.EstimateCost:
        return wire.EstimateCost(input=float(input_cost), max=float(max_cost))

    models = estimate.models
    budget = estimate.budget
    return wire.BatchEstimate(
        input_file_id=estimate.input_file_id,
        model=",".join(models),
        requests=sum(m.requests for m in models.values()),
        input_tokens=sum(m.input_tokens for m in models.values()),
        max_output_tokens=sum(m.max_output_tokens for m in models.values()),
        cost=cost(
            sum((m.input_cost for m in models.values()), Decimal(0)),
            sum((m.max_cost for m in models.values()), Decimal(0)),
        ),
        budget=wire.EstimateBudget(
            max_budget=float(budget.max_budget),
            spend=float(budget.spend),
            reserved=float(budget.reserved),
            fits=budget.fits,
        )
        if budget
        else None,
        models={
            model: wire.ModelEstimate(
                requests=m.requests,
                input_tokens=m.input_tokens,
                max_output_tokens=m.max_output_tokens,
                cost=cost(m.input_cost, m.max_cost),
            )
            for model, m in models.items()
        }
        if len(models) > 1
        else None,
    )
