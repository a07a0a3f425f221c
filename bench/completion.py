"""Completion throughput: a provider output file translated, stored and priced, from a local stream.

Run as `python -m bench.completion FILE ENDPOINT`; prints one JSON result. The AWS emulator runs in
another process, so the peak RSS growth measured here is the completion step's own.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import orjson

from bench.common import batch_record, peak_rss_mb, put_input_file, reset_peak_rss, use_stack
from shared import ids
from shared.completion import Completion
from shared.files import encode_custom_ids, ids_key
from shared.jsonl import iter_line_blocks, iter_lines
from shared.providers.base import BatchProvider, ProviderStatus, ResultLine, SubmitRequest, Unreadable, Verbatim
from shared.providers.http import MAX_RESULT_LINE_BYTES
from shared.providers.openai_results import result_lines
from shared.routing import Deployment
from shared.runtime import runtime

READ_BYTES = 64 * 1024  # as httpx reads a provider download (httpcore reads 64 KiB at a time)


class LocalOutputProvider:
    """A provider whose results are an OpenAI output file on local disk, streamed and read as the openai adapter
    reads a download."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def chunks(self) -> Iterator[bytes]:
        with self._path.open("rb") as source:
            while chunk := source.read(READ_BYTES):
                yield chunk

    def submit(self, request: SubmitRequest, journal: object) -> None:
        raise NotImplementedError

    def refresh(self, refs: Mapping[str, str]) -> ProviderStatus:
        return ProviderStatus("completed")

    def cancel(self, refs: Mapping[str, str]) -> None:
        raise NotImplementedError

    def results(
        self, refs: Mapping[str, str], custom_ids: Sequence[str]
    ) -> Iterator[ResultLine | Verbatim | Unreadable]:
        return result_lines(iter_line_blocks(self.chunks(), max_bytes=MAX_RESULT_LINE_BYTES))

    def cleanup(self, refs: Mapping[str, str]) -> None:
        """Nothing to remove."""

    def close(self) -> None:
        """Nothing to close."""


class OneProvider:
    def __init__(self, provider: BatchProvider) -> None:
        self._provider = provider

    def get(self, deployment: Deployment) -> BatchProvider:
        return self._provider


def prepare(path: Path, owner: str = "master") -> tuple[Completion, str]:
    """A batch of `owner` waiting for completion whose provider output is `path`."""
    rt = runtime()
    deployment = rt.routing.deployments_for("gpt-4o-mini")[0]
    provider = LocalOutputProvider(path)
    custom_ids = [c for kept in provider.results({}, ()) if isinstance(kept, Verbatim) for c in kept.custom_ids]
    file_id = put_input_file(rt.file_store, model="gpt-4o-mini", line_count=len(custom_ids))
    rt.blobs.put(ids_key(file_id), encode_custom_ids(custom_ids, [0] * len(custom_ids)))
    record = batch_record(
        file_id, deployment, len(custom_ids), owner=owner, provider_refs={"batch_id": "local"}, rejected=0
    )
    rt.batch_store.admit(record, max_budget=None)
    started = rt.batch_store.start(record.id, now=record.created_at)
    rt.batch_store.end_run(
        started,
        "completed",
        errors=(),
        output_file_id=ids.new_id(ids.FILE),
        error_file_id=ids.new_id(ids.FILE),
        now=record.created_at,
    )
    return Completion(rt.batch_store, rt.blobs, rt.bus, OneProvider(provider), rt.routing), record.id


def floor_seconds(path: Path) -> float:
    """The CPU seconds of the least any completion does with `path`: its lines split and stored in S3 as they
    are, none read."""
    started = time.process_time()
    with runtime().blobs.writer("bench/floor.jsonl") as writer:
        for raw in iter_lines(LocalOutputProvider(path).chunks()):
            writer.write(raw)
    return time.process_time() - started


def timed(completion: Completion, batch_id: str) -> tuple[float, float]:
    """Complete `batch_id`: the wall and CPU seconds it took (CPU of every thread of this process)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    done = completion.complete(batch_id)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    assert done is not None and done.counts.failed == 0, done
    return seconds, cpu_seconds


def main(path: Path, endpoint: str) -> None:
    """Two completions of `path` in one process: the first as a new function's first invocation (its lazy
    imports and AWS clients made on the way), the second as a warm function's, whose throughput is the
    completion's own."""
    use_stack(endpoint)
    size = path.stat().st_size
    completion, batch_id = prepare(path)
    baseline = reset_peak_rss()
    _, cold_cpu_seconds = timed(completion, batch_id)
    rss_growth = peak_rss_mb() - baseline
    completion, batch_id = prepare(path)
    seconds, cpu_seconds = timed(completion, batch_id)
    floor = floor_seconds(path)
    print(
        orjson.dumps(
            {
                "bytes": size,
                "seconds": seconds,
                "mb_per_s": size / 1e6 / seconds,
                "cpu_seconds": cpu_seconds,
                "mb_per_cpu_s": size / 1e6 / cpu_seconds,
                "cold_mb_per_cpu_s": size / 1e6 / cold_cpu_seconds,
                "rss_growth_mb": rss_growth,
                "floor_mb_per_cpu_s": size / 1e6 / floor,
            }
        ).decode()
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
