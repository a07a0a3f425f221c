"""The S3 adapter: streamed reads, streamed multipart writes, presigned downloads.

Keys are built only from our own ids (`files/{file_id}`), never from user input.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import suppress
from typing import TYPE_CHECKING, cast
from urllib.parse import quote

from botocore.exceptions import ClientError

from shared.storage.ports import BlobSink
from shared.threads import Pool

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

PART_BYTES = 5 * 1024 * 1024  # the smallest part S3 takes (but the last): memory stays flat from 10 MB up
READ_BYTES = 1024 * 1024


def _bytes_like(buffer: bytearray) -> bytes:
    """botocore sends any bytes-like body; passing the part buffer itself saves a copy per part."""
    return cast(bytes, buffer)


class BlobWriter(BlobSink):
    """Writes one object from a stream: a single PUT when small, multipart when not; never the whole in memory.

    Bytes collect in a part-sized buffer; a full buffer uploads on a background thread while the next
    one fills, and comes back for reuse, so memory stays at two parts whatever the object's size. Use
    as a context manager: leaving it normally commits, leaving it by an exception aborts and leaves no
    object behind.
    """

    def __init__(self, client: S3Client, bucket: str, key: str, content_type: str) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._content_type = content_type
        self._buffer: bytearray | None = None
        self._fill = 0
        self._upload_id: str | None = None
        self._pool: Pool | None = None
        self._in_flight: Future[bytearray] | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self.bytes = 0

    def write(self, data: bytes) -> None:
        size = len(data)
        self.bytes += size
        if self._buffer is not None and self._fill + size < PART_BYTES:  # the common case: it fits
            self._buffer[self._fill : self._fill + size] = data
            self._fill += size
            return
        view = memoryview(data)
        while view:
            if self._buffer is None:
                self._buffer = bytearray(PART_BYTES)
            n = min(len(view), PART_BYTES - self._fill)
            self._buffer[self._fill : self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == PART_BYTES:
                self._flush_part(self._buffer)

    def _upload_part(self, number: int, body: bytearray) -> bytearray:
        assert self._upload_id is not None
        etag = self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=_bytes_like(body)
        )["ETag"]
        self._parts.append({"ETag": etag, "PartNumber": number})
        return body

    def _wait(self) -> bytearray | None:
        """Wait for the part in flight; returns its buffer for reuse."""
        if self._in_flight is None:
            return None
        done, self._in_flight = self._in_flight, None
        return done.result()

    def _flush_part(self, body: bytearray) -> None:
        if self._upload_id is None:
            self._upload_id = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ContentType=self._content_type
            )["UploadId"]
            self._pool = Pool(max_workers=1, thread_name_prefix="s3-part")
        assert self._pool is not None
        spare = self._wait()
        self._in_flight = self._pool.submit(self._upload_part, len(self._parts) + 1, body)
        self._buffer, self._fill = spare, 0

    def _rest(self) -> bytearray:
        return self._buffer[: self._fill] if self._buffer is not None else bytearray()

    def commit(self) -> None:
        if self._upload_id is None:
            body = _bytes_like(self._rest())
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=body, ContentType=self._content_type)
            return
        if self._fill:
            self._flush_part(self._rest())
        self._wait()
        assert self._pool is not None
        self._pool.shutdown()
        self._client.complete_multipart_upload(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
        )

    def abort(self) -> None:
        self._buffer, self._fill = None, 0
        if self._upload_id is None:
            return
        with suppress(Exception):
            self._wait()
        if self._pool is not None:
            self._pool.shutdown()
        self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
        self._upload_id = None


class S3Blobs:
    """The bucket that holds every file body, upload part and provider scratch object."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self.bucket = bucket

    def writer(self, key: str, content_type: str = "application/octet-stream") -> BlobWriter:
        return BlobWriter(self._client, self.bucket, key, content_type)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes | None:
        """A small object whole, or None if there is none."""
        try:
            return self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise

    def read(self, key: str, chunk_bytes: int = READ_BYTES) -> Iterator[bytes]:
        """Stream an object in chunks."""
        body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            yield from body.iter_chunks(chunk_bytes)
        finally:
            body.close()

    def delete(self, *keys: str) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )

    def keys(self, prefix: str) -> Iterator[str]:
        """The keys under `prefix`, in key order (S3 lists in UTF-8 binary order)."""
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]

    def presigned_get(self, key: str, *, filename: str, expires_in: int) -> str:
        """A short-lived URL that downloads the object as `filename`."""
        return self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key, "ResponseContentDisposition": attachment(filename)},
            ExpiresIn=expires_in,
        )


def attachment(filename: str) -> str:
    """A Content-Disposition naming any `filename` in ASCII, as a header must be (S3 cannot send a raw
    日本語 one): an ASCII stand-in, and the name itself in UTF-8 (RFC 6266 and 5987), which clients prefer."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
