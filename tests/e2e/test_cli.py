"""The `batchgw` CLI against `batchgw dev`, and the events the stack puts on its bus, as users see them.

The dev stack runs against a moto server this module starts (AWS_ENDPOINT_URL, as a user would set it),
so the test can subscribe a queue to the stack's event bus the way an operator adds a rule.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import openai
import orjson
import pytest

from tests.e2e.conftest import DEV_KEY, dev_stack, write_batch
from tests.fakes.servers import aws_emulator

pytestmark = pytest.mark.e2e


@dataclass
class Gateway:
    base_url: str
    queue_url: str
    aws: dict[str, str]

    def cli(self, *args: str, key: str = DEV_KEY) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "OPENAI_BASE_URL": self.base_url, "OPENAI_API_KEY": key, "COLUMNS": "200"}
        command = [str(Path(sys.executable).parent / "batchgw"), *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    def events(self) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs", **self.aws_args)
        found: list[dict[str, Any]] = []
        while messages := sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                found.append(orjson.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return found

    @property
    def aws_args(self) -> dict[str, Any]:
        return {
            "endpoint_url": self.aws["AWS_ENDPOINT_URL"],
            "region_name": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    routing = "models:\n  - {name: gpt-4o-mini, provider: mock, delay: 1}\n  - {name: gpt-4.1-mini, provider: mock}\n"
    with aws_emulator() as aws, dev_stack(tmp_path_factory.mktemp("cli"), routing, env=aws) as base_url:
        gateway = Gateway(base_url, "", aws)
        args = gateway.aws_args
        sqs, events = boto3.client("sqs", **args), boto3.client("events", **args)
        queue = sqs.create_queue(QueueName="cli-observer")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        pattern = {"source": ["batchgw"], "detail-type": ["Batch Status Changed", "Batch Completed"]}
        events.put_rule(Name="cli-observer", EventBusName="batchgw-dev", EventPattern=orjson.dumps(pattern).decode())
        events.put_targets(Rule="cli-observer", EventBusName="batchgw-dev", Targets=[{"Id": "q", "Arn": arn}])
        gateway.queue_url = queue
        yield gateway


def test_keys_submit_wait_status_results_spend_and_revoke(gateway: Gateway, tmp_path: Path) -> None:
    created = gateway.cli("keys", "create", "--name", "cli-team", "--model", "gpt-4o-mini", "--max-budget", "5")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("sk-batchgw-") and "shown only now" in created.stderr

    submitted = gateway.cli(
        "submit",
        str(write_batch(tmp_path / "in.jsonl", 6, "gpt-4o-mini", prefix="r")),
        "--wait",
        "--interval",
        "0.3",
        "--metadata",
        "run=cli",
        key=key,
    )
    assert submitted.returncode == 0, submitted.stderr
    assert "completed" in submitted.stdout and "6 completed, 0 failed of 6" in submitted.stdout
    batch_id = next(word for word in submitted.stderr.split() if word.startswith("batch_"))

    status = gateway.cli("status", batch_id, key=key)
    assert status.returncode == 0 and "completed" in status.stdout and "$0.0000" in status.stdout

    results = gateway.cli("results", batch_id, "-o", str(tmp_path / "out.jsonl"), key=key)
    assert results.returncode == 0, results.stderr
    lines = [orjson.loads(line) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert sorted(line["custom_id"] for line in lines) == [f"r{i}" for i in range(6)]

    listed = gateway.cli("keys", "list").stdout
    (key_id,) = {
        word for row in listed.splitlines() if "cli-team" in row for word in row.split() if word.startswith("key_")
    }
    spent = gateway.cli("spend", "--key", key_id)
    assert spent.returncode == 0 and "gpt-4o-mini" in spent.stdout

    other_model = gateway.cli(
        "submit", str(write_batch(tmp_path / "other.jsonl", 1, "gpt-4.1-mini", prefix="r")), key=key
    )
    assert other_model.returncode == 1 and "403" in other_model.stderr and "gpt-4.1-mini" in other_model.stderr

    assert gateway.cli("keys", "revoke", key_id).returncode == 0
    refused = gateway.cli("status", batch_id, key=key)
    assert refused.returncode == 1 and "401" in refused.stderr

    events = [e for e in gateway.events() if e["detail"]["batch_id"] == batch_id]
    changes = [
        (e["detail"]["previous_status"], e["detail"]["status"])
        for e in events
        if e["detail-type"] == "Batch Status Changed"
    ]
    assert changes == [
        (None, "validating"),
        ("validating", "in_progress"),
        ("in_progress", "finalizing"),
        ("finalizing", "completed"),
    ]
    (completed,) = [e["detail"] for e in events if e["detail-type"] == "Batch Completed"]
    assert completed["owner"] == key_id and completed["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
    assert completed["usage"]["total_tokens"] > 0 and completed["cost"]["currency"] == "usd"


def test_a_bad_file_is_refused_with_its_line(gateway: Gateway, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(write_batch(tmp_path / "ok.jsonl", 2, "gpt-4o-mini", prefix="r").read_bytes() + b"not json\n")
    done = gateway.cli("submit", str(bad))
    assert done.returncode == 1 and "400" in done.stderr and "line 3" in done.stderr


def test_unfinished_results_and_missing_settings_fail_clearly(gateway: Gateway, tmp_path: Path) -> None:
    done = gateway.cli("results", "batch_00000000000000000000000000ff", "-o", str(tmp_path / "x.jsonl"))
    assert done.returncode == 1 and "404" in done.stderr
    unset = subprocess.run(
        [str(Path(sys.executable).parent / "batchgw"), "status", "batch_x"],
        env={k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")},
        capture_output=True,
        text=True,
    )
    assert unset.returncode == 1 and "OPENAI_BASE_URL" in unset.stderr


def test_estimate_prints_each_models_figures_and_submit_refuses_above_max_cost(
    gateway: Gateway, tmp_path: Path
) -> None:
    path = write_batch(tmp_path / "est.jsonl", 3, "gpt-4o-mini", prefix="e")
    estimated = gateway.cli("estimate", str(path))
    assert estimated.returncode == 0, estimated.stderr
    assert "gpt-4o-mini" in estimated.stdout and "max cost" in estimated.stdout and "uploaded" in estimated.stderr

    with openai.OpenAI(base_url=gateway.base_url, api_key=DEV_KEY) as client:
        before = len(client.batches.list(limit=100).data)
        refused = gateway.cli("submit", str(path), "--max-cost", "0.000000001")
        assert refused.returncode == 1 and "above --max-cost" in refused.stderr
        assert len(client.batches.list(limit=100).data) == before  # no batch was made

        allowed = gateway.cli("submit", str(path), "--max-cost", "100")
        assert allowed.returncode == 0, allowed.stderr
        assert len(client.batches.list(limit=100).data) == before + 1
