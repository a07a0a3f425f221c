"""`make bench`: run every benchmark, print a table of medians beside their targets, write bench/results.md.

Each measurement runs in a fresh process (so peak RSS is its own) against an AWS emulator in another
process. Files are generated on local disk first, outside the measured process.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.common import moto_server, write_lines

RESULTS = Path(__file__).resolve().parent / "results.md"
RUNS = 3


@dataclass(frozen=True)
class Row:
    name: str
    figure: str
    target: str
    met: bool


def run_json(*args: str) -> dict[str, Any]:
    # the functions' environment from template.yaml that bears on memory
    env = {**os.environ, "MALLOC_ARENA_MAX": "1"}
    done = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)


def completion(workdir: Path) -> list[Row]:
    files = {
        "100mb": write_lines(workdir / "out100.jsonl", kind="output", lines=50_000, total_mb=100),
        "10mb": write_lines(workdir / "out10.jsonl", kind="output", lines=20_000, total_mb=10),
        "200mb": write_lines(workdir / "out200.jsonl", kind="output", lines=20_000, total_mb=200),
    }
    results: dict[str, list[dict[str, Any]]] = {}
    for name in files:
        with moto_server() as endpoint:
            results[name] = [
                run_json("bench.completion", str(workdir / f"out{name.removesuffix('mb')}.jsonl"), endpoint)
                for _ in range(RUNS)
            ]
    cpu = median_of(results["100mb"], "mb_per_cpu_s")
    wall = median_of(results["100mb"], "mb_per_s")
    small, large = median_of(results["10mb"], "rss_growth_mb"), median_of(results["200mb"], "rss_growth_mb")
    return [
        Row(
            "completion, 50,000 lines / 101 MB: throughput per CPU second", f"{cpu:.0f} MB/s", ">= 150 MB/s", cpu >= 150
        ),
        Row(
            "completion, 50,000 lines / 101 MB: wall time (S3 emulated)",
            f"{wall:.0f} MB/s ({median_of(results['100mb'], 'seconds'):.2f} s)",
            "(for reference)",
            True,
        ),
        Row(
            "completion peak RSS growth, 10 MB vs 200 MB output",
            f"{small:.1f} MB vs {large:.1f} MB",
            "equal within 20 %",
            abs(large - small) <= 0.2 * small,
        ),
    ]


def poller(_: Path) -> list[Row]:
    with moto_server() as endpoint:
        result = run_json("bench.poller", endpoint, str(RUNS))
    seconds = statistics.median(result["seconds"])
    return [
        Row(
            f"poll of 1,000 active batches, provider answers in 100 ms ({result['concurrency']} at a time)",
            f"{seconds:.2f} s",
            "< 10 s",
            seconds < 10,
        ),
    ]


def validation(workdir: Path) -> list[Row]:
    files = {
        size: write_lines(workdir / f"in{size}.jsonl", kind="input", lines=50_000, total_mb=size)
        for size in (10, 100, 199)
    }
    results = {
        size: [run_json("bench.validation", str(workdir / f"in{size}.jsonl")) for _ in range(RUNS)] for size in files
    }
    speed = median_of(results[100], "mb_per_s")
    small, large = median_of(results[10], "rss_growth_mb"), median_of(results[199], "rss_growth_mb")
    return [
        Row("validation, 50,000 lines / 100 MB from a local stream", f"{speed:.0f} MB/s", ">= 150 MB/s", speed >= 150),
        Row(
            "validation peak RSS growth, 11 MB vs 199 MB file",
            f"{small:.1f} MB vs {large:.1f} MB",
            "< 64 MB",
            max(small, large) < 64,
        ),
    ]


def upload(workdir: Path) -> list[Row]:
    paths = [workdir / f"in{size}.jsonl" for size in (10, 10, 100, 199)]  # the first one warms the server up
    for size in (10, 100, 199):
        if not (workdir / f"in{size}.jsonl").exists():
            write_lines(workdir / f"in{size}.jsonl", kind="input", lines=50_000, total_mb=size)
    runs: list[list[dict[str, Any]]] = []
    for _ in range(RUNS):
        with moto_server() as endpoint:
            done = subprocess.run(
                [sys.executable, "-m", "bench.upload", endpoint, *map(str, paths)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append([orjson.loads(line) for line in done.stdout.splitlines()][1:])
    by_size = {size: [run[i] for run in runs] for i, size in enumerate((10, 100, 199))}
    seconds = median_of(by_size[100], "seconds")
    rss = {size: median_of(by_size[size], "server_rss_growth_mb") for size in by_size}
    return [
        Row(
            "upload of 100 MB / 50,000 lines via /v1/uploads with the SDK (4 MB parts), wall time",
            f"{seconds:.2f} s ({100 / seconds:.0f} MB/s)",
            "(for reference)",
            True,
        ),
        Row(
            "dev stack peak RSS growth during upload, 11 / 100 / 199 MB",
            " / ".join(f"{rss[s]:.1f}" for s in (10, 100, 199)) + " MB",
            "flat: no growth with file size",
            rss[199] <= 1.2 * rss[10] + 5,
        ),
    ]


def cold_start(workdir: Path) -> list[Row]:
    from bench.cold_start import MAX_MB, TARGET_MS, measure

    rows = []
    for function, ms, size in measure(workdir, RUNS):
        rows.append(
            Row(
                f"{function}: handler import from its built artifact",
                f"{ms:.0f} ms",
                f"<= {TARGET_MS[function]} ms",
                ms <= TARGET_MS[function],
            )
        )
        rows.append(Row(f"{function}: artifact + layer, unzipped", f"{size:.1f} MB", f"<= {MAX_MB} MB", size <= MAX_MB))
    return rows


def api_latency(_: Path) -> list[Row]:
    with moto_server() as endpoint:
        results = [run_json("bench.api_latency", endpoint, "1000") for _ in range(RUNS)]
    p50, p99 = median_of(results, "p50_ms"), median_of(results, "p99_ms")
    return [
        Row(
            "GET /v1/batches/{id} through the Lambda handler, 1,000 calls (virtual key)",
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
            "(for reference)",
            True,
        )
    ]


BENCHMARKS: dict[str, Callable[[Path], list[Row]]] = {
    "validation": validation,
    "upload": upload,
    "completion": completion,
    "poller": poller,
    "cold_start": cold_start,
    "api_latency": api_latency,
}


def main(selected: list[str]) -> int:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as workdir:
        for name, benchmark in BENCHMARKS.items():
            if selected and name not in selected:
                continue
            started = time.monotonic()
            print(f"running {name} ...", file=sys.stderr, flush=True)
            rows.extend(benchmark(Path(workdir)))
            print(f"  {name} took {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    table = ["| benchmark | median | target | met |", "| --- | --- | --- | --- |"]
    table += [f"| {r.name} | {r.figure} | {r.target} | {'yes' if r.met else 'NO'} |" for r in rows]
    header = (
        f"Medians of {RUNS} runs on {platform.machine()}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}. AWS is moto's server in its own process; measured processes run with "
        "the functions' `MALLOC_ARENA_MAX=1` from template.yaml. `make bench` regenerates this.\n"
    )
    text = "\n".join(table)
    print(text)
    if not selected:
        RESULTS.write_text(f"# Benchmark results\n\n{header}\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
