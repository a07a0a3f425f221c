"""`make bench`: run every benchmark, print a table of medians beside their targets, write bench/results.md
with the running cost's line items below it.

Each measurement runs in a fresh process (so peak RSS is its own) against an AWS emulator in another
process. Files are generated on local disk first, outside the measured process. `python -m bench NAME...`
runs only those benchmarks and writes nothing (the cost's per-tick rows come from `poller` and `fanout`).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.common import moto_server, write_lines
from bench.poller import CHANGED_EVERY
from bench.prices import PER_UNIT, PRICES_DATE, priced

RESULTS = Path(__file__).resolve().parent / "results.md"
RUNS = 3
LAMBDA_VCPU = 512 / 1769  # Lambda's CPU share grows with memory: one vCPU at 1,769 MB
RSS_GROWTH_MB = 4
# the share of one core an idle `batchgw dev` and its emulator may use between them
IDLE_CORE_PCT = 15
LIFECYCLE_TARGET = 0.001
IDLE_TARGET = 1.0
TICK_TARGET = 0.002
METRIC_HOURS = PER_UNIT["metric_hours"][1]


@dataclass(frozen=True)
class Row:
    name: str
    figure: str
    target: str
    met: bool


@dataclass
class Context:
    """What the benchmarks share: a scratch directory, the poll ticks' usage the cost prices, the cost's notes."""

    workdir: Path
    tick_usage: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


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


def completion(ctx: Context) -> list[Row]:
    workdir = ctx.workdir
    files = {
        "100mb": write_lines(workdir / "out100.jsonl", kind="output", lines=50_000, total_mb=100),
        "10mb": write_lines(workdir / "out10.jsonl", kind="output", lines=20_000, total_mb=10),
        "200mb": write_lines(workdir / "out200.jsonl", kind="output", lines=20_000, total_mb=200),
    }
    results: dict[str, list[dict[str, Any]]] = {}
    for name in files:
        with moto_server() as emulator:
            results[name] = [
                run_json("bench.completion", str(workdir / f"out{name.removesuffix('mb')}.jsonl"), emulator.url)
                for _ in range(RUNS)
            ]
    cpu, floor = median_of(results["100mb"], "mb_per_cpu_s"), median_of(results["100mb"], "floor_mb_per_cpu_s")
    wall = median_of(results["100mb"], "mb_per_s")
    small, large = median_of(results["10mb"], "rss_growth_mb"), median_of(results["200mb"], "rss_growth_mb")
    cold = median_of(results["100mb"], "cold_mb_per_cpu_s")
    return [
        Row(
            "completion, 50,000 lines / 101 MB: throughput per CPU second, a warm function",
            f"{cpu:.0f} MB/s",
            ">= 250 MB/s",
            cpu >= 250,
        ),
        Row(
            "the same, a new function's first completion (its lazy imports and AWS clients made on the way)",
            f"{cold:.0f} MB/s",
            "(for reference)",
            True,
        ),
        Row(
            "completion's floor on this machine: the same file's lines split and stored in S3 as they are, none "
            "read, per CPU second",
            f"{floor:.0f} MB/s",
            "(for reference: no completion is faster)",
            True,
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


def tick(result: dict[str, Any], key: str) -> float:
    return statistics.median(float(t[key]) for t in result["ticks"])


def poller(ctx: Context) -> list[Row]:
    results = {}
    for batches, linear in ((1_000, True), (10_000, True), (1_000, False)):
        with moto_server(stock=not linear) as emulator:
            results[batches, linear] = run_json(
                "bench.poller", emulator.url, str(emulator.pid), str(batches), str(RUNS)
            )
    for batches in (1_000, 10_000):
        ctx.tick_usage[f"{batches:,}"] = results[batches, True]["tick_usage"]
    big, stock = results[10_000, True], results[1_000, False]
    wall, moto, cpu = tick(big, "seconds"), tick(big, "emulator_cpu_seconds"), tick(big, "cpu_seconds")
    lists, retrieves, writes = tick(big, "list"), tick(big, "retrieve"), tick(big, "dynamodb_writes")
    moved = 10_000 // CHANGED_EVERY
    return [
        Row(
            "poll of 10,000 running batches on one deployment, list and retrieve in 100 ms: one tick, less the "
            "emulator's CPU",
            f"{wall - moto:.1f} s ({wall:.1f} s wall, moto {moto:.1f} s CPU)",
            "<= 10 s",
            wall - moto <= 10,
        ),
        Row(
            "poll of 10,000: provider calls per tick",
            f"{lists + retrieves:.0f} ({lists:.0f} list pages, {retrieves:.0f} retrieves)",
            "<= 150",
            lists + retrieves <= 150,
        ),
        Row(
            "poll of 10,000: DynamoDB writes per tick (the provider moved one batch in ten)",
            f"{writes:.0f}",
            f"only what changed: {moved:,}",
            writes == moved,
        ),
        Row(
            "poll of 10,000: batchgw's own CPU per tick",
            f"{cpu:.1f} s (~{cpu / LAMBDA_VCPU:.0f} s on a 512 MB Lambda, {LAMBDA_VCPU:.2f} vCPU)",
            "(for reference)",
            True,
        ),
        Row(
            "poll of 1,000 on stock moto 5.2 (the other rows: bench/emulator.py), one tick",
            f"{tick(stock, 'seconds'):.1f} s wall, moto {tick(stock, 'emulator_cpu_seconds'):.1f} s CPU",
            "(for reference)",
            True,
        ),
    ]


def fanout(ctx: Context) -> list[Row]:
    with moto_server() as emulator:
        result = run_json("bench.fanout", emulator.url, str(emulator.pid), "8", "12500", str(RUNS))
    ctx.tick_usage["100,000"] = {
        k: result["scheduled_usage"].get(k, 0) + result["invocations"] * result["deployment_usage"].get(k, 0)
        for k in result["scheduled_usage"].keys() | result["deployment_usage"].keys()
    }
    scheduled, handed, complete = result["scheduled"], result["deployment"], result["complete_deployment"]

    def median(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(float(r[key]) for r in runs)

    first, second = median(scheduled, "seconds"), median(handed, "seconds")
    first_moto, second_moto = median(scheduled, "emulator_cpu_seconds"), median(handed, "emulator_cpu_seconds")
    deferred = max(r["outcomes"].get("deferred", 0) for r in handed)
    total = first - first_moto + second - second_moto
    return [
        Row(
            "fan-out, 100,000 running across 8 deployments: invocations per tick",
            f"1 scheduled + {result['invocations']} from the queue (one per deployment), in parallel",
            "(for reference)",
            True,
        ),
        Row(
            "fan-out: the scheduled invocation (reads 5,001 items to know, sends one message per deployment)",
            f"{first:.1f} s wall, moto {first_moto:.1f} s CPU, batchgw {median(scheduled, 'cpu_seconds'):.1f} s CPU",
            "(for reference)",
            True,
        ),
        Row(
            f"fan-out: one deployment's invocation, its {result['batches'] // result['invocations']:,} batches "
            "(each of the 8 alike)",
            f"{second:.1f} s wall, moto {second_moto:.1f} s CPU, batchgw {median(handed, 'cpu_seconds'):.1f} s CPU; "
            f"{median(handed, 'list'):.0f} list pages + {median(handed, 'retrieve'):.0f} retrieves, "
            f"{median(handed, 'dynamodb_writes'):.0f} writes, {deferred} deferred",
            "(for reference)",
            True,
        ),
        Row(
            "fan-out: one deployment's invocation polling all of its batches (deadline lifted), provider calls and "
            "writes",
            f"{complete['list']} list pages + {complete['retrieve']} retrieves, {complete['dynamodb_writes']} writes",
            "(for reference)",
            True,
        ),
        Row(
            "fan-out: 100,000 polled in one tick (scheduled, then the deployments in parallel), less the emulator's "
            "CPU",
            f"{total:.1f} s, {deferred} batches deferred",
            "<= 60 s, none deferred",
            total <= 60 and deferred == 0,
        ),
    ]


def validation(ctx: Context) -> list[Row]:
    workdir = ctx.workdir
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


def upload(ctx: Context) -> list[Row]:
    workdir = ctx.workdir
    shapes = {  # file: (MB, lines); 11 MB of a tenth of the lines shows what a line holds
        "in10-few.jsonl": (10, 5_000),
        "in10.jsonl": (10, 50_000),
        "in100.jsonl": (100, 50_000),
        "in199.jsonl": (199, 50_000),
    }
    for name, (size, lines) in shapes.items():
        if not (workdir / name).exists():
            write_lines(workdir / name, kind="input", lines=lines, total_mb=size)
    measured = list(shapes)
    runs: list[list[dict[str, Any]]] = []
    for _ in range(RUNS):
        with moto_server() as emulator:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.upload",
                    emulator.url,
                    *(str(workdir / n) for n in ["in10.jsonl", *measured]),  # the first warms the server up
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append([orjson.loads(line) for line in done.stdout.splitlines()][1:])
    by_name = {name: [run[i] for run in runs] for i, name in enumerate(measured)}
    seconds = median_of(by_name["in100.jsonl"], "seconds")
    rss = {name: median_of(by_name[name], "server_rss_growth_mb") for name in by_name}
    per_line = (rss["in10.jsonl"] - rss["in10-few.jsonl"]) * 1e6 / 45_000
    return [
        Row(
            "upload of 100 MB / 50,000 lines via /v1/uploads with the SDK (4 MB parts), wall time",
            f"{seconds:.2f} s ({100 / seconds:.0f} MB/s)",
            "(for reference)",
            True,
        ),
        Row(
            "dev stack peak RSS growth during upload, 11 / 100 / 199 MB of 50,000 lines",
            " / ".join(f"{rss[n]:.1f}" for n in measured[1:]) + " MB",
            "flat: no growth with file size",
            rss["in199.jsonl"] <= 1.2 * rss["in10.jsonl"] + 5,
        ),
        Row(
            "dev stack peak RSS growth during upload, per line: 11 MB of 50,000 lines less 11 MB of 5,000",
            f"{per_line:.0f} bytes a line ({rss['in10-few.jsonl']:.1f} vs {rss['in10.jsonl']:.1f} MB)",
            "<= 512 bytes a line (the custom_ids kept to check they are unique)",
            per_line <= 512,
        ),
    ]


def cold_start(ctx: Context) -> list[Row]:
    from bench.cold_start import MAX_MB, TARGET_MS, measure

    rows = []
    for function, ms, size in measure(ctx.workdir, RUNS):
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


def api_latency(ctx: Context) -> list[Row]:
    runs = []
    for _ in range(RUNS):
        with moto_server() as emulator:
            runs.append(run_json("bench.api_latency", emulator.url, str(emulator.pid), "1000"))
    own_idle, aws_idle = (
        median_of([r["idle"] for r in runs], "batchgw_pct"),
        median_of([r["idle"] for r in runs], "emulator_pct"),
    )
    rows = [
        Row(
            "`batchgw dev` idle, its schedule off: share of a core it and the emulator use while delivery workers wait",
            f"{own_idle:.0f}% + {aws_idle:.0f}% (batchgw dev + moto)",
            f"<= {IDLE_CORE_PCT}% together",
            own_idle + aws_idle <= IDLE_CORE_PCT,
        )
    ]
    for name, label in (("completed", "a completed batch"), ("running", "a running batch")):
        series = [r[name] for r in runs]
        p50, p99 = median_of(series, "p50_ms"), median_of(series, "p99_ms")
        moto, own = median_of(series, "emulator_ms"), median_of(series, "batchgw_ms")
        growth = max(r["rss_after_mb"] - r["rss_before_mb"] for r in series)
        rows += [
            Row(
                f"GET /v1/batches/{{id}} through `batchgw dev` over HTTP, {label}, 1,000 calls (virtual key): "
                "p99 less the emulator's CPU per call",
                f"{p99 - moto:.1f} ms (p50 {p50:.1f} ms, p99 {p99:.1f} ms wall; moto {moto:.1f} ms CPU a call, "
                f"batchgw dev {own:.1f} ms)",
                "<= 25 ms",
                p99 - moto <= 25,
            ),
            Row(
                f"`batchgw dev` resident memory over those 1,000 calls ({label})",
                f"+{growth:.1f} MB ({series[0]['rss_before_mb']:.0f} MB)",
                f"flat: <= +{RSS_GROWTH_MB} MB",
                growth <= RSS_GROWTH_MB,
            ),
        ]
    return rows


def cost(ctx: Context) -> list[Row]:
    with moto_server() as emulator:
        result = run_json("bench.cost", emulator.url)
    lifecycles, idle = result["lifecycles"], result["idle_month"]
    rows = []
    for requests, lifecycle in lifecycles.items():
        items = lifecycle["items"]
        optional = items.get(METRIC_HOURS, 0.0)
        total = sum(items.values()) - optional
        target = f"<= {dollars(LIFECYCLE_TARGET)}" if requests == "1000" else "(for reference)"
        rows.append(
            Row(
                f"AWS cost of one batch's lifecycle, {int(requests):,} requests, a 30-minute provider (30 ticks), "
                "before the optional custom metrics",
                f"{dollars(total)} (+{dollars(optional)} with custom metrics)",
                target,
                requests != "1000" or total <= LIFECYCLE_TARGET,
            )
        )
    running = sum(idle["items"].values()) + sum(f["dollars"] for f in idle["fixed"].values() if not f["parameter"])
    optional_fixed = {f["parameter"]: f["dollars"] for f in idle["fixed"].values() if f["parameter"]}
    rows += [
        Row(
            "AWS cost of an idle month (the schedule ticking, nothing active), before the optional fixed items",
            dollars(running),
            f"<= {dollars(IDLE_TARGET)}",
            running <= IDLE_TARGET,
        ),
        Row(
            "optional fixed items a month, each off with its template parameter",
            ", ".join(f"{name} {dollars(d)}" for name, d in optional_fixed.items()),
            "(for reference)",
            True,
        ),
    ]
    for active, usage in ctx.tick_usage.items():
        dollars_per_tick = sum(priced(usage).values())
        target_met = active != "10,000" or dollars_per_tick <= TICK_TARGET
        rows.append(
            Row(
                f"AWS cost per tick at {active} running batches (one in ten moved since the last tick)",
                dollars(dollars_per_tick),
                f"<= {dollars(TICK_TARGET)}" if active == "10,000" else "(for reference)",
                target_met,
            )
        )
    ctx.notes.extend(breakdown(result, ctx.tick_usage))
    return rows


def breakdown(result: dict[str, Any], ticks: dict[str, dict[str, float]]) -> list[str]:
    """Where each cent goes: the line items of a 1,000-request lifecycle, an idle month and a 10,000-batch tick."""
    lifecycle, idle = result["lifecycles"]["1000"], result["idle_month"]
    lines = [f"Prices: us-east-1 on-demand, written down {PRICES_DATE} (bench/prices.py).", ""]
    lines += ["One batch of 1,000 requests, 30 ticks (bench/cost.py):", "", "| item | dollars |", "| --- | --- |"]
    lines += [f"| {item} | {dollars(d)} |" for item, d in lifecycle["items"].items() if d]
    by_function = ", ".join(f"{f.removesuffix('Function')} {dollars(d)}" for f, d in lifecycle["by_function"].items())
    lines += ["", f"By function: {by_function}.", ""]
    lines += ["An idle month:", "", "| item | dollars |", "| --- | --- |"]
    lines += [f"| {item} | {dollars(d)} |" for item, d in idle["items"].items() if d]
    lines += [
        f"| {name} ({f['count']}{', off with ' + f['parameter'] + '=false' if f['parameter'] else ''}) "
        f"| {dollars(f['dollars'])} |"
        for name, f in idle["fixed"].items()
    ]
    for active in ("10,000", "100,000"):
        if active in ticks:
            lines += ["", f"One tick at {active} running batches:", "", "| item | dollars |", "| --- | --- |"]
            items = sorted(priced(ticks[active]).items(), key=lambda item: -item[1])
            lines += [f"| {item} | {dollars(d)} |" for item, d in items if d]
    return lines


def dollars(figure: float) -> str:
    """Cents to two places; less than a cent to three significant digits, never in scientific notation."""
    if figure >= 0.01 or figure <= 0:
        return f"${figure:.2f}"
    return f"${figure:.{2 - math.floor(math.log10(figure))}f}"


BENCHMARKS: dict[str, Callable[[Context], list[Row]]] = {
    "validation": validation,
    "upload": upload,
    "completion": completion,
    "poller": poller,
    "fanout": fanout,
    "cost": cost,
    "cold_start": cold_start,
    "api_latency": api_latency,
}


def main(selected: list[str]) -> int:
    rows: list[Row] = []
    loads: list[float] = []  # the machine's load average as each benchmark starts: others share its 2 cores
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as workdir:
        ctx = Context(Path(workdir))
        for name, benchmark in BENCHMARKS.items():
            if selected and name not in selected:
                continue
            started = time.monotonic()
            print(f"running {name} ...", file=sys.stderr, flush=True)
            loads.append(os.getloadavg()[0])
            rows.extend(benchmark(ctx))
            print(f"  {name} took {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    table = ["| benchmark | median | target | met |", "| --- | --- | --- | --- |"]
    table += [f"| {r.name} | {r.figure} | {r.target} | {'yes' if r.met else 'NO'} |" for r in rows]
    header = (
        f"Medians of {RUNS} runs on {platform.machine()}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}, in {(time.monotonic() - began) / 60:.0f} minutes, with a load average of "
        f"{statistics.mean(loads):.1f} on the machine's {os.cpu_count()} cores. AWS is moto's server in "
        "its own process, as `batchgw dev` runs it, with bench/emulator.py's two DynamoDB hot paths made linear "
        "(but the stock moto row); measured processes run with the functions' `MALLOC_ARENA_MAX=1` from template.yaml. "
        "`make bench` regenerates this.\n"
    )
    text = "\n".join(table)
    print(text)
    notes = "\n".join(ctx.notes)
    if ctx.notes:
        print(notes)
    if not selected:
        RESULTS.write_text(f"# Benchmark results\n\n{header}\n{text}\n\n## Where each cent goes\n\n{notes}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
