"""/v1/batches: thin routes over shared.batches."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from shared import wire
from shared.http.deps import BatchesDep, CallerDep, PresentedKeyDep, RuntimeDep, authenticated
from shared.views import batch_object, estimate_object

router = APIRouter(prefix="/v1", tags=["batches"])

BatchId = Annotated[str, Path(max_length=64)]


@router.post("/batches", summary="Create a batch")
def create_batch(body: wire.CreateBatchRequest, caller: CallerDep, batches: BatchesDep) -> wire.Batch:
    return batch_object(batches.create(caller, body))


@router.post("/batches/estimate", summary="Estimate a batch's cost without creating it")
def estimate_batch(body: wire.EstimateRequest, caller: CallerDep, batches: BatchesDep) -> wire.BatchEstimate:
    return estimate_object(batches.estimate(caller, body))


@router.get("/batches/{batch_id}", summary="Retrieve a batch")
def retrieve_batch(batch_id: BatchId, secret: PresentedKeyDep, rt: RuntimeDep, batches: BatchesDep) -> wire.Batch:
    # the most frequent call (every client's polling loop): the key and the batch in one request to the table
    with rt.batch_store.reading_ahead(batch_id):
        caller = authenticated(rt, secret)
        return batch_object(batches.get(caller, batch_id))


@router.get("/batches", summary="List batches, newest first")
def list_batches(
    caller: CallerDep,
    batches: BatchesDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> wire.BatchList:
    page = batches.list(caller, after=after, limit=limit)
    return wire.BatchList.of([batch_object(r) for r in page.items], has_more=page.has_more)


@router.post("/batches/{batch_id}/cancel", summary="Cancel a batch")
def cancel_batch(batch_id: BatchId, caller: CallerDep, batches: BatchesDep) -> wire.Batch:
    return batch_object(batches.cancel(caller, batch_id))
