"""Cold start proxies: each handler's import time from its built artifact, and each artifact's size.

Imports run as Lambda would run them (the function's build, then the layer, then only the runtime's
boto3), in a fresh `python -S -X importtime` each time.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

from batchgw import artifacts, template

# handler -> import-time target in ms (FastAPI alone takes about 400 ms on the 2-core dev machine)
TARGET_MS = {
    "PollerFunction": 400,
    "CompletionFunction": 600,
    "SubmitterFunction": 600,
    "SyncWorkerFunction": 600,
    "FilesApiFunction": 800,
    "BatchesApiFunction": 800,
}
MAX_MB = 50


def import_ms(function: template.Function, runtime: Path) -> float:
    module = function.handler.rpartition(".")[0]
    done = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-c", f"import {module}"],
        # as in Lambda with the template's defaults: LAMBDA_TASK_ROOT would make Powertools trace (importing
        # the X-Ray SDK) but EnableTracing is off, which sets POWERTOOLS_TRACE_DISABLED
        env={
            **artifacts.lambda_env(function.logical_id, runtime),
            "LAMBDA_TASK_ROOT": "/var/task",
            "POWERTOOLS_TRACE_DISABLED": "false" if template.value({"Ref": "EnableTracing"}) == "true" else "true",
        },
        capture_output=True,
        text=True,
        check=True,
    )
    # the last line is the module itself, with its cumulative time in microseconds
    return int(done.stderr.strip().splitlines()[-1].split("|")[1]) / 1000


def measure(workdir: Path, runs: int) -> list[tuple[str, float, float]]:
    """(function, median import ms, artifact MB with the layer) for every function."""
    artifacts.build(cached=False)
    runtime = artifacts.runtime_dir(workdir / "runtime")
    layer_mb = artifacts.size_bytes(artifacts.BUILD / artifacts.LAYER) / 1e6
    return [
        (
            function.logical_id,
            statistics.median(import_ms(function, runtime) for _ in range(runs)),
            artifacts.size_bytes(artifacts.BUILD / function.logical_id) / 1e6 + layer_mb,
        )
        for function in template.functions()
    ]
