"""Large files through `batchgw dev` with the openai SDK: the Uploads API in, presigned redirects out."""

from __future__ import annotations

from pathlib import Path

import openai
import orjson
import pytest

from tests.e2e.conftest import wait_terminal

pytestmark = pytest.mark.e2e

PART_BYTES = 4_000_000  # under the 4 MiB request limit with the multipart envelope


def big_batch(path: Path, lines: int, model: str = "gpt-4o-mini") -> Path:
    pad = "x" * 1800
    with path.open("wb") as out:
        for i in range(lines):
            out.write(
                orjson.dumps(
                    {
                        "custom_id": f"r{i}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": {"model": model, "messages": [{"role": "user", "content": f"{i} {pad}"}]},
                    },
                    option=orjson.OPT_APPEND_NEWLINE,
                )
            )
    return path


def test_upload_file_chunked_then_batch_then_download_by_redirect(client: openai.OpenAI, tmp_path: Path) -> None:
    source = big_batch(tmp_path / "big.jsonl", 7000)
    size = source.stat().st_size
    assert size > 3 * PART_BYTES

    upload = client.uploads.upload_file_chunked(
        file=source, mime_type="application/jsonl", purpose="batch", part_size=PART_BYTES
    )

    assert upload.status == "completed" and upload.file is not None and upload.file.bytes == size
    # larger than a Lambda response: the SDK follows the 307 to a presigned S3 URL and gets the bytes
    assert client.files.content(upload.file.id).content == source.read_bytes()
    batch = client.batches.create(
        input_file_id=upload.file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_terminal(client, batch.id, timeout=120)
    assert done.status == "completed" and done.request_counts is not None and done.request_counts.completed == 7000
    output = client.files.content(done.output_file_id or "").content.splitlines()
    assert len(output) == 7000


def test_file_over_the_request_limit_is_413_pointing_to_uploads(client: openai.OpenAI, tmp_path: Path) -> None:
    source = big_batch(tmp_path / "too-big.jsonl", 2500)
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=source, purpose="batch")
    assert caught.value.status_code == 413 and "/v1/uploads" in caught.value.message


def test_bad_line_in_a_chunked_upload_names_its_line(client: openai.OpenAI, tmp_path: Path) -> None:
    source = big_batch(tmp_path / "bad.jsonl", 2500)
    with source.open("ab") as out:
        out.write(
            b'{"custom_id": "r0", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini"}}\n'
        )
    with pytest.raises(openai.BadRequestError) as caught:
        client.uploads.upload_file_chunked(
            file=source, mime_type="application/jsonl", purpose="batch", part_size=PART_BYTES
        )
    assert caught.value.code == "duplicate_custom_id" and "line 2501" in caught.value.message
