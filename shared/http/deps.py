"""FastAPI dependencies: the caller's principal and the use cases, composed from the cached runtime."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from shared.auth import Principal, authenticate, presented_key
from shared.batches import Batches
from shared.files import Files
from shared.keys import Keys
from shared.runtime import Runtime, runtime
from shared.secret_refs import resolve_secret
from shared.uploads import Uploads

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <key>")
_api_key = APIKeyHeader(name="api-key", auto_error=False, description="api-key: <key>")


async def presented(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> str:
    """The key from `Authorization: Bearer <key>` or `api-key: <key>` (401 if neither), not yet checked. It does
    no I/O, so it runs on the event loop: a plain function would be handed to a worker thread on every request."""
    authorization = f"{bearer.scheme} {bearer.credentials}" if bearer else None
    return presented_key(authorization, api_key)


def authenticated(rt: Runtime, secret: str) -> Principal:
    """The caller a presented key stands for (401 for an unknown or revoked key)."""
    return authenticate(secret, master_key=resolve_secret(rt.settings.master_key_ref), keys=rt.key_store)


def principal(rt: Annotated[Runtime, Depends(runtime)], secret: Annotated[str, Depends(presented)]) -> Principal:
    """The caller, from `Authorization: Bearer <key>` or `api-key: <key>` (401 otherwise)."""
    return authenticated(rt, secret)


def files(rt: Annotated[Runtime, Depends(runtime)]) -> Files:
    return Files(rt.file_store, rt.blobs)


def batches(rt: Annotated[Runtime, Depends(runtime)], files: Annotated[Files, Depends(files)]) -> Batches:
    return Batches(rt.batch_store, rt.key_store, rt.claim_store, files, rt.bus, rt.routing)


def keys(rt: Annotated[Runtime, Depends(runtime)]) -> Keys:
    return Keys(rt.key_store)


def uploads(rt: Annotated[Runtime, Depends(runtime)], files: Annotated[Files, Depends(files)]) -> Uploads:
    return Uploads(rt.upload_store, rt.file_store, rt.blobs, files)


CallerDep = Annotated[Principal, Depends(principal)]
PresentedKeyDep = Annotated[str, Depends(presented)]
KeysDep = Annotated[Keys, Depends(keys)]
UploadsDep = Annotated[Uploads, Depends(uploads)]
FilesDep = Annotated[Files, Depends(files)]
BatchesDep = Annotated[Batches, Depends(batches)]
RuntimeDep = Annotated[Runtime, Depends(runtime)]
