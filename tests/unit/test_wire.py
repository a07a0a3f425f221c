"""Our wire objects parse as the openai SDK's own types, with every field the SDK knows."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import openai
import orjson

from shared.records import BatchRecord, Cost, Counts, ErrorEntry, FileRecord, UploadRecord, Usage
from shared.views import batch_object, file_object, upload_object


def as_json(model: object) -> dict[str, Any]:
    assert hasattr(model, "model_dump_json")
    data: dict[str, Any] = orjson.loads(model.model_dump_json())
    return data


def batch_record(**overrides: object) -> BatchRecord:
    values: dict[str, Any] = {
        "id": "batch_019aa1b2c3d40000a1b2c3d4e5f6",
        "owner": "master",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-019aa1b2c3d40000a1b2c3d4e5f6",
        "created_at": 1_795_000_000,
        "expires_at": 1_795_086_400,
        "model": "gpt-4o-mini",
        "deployment": "mock-1",
        "request_counts": Counts(total=3),
    }
    return BatchRecord(**(values | overrides))


def test_new_batch_parses_as_openai_batch_with_every_field_present() -> None:
    body = as_json(batch_object(batch_record()))
    parsed = openai.types.Batch.model_validate(body)
    assert parsed.status == "validating" and parsed.request_counts is not None
    assert set(openai.types.Batch.model_fields) <= set(body)
    assert body["cost"] is None and body["usage"] is None and body["errors"] is None
    assert parsed.model_extra == {"cost": None}


def test_finished_batch_carries_usage_errors_and_cost() -> None:
    record = batch_record(
        status="completed",
        completed_at=1_795_000_100,
        usage=Usage(input_tokens=100, cached_tokens=20, output_tokens=50, reasoning_tokens=5),
        cost=Cost(input=Decimal("0.0000075"), output=Decimal("0.000015")),
        errors=(ErrorEntry(code="x", message="y", line=3),),
        request_counts=Counts(total=3, completed=2, failed=1),
    )
    body = as_json(batch_object(record))
    parsed = openai.types.Batch.model_validate(body)
    assert parsed.usage is not None and parsed.usage.total_tokens == 150
    assert parsed.usage.input_tokens_details.cached_tokens == 20
    assert parsed.usage.output_tokens_details.reasoning_tokens == 5
    assert parsed.errors is not None and parsed.errors.data is not None and parsed.errors.data[0].line == 3
    assert body["cost"] == {"value": 0.0000225, "currency": "usd", "input": 0.0000075, "output": 0.000015}


def test_file_object_parses_as_openai_file_object() -> None:
    record = FileRecord(
        id="file-1",
        owner="o",
        purpose="batch_output",
        filename="out.jsonl",
        bytes=10,
        created_at=1,
        expires_at=2,
        s3_key="files/file-1",
    )
    parsed = openai.types.FileObject.model_validate(as_json(file_object(record)))
    assert parsed.purpose == "batch_output" and parsed.status == "processed" and parsed.expires_at == 2


def test_upload_parses_as_openai_upload() -> None:
    record = UploadRecord(
        id="upload_1",
        owner="o",
        bytes=10,
        filename="a.jsonl",
        mime_type="text/jsonl",
        purpose="batch",
        created_at=1,
        expires_at=3601,
    )
    parsed = openai.types.Upload.model_validate(as_json(upload_object(record)))
    assert parsed.status == "pending" and parsed.file is None
