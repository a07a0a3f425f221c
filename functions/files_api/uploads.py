"""/v1/uploads: OpenAI's Uploads API for files larger than one request can carry. Thin routes over shared.uploads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from shared import wire
from shared.errors import InvalidRequest
from shared.http.deps import CallerDep, UploadsDep
from shared.records import UploadRecord
from shared.uploads import Uploads
from shared.views import upload_object

router = APIRouter(prefix="/v1", tags=["uploads"])

UploadId = Annotated[str, Path(max_length=64)]
_PART_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def _view(uploads: Uploads, record: UploadRecord) -> wire.Upload:
    return upload_object(record, uploads.file_of(record))


@router.post("/uploads", summary="Create an upload")
def create_upload(body: wire.CreateUploadRequest, caller: CallerDep, uploads: UploadsDep) -> wire.Upload:
    return _view(uploads, uploads.create(caller, body))


@router.post("/uploads/{upload_id}/parts", summary="Add a part to an upload", openapi_extra=_PART_FORM)
async def add_part(upload_id: UploadId, request: Request, caller: CallerDep, uploads: UploadsDep) -> wire.UploadPart:
    async with request.form(max_files=1, max_fields=4) as form:
        data = form.get("data")
        if not isinstance(data, UploadFile):
            raise InvalidRequest("A 'data' part is required (multipart/form-data).", param="data", code="missing_data")
        content = await data.read()
    part_id, created_at = await run_in_threadpool(uploads.add_part, caller, upload_id, content)
    return wire.UploadPart(id=part_id, created_at=created_at, upload_id=upload_id)


@router.post("/uploads/{upload_id}/complete", summary="Complete an upload into a file")
def complete_upload(
    upload_id: UploadId, body: wire.CompleteUploadRequest, caller: CallerDep, uploads: UploadsDep
) -> wire.Upload:
    return _view(uploads, uploads.complete(caller, upload_id, body.part_ids, body.md5))


@router.post("/uploads/{upload_id}/cancel", summary="Cancel an upload")
def cancel_upload(upload_id: UploadId, caller: CallerDep, uploads: UploadsDep) -> wire.Upload:
    return _view(uploads, uploads.cancel(caller, upload_id))
