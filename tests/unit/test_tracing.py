"""Tracing costs nothing when it is off: no X-Ray SDK in any function's cold start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

FUNCTIONS = ("batches_api", "files_api", "submitter", "poller", "completion", "sync_worker")
PROBE = f"""
import sys
for name in {FUNCTIONS!r}:
    __import__(f"functions.{{name}}.app")
from shared import tracing
handler = lambda event, context: None
sdk = "xray" if "aws_xray_sdk.core" in sys.modules else "none"
print(sdk, "wrapped" if tracing.traced(handler) is not handler else "bare")
"""


def imported(trace_disabled: str) -> str:
    """What importing every function's handler in Lambda's environment brings in, in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_SAM"))}
    env |= {"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": trace_disabled}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(("trace_disabled", "expected"), [("true", "none bare"), ("false", "xray wrapped")])
def test_the_x_ray_sdk_is_imported_only_when_tracing_is_on(trace_disabled: str, expected: str) -> None:
    # the template sets POWERTOOLS_TRACE_DISABLED from EnableTracing (off by default)
    assert imported(trace_disabled) == expected
