"""/v1/files: thin routes over shared.files (uploads live in uploads.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from shared import wire
from shared.errors import InvalidRequest
from shared.http.deps import CallerDep, FilesDep, PresentedKeyDep, RuntimeDep, authenticated
from shared.views import file_object

router = APIRouter(prefix="/v1", tags=["files"])

READ_CHUNK = 1024 * 1024
FileId = Annotated[str, Path(max_length=64)]


def _expires_after(form: dict[str, str]) -> int | None:
    """`expires_after[anchor]`/`[seconds]` (the OpenAI SDK) or `expires_after.anchor`/`.seconds` (curl docs)."""
    anchor = form.get("expires_after[anchor]") or form.get("expires_after.anchor")
    seconds = form.get("expires_after[seconds]") or form.get("expires_after.seconds")
    if anchor is None and seconds is None:
        return None
    try:
        parsed = wire.ExpiresAfter.model_validate({"anchor": anchor, "seconds": seconds})
    except ValueError:
        raise InvalidRequest(
            "expires_after needs anchor 'created_at' and seconds between 3600 and 2592000.",
            code="invalid_value",
            param="expires_after",
        ) from None
    return parsed.seconds


def _chunks(upload: UploadFile) -> Iterator[bytes]:
    while chunk := upload.file.read(READ_CHUNK):
        yield chunk


_FILE_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {
                            "type": "string",
                            "enum": ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"],
                        },
                        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                        "expires_after[seconds]": {"type": "integer", "minimum": 3600, "maximum": 2592000},
                    },
                }
            }
        },
    }
}


@router.post("/files", summary="Upload a file", openapi_extra=_FILE_FORM)
async def create_file(request: Request, caller: CallerDep, files: FilesDep) -> wire.FileObject:
    form = await request.form(max_files=1, max_fields=16)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("A 'file' part is required (multipart/form-data).", param="file", code="missing_file")
        purpose = form.get("purpose")
        if not isinstance(purpose, str) or not purpose:
            raise InvalidRequest("A 'purpose' field is required.", param="purpose", code="missing_purpose")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        record = await run_in_threadpool(
            files.store,
            caller.owner,
            purpose=purpose,
            filename=upload.filename,
            chunks=_chunks(upload),
            expires_after=_expires_after(fields),
        )
    finally:
        await form.close()
    return file_object(record)


@router.get("/files", summary="List files")
def list_files(
    caller: CallerDep,
    files: FilesDep,
    purpose: wire.StoredFilePurpose | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> wire.FileList:
    page = files.list(caller, purpose=purpose, after=after, limit=limit, ascending=order == "asc")
    return wire.FileList.of([file_object(r) for r in page.items], has_more=page.has_more)


@router.get("/files/{file_id}", summary="Retrieve a file")
def retrieve_file(file_id: FileId, secret: PresentedKeyDep, rt: RuntimeDep, files: FilesDep) -> wire.FileObject:
    # the key and the file in one request to the table
    with rt.file_store.reading_ahead(file_id):
        return file_object(files.get(authenticated(rt, secret), file_id))


@router.get(
    "/files/{file_id}/content",
    summary="Download a file's content",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, 307: {"description": "presigned S3 URL"}},
)
def file_content(file_id: FileId, secret: PresentedKeyDep, rt: RuntimeDep, files: FilesDep) -> Response:
    with rt.file_store.reading_ahead(file_id):  # the key and the file in one request to the table
        download = files.download(
            authenticated(rt, secret),
            file_id,
            inline_limit=rt.settings.max_response_bytes,
            url_seconds=rt.settings.presign_seconds,
        )
    if download.redirect_url is not None:
        return RedirectResponse(download.redirect_url, status_code=307)
    assert download.chunks is not None
    return StreamingResponse(
        download.chunks,
        media_type="application/octet-stream",
        headers={"content-length": str(download.record.bytes)},
    )


@router.delete("/files/{file_id}", summary="Delete a file")
def delete_file(file_id: FileId, caller: CallerDep, files: FilesDep) -> wire.FileDeleted:
    files.delete(caller, file_id)
    return wire.FileDeleted(id=file_id, deleted=True)
