"""The built Lambda artifacts run: `sam build`, then every handler from its build plus the built layer only.

Each function runs in its own `python -S` whose path is its `.aws-sam/build/<Function>` directory, the
built SharedLayer and the Lambda runtime's boto3, nothing from this venv: a dependency missing from a
function's or the layer's requirements fails here as it would in AWS. The handlers get the sample events
from events/ and a Lambda-like environment (tracing on), against moto's server on loopback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchgw import artifacts, template
from batchgw.devstack import DEV_MASTER_KEY, DevStack
from shared.runtime import reset_runtime, runtime
from tests.fakes.servers import aws_emulator
from tests.integration.conftest import EVENTS

DRIVER = """
import importlib, json, sys
class Context:
    function_name = "artifact-test"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:artifact-test"
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    log_group_name = "/aws/lambda/artifact-test"
    log_stream_name = "artifact-test"
    client_context = None
    identity = None
    def get_remaining_time_in_millis(self):
        return 60000
module, _, name = sys.argv[1].rpartition(".")
handler = getattr(importlib.import_module(module), name)
print("RESULT " + json.dumps(handler(json.loads(sys.argv[2]), Context()), default=str))
"""
ROUTING = "models:\n  - {name: gpt-4o-mini, provider: mock, delay: 0}\n"


@dataclass
class Built:
    runtime: Path
    env: dict[str, str]

    def run(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        """Invoke `function`'s built handler with `event`, as Lambda would; returns what it returned."""
        (spec,) = [f for f in template.functions() if f.logical_id == function]
        done = subprocess.run(
            [sys.executable, "-S", "-c", DRIVER, spec.handler, orjson.dumps(event).decode()],
            env={**artifacts.lambda_env(function, self.runtime), **self.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        result: dict[str, Any] = orjson.loads(line.removeprefix("RESULT "))
        return result


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    artifacts.build(cached=False)
    workdir = tmp_path_factory.mktemp("artifacts")
    (workdir / "routing.yaml").write_text(ROUTING)
    with aws_emulator() as aws:
        yield from _built(workdir, aws)


def _built(workdir: Path, aws: dict[str, str]) -> Iterator[Built]:
    env = {
        **aws,
        "BATCHGW_MASTER_KEY": DEV_MASTER_KEY,
        # what Lambda sets, so that Powertools traces as it would there (to a daemon that is not listening)
        "LAMBDA_TASK_ROOT": "/var/task",
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            if not name.startswith(("LAMBDA_", "_X_")):
                patch.setenv(name, value)
        stack = DevStack(config=str(workdir / "routing.yaml"))
        stack.configure()  # sets BATCHGW_TABLE, ... here; the functions get them through `env`
        stack.provision()
        env |= {k: v for k, v in os.environ.items() if k.startswith("BATCHGW_")}
        yield Built(artifacts.runtime_dir(workdir / "runtime"), env)
        reset_runtime()


def event(name: str, **changes: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads((EVENTS / name).read_bytes())
    return {**loaded, **changes}


def test_every_function_runs_from_its_artifact_through_a_whole_batch(built: Built) -> None:
    health = built.run("FilesApiFunction", event("api_health.json"))
    assert health["statusCode"] == 200

    created_file = built.run("FilesApiFunction", event("api_create_file.json"))
    assert created_file["statusCode"] == 200, created_file
    file_id = orjson.loads(created_file["body"])["id"]

    create = event("api_create_batch.json")
    create["body"] = orjson.dumps(orjson.loads(create["body"]) | {"input_file_id": file_id}).decode()
    created_batch = built.run("BatchesApiFunction", create)
    assert created_batch["statusCode"] == 200, created_batch
    batch_id = orjson.loads(created_batch["body"])["id"]

    detail = {"batch_id": batch_id}
    assert built.run("SubmitterFunction", event("batch_created.json", detail=detail)) == {"batch_id": batch_id}
    assert runtime().batch_store.get(batch_id).status == "in_progress"  # type: ignore[union-attr]
    assert built.run("PollerFunction", event("scheduled.json"))["ended"] == 1
    completed = built.run("CompletionFunction", event("batch_ended.json", detail=detail | {"without_results": False}))
    assert completed == {"batch_id": batch_id, "booked": True, "status": "completed"}

    listed = built.run("BatchesApiFunction", event("api_list_batches.json"))
    (batch,) = [b for b in orjson.loads(listed["body"])["data"] if b["id"] == batch_id]
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 2 and batch["cost"]["value"] > 0


def test_the_artifacts_see_nothing_of_the_dev_venv(built: Built) -> None:
    done = subprocess.run(
        [sys.executable, "-S", "-c", "import rich"],
        env={**artifacts.lambda_env("PollerFunction", built.runtime), **built.env},
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "No module named 'rich'" in done.stderr
