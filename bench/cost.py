"""The cost model: what batchgw costs on AWS, priced from the calls it makes in the local stack.

Run as `python -m bench.cost AWS_ENDPOINT`; prints one JSON result.

A batch's whole lifecycle runs through the functions' real handlers, counted by bench/metering.py: the
client (the requests the openai SDK sends, as API Gateway events) uploads the input and creates the batch; the submitter
gets "Batch Created" and submits it to a provider (bench/slow_provider.py, 100 ms a call) that takes 30
minutes: the schedule invokes the poller 30 times, the client checks the batch once a minute too, and the
30th tick finds it completed; the completion function gets "Batch Ended", writes the result files and books
the cost; the client downloads the output. That for 10, 1,000 and 50,000 requests (about 400 bytes each in,
1 KB each out). Then the idle stack's schedule ticks with nothing active: the idle month.

What the local stack cannot count is modelled, and each such figure says so:
- cold starts: each function a lone batch wakes (all but the poller, which its schedule keeps warm) starts
  once; its init, measured here as the handler's import and the runtime's build in a fresh process, is
  billed like its duration. The idle poller starts afresh about once an hour (an assumption: Lambda recycles
  execution environments within hours);
- Secrets Manager reads: a warm function reads each secret once per five minutes (Powertools' cache,
  shared/secret_refs.py), here compressed into seconds: the master key for the API functions, the
  deployment's key for the others (a literal key in the benchmark's routing file);
- Lambda's event source mapping on the fan-out queue long-polls it even when idle: five pollers, each
  ReceiveMessage waiting 20 s (AWS's documented start of SQS scaling), so 15 requests a minute;
- the fixed monthly items the template creates, counted from template.yaml.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Final

import boto3
import httpx
import orjson

from batchgw import template
from bench.common import SlowProvider, slow_provider, use_stack, write_lines
from bench.metering import AwsMeter, LambdaApiTransport, Metric, functions
from bench.poller import FUNCTION_LOGGING, scheduled_tick
from bench.prices import (
    ALARM_MONTH,
    CUSTOM_METRIC_MONTH,
    DASHBOARD_MONTH,
    HOURS_PER_MONTH,
    PER_UNIT,
    SECRET_MONTH,
    SQS_REQUEST,
    priced,
)
from shared.auth import MASTER
from shared.keys import Keys
from shared.runtime import runtime

SIZES: Final = (10, 1_000, 50_000)
TICKS: Final = 30
IDLE_TICKS: Final = 5
TICKS_PER_MONTH: Final = HOURS_PER_MONTH * 60  # the schedule's default rate(1 minute)
REQUEST_BYTES: Final = 400
UPLOAD_PART_BYTES: Final = 4_000_000
INLINE_UPLOAD_BYTES: Final = 4 * 1024 * 1024  # larger files go through /v1/uploads (max_request_bytes)
API_HOST: Final = "batchgw.local"
SPACE: Final = "life"
# cold starts a lone batch causes; Secrets Manager reads over its 30 minutes, one per function per 5 minutes
# of activity: the batches API (the create, then a check a minute: minutes 0 to 30), the files API (upload at
# 0, download at 30), the submitter and completion once, the poller every 5 minutes for 30
COLD_STARTS: Final = ("FilesApiFunction", "BatchesApiFunction", "SubmitterFunction", "CompletionFunction")
LIFECYCLE_SECRET_READS: Final = 7 + 2 + 1 + 6 + 1
IDLE_POLLER_COLD_STARTS: Final = HOURS_PER_MONTH
ESM_IDLE_REQUESTS: Final = 5 * 3 * 60 * HOURS_PER_MONTH
INIT_PROBE: Final = (
    "import importlib, sys, time\n"
    "started = time.perf_counter()\n"
    "importlib.import_module(sys.argv[1])\n"
    "from shared.runtime import runtime\n"
    "runtime()\n"
    "print(time.perf_counter() - started)\n"
)


def init_seconds() -> dict[str, float]:
    """Each function's cold start here: its handler's import, then the runtime's build, in a fresh process."""
    found = {}
    for function in functions().values():
        module = function.handler.rpartition(".")[0]
        done = subprocess.run([sys.executable, "-c", INIT_PROBE, module], capture_output=True, text=True, check=True)
        found[function.logical_id] = float(done.stdout.strip().splitlines()[-1])
    return found


class Deliveries:
    """The EventBridge rules' queues of the dev stack, read by an uncounted client: Lambda delivers these."""

    def __init__(self, meter: AwsMeter, queues: dict[str, str]) -> None:
        self._meter, self._queues = meter, queues
        self._sqs = boto3.session.Session().client("sqs")

    def deliver(self, function: str) -> int:
        delivered = 0
        while messages := self._sqs.receive_message(QueueUrl=self._queues[function], MaxNumberOfMessages=10).get(
            "Messages", []
        ):
            for message in messages:
                self._meter.invoke(function, orjson.loads(message["Body"]))
                self._sqs.delete_message(QueueUrl=self._queues[function], ReceiptHandle=message["ReceiptHandle"])
                delivered += 1
        return delivered


def upload(client: httpx.Client, path: Path) -> str:
    """The input file's id, uploaded as the openai SDK does: in one request, or over /v1/uploads in 4 MB parts
    when larger than one request may be."""
    size = path.stat().st_size
    if size <= INLINE_UPLOAD_BYTES:
        with path.open("rb") as data:
            answer = client.post("/files", data={"purpose": "batch"}, files={"file": (path.name, data)})
        file_id: str = answer.raise_for_status().json()["id"]
        return file_id
    body = {"purpose": "batch", "filename": path.name, "bytes": size, "mime_type": "application/jsonl"}
    upload_id = client.post("/uploads", json=body).raise_for_status().json()["id"]
    parts = []
    with path.open("rb") as data:
        while part := data.read(UPLOAD_PART_BYTES):
            answer = client.post(f"/uploads/{upload_id}/parts", files={"data": ("part", part)})
            parts.append(answer.raise_for_status().json()["id"])
    done = client.post(f"/uploads/{upload_id}/complete", json={"part_ids": parts}).raise_for_status().json()
    file_id = done["file"]["id"]
    return file_id


def lifecycle(
    meter: AwsMeter, client: httpx.Client, deliveries: Deliveries, provider: SlowProvider, path: Path
) -> dict[str, Any]:
    """One batch from upload to download; the provider's calls it made."""
    calls = provider.calls()
    body = {"input_file_id": upload(client, path), "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    batch = client.post("/batches", json=body).raise_for_status().json()
    deliveries.deliver("SubmitterFunction")
    for _ in range(TICKS):
        provider.advance(SPACE)
        scheduled_tick(meter)
        deliveries.deliver("CompletionFunction")
        batch = client.get(f"/batches/{batch['id']}").raise_for_status().json()
    assert batch["status"] == "completed", batch
    output = client.get(f"/files/{batch['output_file_id']}/content").raise_for_status().content
    assert output.count(b"\n") == batch["request_counts"]["total"]
    made = provider.calls() - calls
    # the input as the submitter sent it out to the provider: data out of AWS like the client's downloads
    meter.add("transfer_out_bytes", made.pop("uploaded_bytes"), "SubmitterFunction")
    return {"provider_calls": dict(made), "input_bytes": path.stat().st_size, "output_bytes": len(output)}


def itemized(usage: dict[str, float]) -> dict[str, float]:
    """Dollars by line item, largest first."""
    return dict(sorted(priced(usage).items(), key=lambda item: -item[1]))


def billed_metrics(metrics: set[Metric]) -> int:
    """How many custom metrics `metrics` are once every function that emits any emits its ColdStart too:
    Powertools emits it on a process's first invocation, and here one process runs every function (in AWS,
    each function's first invocation in each execution environment does)."""
    services = {dict(dimensions)["service"] for _, _, dimensions in metrics}
    started = {dict(dimensions)["service"] for _, name, dimensions in metrics if name == "ColdStart"}
    return len(metrics) + len(services - started)


def fixed_items(poller_metrics: int) -> dict[str, dict[str, Any]]:
    """The template's fixed monthly items: how many, at what price, which parameter turns them off."""
    resources = template.load_template()["Resources"].values()
    alarms = sum(1 for r in resources if r["Type"] == "AWS::CloudWatch::Alarm")
    dashboards = sum(1 for r in resources if r["Type"] == "AWS::CloudWatch::Dashboard")
    return {
        "custom metrics the idle poller emits every minute": {
            "count": poller_metrics,
            "dollars": poller_metrics * CUSTOM_METRIC_MONTH,
            "parameter": "EnableCustomMetrics",
        },
        "alarms": {"count": alarms, "dollars": alarms * ALARM_MONTH, "parameter": "EnableAlarms"},
        "dashboard": {"count": dashboards, "dollars": dashboards * DASHBOARD_MONTH, "parameter": "EnableDashboard"},
        "master key secret (required; +$0.40 a month per provider key kept in Secrets Manager)": {
            "count": 1,
            "dollars": SECRET_MONTH,
            "parameter": None,
        },
    }


def main(endpoint: str) -> None:
    os.environ.update(FUNCTION_LOGGING)
    memory = {f.logical_id: f.memory_mb for f in functions().values()}
    with slow_provider() as provider, tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir) / "routing.yaml"
        config.write_text(
            "models:\n"
            f"  - {{name: gpt-4o-mini, provider: openai, api_base: '{provider.api_base(SPACE)}', api_key: x}}\n"
        )
        queues = use_stack(endpoint, str(config))
        inits = init_seconds()
        results: dict[str, Any] = {"init_seconds": inits, "lifecycles": {}}
        meter = AwsMeter(runtime().settings.table_name)
        meter.install()
        key = Keys(runtime().key_store).create(MASTER, name="bench", models=None, max_budget=None).secret
        deliveries = Deliveries(meter, queues)
        client = httpx.Client(
            base_url=f"http://{API_HOST}/v1",
            headers={"Authorization": f"Bearer {key}"},
            transport=LambdaApiTransport(meter, API_HOST),
            follow_redirects=True,
            timeout=120,
        )
        seen_metrics: set[Metric] = set()
        for requests in SIZES:
            path = Path(workdir) / f"in{requests}.jsonl"
            write_lines(path, kind="input", lines=requests, total_mb=requests * REQUEST_BYTES / 1e6)
            meter.reset()
            run = lifecycle(meter, client, deliveries, provider, path)
            usage = meter.usage()
            usage["init_gb_seconds"] = sum(inits[f] * memory[f] / 1024 for f in COLD_STARTS)
            usage["secrets_api_calls"] = LIFECYCLE_SECRET_READS
            seen_metrics |= meter.metrics
            by_function = {f: sum(priced(meter.usage(f)).values()) for f in memory if meter.usage(f)["lambda_requests"]}
            results["lifecycles"][str(requests)] = run | {
                "usage": usage,
                "by_function": by_function,
                "invocations": Counter(i.function for i in meter.invocations),
            }
        # the poller's metrics are emitted every minute anyway (the idle month counts them); the others are
        # billed for the hour a lone batch lights them, each function's cold start metric included
        lit = billed_metrics({m for m in seen_metrics if ("service", "poller") not in m[2]})
        for run in results["lifecycles"].values():
            run["usage"]["metric_hours"] = lit
            run["items"] = itemized(run["usage"])
        meter.reset()
        for _ in range(IDLE_TICKS):
            scheduled_tick(meter)
        idle = {k: v / IDLE_TICKS for k, v in meter.usage().items()}
        idle["lambda_gb_seconds"] = (
            statistics.median(i.ms for i in meter.invocations) / 1000 * memory["PollerFunction"] / 1024
        )
        seen_metrics |= meter.metrics
    # the idle poller's metrics: those of each tick, and its cold start's
    poller_metrics = billed_metrics({m for m in seen_metrics if ("service", "poller") in m[2]})
    results["idle_tick"] = {"usage": idle, "items": itemized(idle)}
    month = {k: v * TICKS_PER_MONTH for k, v in idle.items()}
    month["init_gb_seconds"] = IDLE_POLLER_COLD_STARTS * inits["PollerFunction"] * memory["PollerFunction"] / 1024
    items = itemized(month)
    items["SQS requests: the fan-out queue's idle long polls (modelled)"] = ESM_IDLE_REQUESTS * SQS_REQUEST
    results["idle_month"] = {
        "items": dict(sorted(items.items(), key=lambda i: -i[1])),
        "fixed": fixed_items(poller_metrics),
    }
    results["prices"] = {name: price for name, (price, _) in PER_UNIT.items()}
    print(orjson.dumps(results).decode())


if __name__ == "__main__":
    main(sys.argv[1])
