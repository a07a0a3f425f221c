"""Custom metrics cost nothing when they are off: no function prints a metric, its cold start's included."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import orjson

# the functions that emit metrics, each invoked once in a fresh interpreter with its domain object stubbed
# (Powertools counts a cold start once the handler has returned)
PROBE = """
from collections import Counter
from types import SimpleNamespace
import importlib
from aws_lambda_powertools.metrics.provider import cold_start

context = SimpleNamespace(function_name="probe", memory_limit_in_mb=128, aws_request_id="r",
                          invoked_function_arn="arn:aws:lambda:us-east-1:1:function:probe",
                          get_remaining_time_in_millis=lambda: 60_000)
ended = {"detail-type": "Batch Ended", "source": "batchgw", "detail": {"batch_id": "batch_" + "0" * 28}}
calls = {
    "poller": ({"time": "2026-12-01T00:00:00Z"}, {"poller": SimpleNamespace(tick=lambda deadline: Counter())}),
    "submitter": (ended, {"submission": SimpleNamespace(submit=lambda batch_id: None)}),
    "completion": (ended, {"completion": SimpleNamespace(complete=lambda batch_id, without_results: None)}),
    "sync_worker": ({"Records": []}, {}),
}
for name, (event, stubs) in calls.items():
    app = importlib.import_module(f"functions.{name}.app")
    cold_start.is_cold_start = True  # in Lambda each function runs in processes of its own
    app.handler(event, context, **stubs)
"""


def emitted(metrics_disabled: str) -> Counter[str]:
    """The metrics (by name) that the four functions print, with POWERTOOLS_METRICS_DISABLED as given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_SAM"))}
    env |= {"POWERTOOLS_METRICS_DISABLED": metrics_disabled, "POWERTOOLS_LOG_LEVEL": "CRITICAL"}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    names: Counter[str] = Counter()
    for line in done.stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            for directive in orjson.loads(line)["_aws"]["CloudWatchMetrics"]:
                names.update(metric["Name"] for metric in directive["Metrics"])
    return names


def test_functions_print_no_metric_when_metrics_are_off() -> None:
    # the template's EnableCustomMetrics=false: a ColdStart line would still be a custom metric of its own per
    # function, billed for every hour in which the function starts cold
    assert emitted("true") == Counter()


def test_each_function_counts_its_cold_start_when_metrics_are_on() -> None:
    assert emitted("false")["ColdStart"] == 4
