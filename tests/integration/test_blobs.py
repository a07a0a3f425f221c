"""The S3 adapter's streamed writer: exact bytes through multipart, nothing left behind on abort."""

from __future__ import annotations

import boto3
import pytest

from shared.storage.blobs import PART_BYTES
from tests.integration.conftest import Stack


def test_streamed_writer_stores_exact_bytes_across_many_parts(stack: Stack) -> None:
    data = bytes(range(256)) * (PART_BYTES * 3 // 256 + 1000)
    with stack.rt.blobs.writer("test/large.bin") as writer:
        for start in range(0, len(data), 777_777):
            writer.write(data[start : start + 777_777])
    assert writer.bytes == len(data)
    assert b"".join(stack.rt.blobs.read("test/large.bin")) == data


def test_small_object_is_one_put(stack: Stack) -> None:
    with stack.rt.blobs.writer("test/small.txt") as writer:
        writer.write(b"hello ")
        writer.write(b"world")
    assert stack.rt.blobs.get("test/small.txt") == b"hello world"


def test_failure_mid_stream_leaves_no_object_and_no_open_upload(stack: Stack) -> None:
    with pytest.raises(RuntimeError), stack.rt.blobs.writer("test/broken.bin") as writer:
        writer.write(b"x" * (PART_BYTES * 2 + 10))
        raise RuntimeError("the stream broke")
    s3 = boto3.client("s3")
    bucket = stack.rt.settings.bucket_name
    assert stack.rt.blobs.get("test/broken.bin") is None
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
