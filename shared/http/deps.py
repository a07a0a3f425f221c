"""FastAPI dependencies: the caller's principal and the use cases, built from the cached context."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from shared.auth import Principal, authenticate, presented_key
from shared.batches import Batches
from shared.context import Context, get_context
from shared.files import Files
from shared.keys import Keys
from shared.secret_refs import resolve_secret
from shared.uploads import Uploads

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <key>")
_api_key = APIKeyHeader(name="api-key", auto_error=False, description="api-key: <key>")


def context() -> Context:
    return get_context()


def principal(
    ctx: Annotated[Context, Depends(context)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> Principal:
    """The caller, from `Authorization: Bearer <key>` or `api-key: <key>` (401 otherwise)."""
    authorization = f"{bearer.scheme} {bearer.credentials}" if bearer else None
    secret = presented_key(authorization, api_key)
    return authenticate(secret, master_key=resolve_secret(ctx.settings.master_key_ref), table=ctx.table)


def files(ctx: Annotated[Context, Depends(context)]) -> Files:
    return Files(ctx.table, ctx.blobs)


def batches(ctx: Annotated[Context, Depends(context)], files: Annotated[Files, Depends(files)]) -> Batches:
    return Batches(ctx.table, files, ctx.bus, ctx.routing)


def keys(ctx: Annotated[Context, Depends(context)]) -> Keys:
    return Keys(ctx.table)


def uploads(ctx: Annotated[Context, Depends(context)], files: Annotated[Files, Depends(files)]) -> Uploads:
    return Uploads(ctx.table, ctx.blobs, files)


CallerDep = Annotated[Principal, Depends(principal)]
KeysDep = Annotated[Keys, Depends(keys)]
UploadsDep = Annotated[Uploads, Depends(uploads)]
FilesDep = Annotated[Files, Depends(files)]
BatchesDep = Annotated[Batches, Depends(batches)]
ContextDep = Annotated[Context, Depends(context)]
