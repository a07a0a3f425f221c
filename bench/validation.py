"""Batch input validation from a local stream: MB/s and peak RSS growth.

Run as `python -m bench.validation FILE`; prints one JSON result.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from bench.common import peak_rss_mb, reset_peak_rss
from shared.jsonl import validate_batch_input

CHUNK_BYTES = 1024 * 1024


def chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_BYTES):
            yield chunk


def main(path: Path) -> None:
    size = path.stat().st_size
    baseline = reset_peak_rss()
    started = time.perf_counter()
    summary = validate_batch_input(chunks(path))
    seconds = time.perf_counter() - started
    print(
        orjson.dumps(
            {
                "bytes": size,
                "lines": summary.line_count,
                "seconds": seconds,
                "mb_per_s": size / 1e6 / seconds,
                "rss_growth_mb": peak_rss_mb() - baseline,
            }
        ).decode()
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
