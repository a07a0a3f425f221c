"""/admin: virtual keys, for the master key only. Thin routes over shared.keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from shared import wire
from shared.http.deps import CallerDep, KeysDep
from shared.views import key_info, spend_row

router = APIRouter(prefix="/admin", tags=["admin"])

KeyId = Annotated[str, Path(max_length=64)]


@router.post("/keys", summary="Create a virtual key (the secret is shown only here)")
def create_key(caller: CallerDep, keys: KeysDep, body: wire.CreateKeyRequest | None = None) -> wire.KeyCreated:
    body = body or wire.CreateKeyRequest()  # every field is optional, so is the body: `curl -X POST` makes a key
    created = keys.create(caller, name=body.name, models=body.models, max_budget=body.max_budget)
    return wire.KeyCreated(**key_info(created.record).model_dump(), key=created.secret)


@router.get("/keys", summary="List virtual keys, newest first (no secrets)")
def list_keys(
    caller: CallerDep,
    keys: KeysDep,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
) -> wire.KeyList:
    page = keys.list(caller, after=after, limit=limit)
    return wire.KeyList.of([key_info(r) for r in page.items], has_more=page.has_more)


@router.get("/keys/{key_id}", summary="Retrieve a virtual key with its spend")
def retrieve_key(key_id: KeyId, caller: CallerDep, keys: KeysDep) -> wire.KeyInfo:
    return key_info(keys.get(caller, key_id))


@router.delete("/keys/{key_id}", summary="Revoke a virtual key")
def revoke_key(key_id: KeyId, caller: CallerDep, keys: KeysDep) -> wire.KeyDeleted:
    keys.revoke(caller, key_id)
    return wire.KeyDeleted(id=key_id, deleted=True)


@router.get("/keys/{key_id}/spend", summary="A key's spend per day and model")
def key_spend(key_id: KeyId, caller: CallerDep, keys: KeysDep) -> wire.SpendList:
    return wire.SpendList(data=[spend_row(row) for row in keys.spend(caller, key_id)])
