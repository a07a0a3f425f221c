"""Integration harness: moto in-process, the stack provisioned from template.yaml, fake provider upstreams.

`stack` provisions the table, bucket, bus and rules exactly as `batchgw dev` does (from the template),
routes EventBridge events into SQS queues, and lets a test deliver them to the real handlers. It always
runs the fake OpenAI upstream; a test module adds its providers' deployments by overriding `extra_routes`,
starting their fakes with the fixtures named after them (`azure`, `anthropic`, `vertex`, ...).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from moto import mock_aws
from starlette.testclient import TestClient

from batchgw import emulator, template
from batchgw.devstack import ApiGateway, DevStack, invoke, scheduled_event
from shared.records import BatchRecord, SpendRow
from shared.runtime import Runtime, reset_runtime, runtime
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.azure_upstream import FakeAzureOpenAI
from tests.fakes.bedrock_upstream import FakeBedrock
from tests.fakes.mistral_upstream import FakeMistral
from tests.fakes.openai_upstream import API_KEY, FakeOpenAI
from tests.fakes.servers import serve_in_thread
from tests.fakes.together_upstream import FakeTogether
from tests.fakes.vertex_upstream import TOKEN, FakeVertex

MASTER_KEY = "sk-test-master"
EVENTS = Path(__file__).resolve().parents[2] / "events"
VERTEX_BUCKET = "test-bucket"  # at the fake Cloud Storage
BEDROCK_ROLE = "arn:aws:iam::123456789012:role/batchgw-bedrock"
BEDROCK_BUCKET = "batchgw-dev"  # the stack's own bucket, in moto


def load_event(name: str, **detail: Any) -> dict[str, Any]:
    """A sample event from events/, with its detail fields replaced by `detail`."""
    event: dict[str, Any] = orjson.loads((EVENTS / name).read_bytes())
    if detail:
        event["detail"] = {**event["detail"], **detail}
    return event


def routing_yaml(upstream_url: str) -> str:
    return f"""
models:
  - name: gpt-4o-mini
    provider: mock
    delay: 0.5
  - name: mock-slow
    provider: mock
    model: gpt-4o-mini
    delay: 30
  - name: mock-expiring
    provider: mock
    model: gpt-4o-mini
    delay: 30
    expire_after: 0.5
  - name: mock-flaky
    provider: mock
    model: gpt-4o-mini
    delay: 0.2
    failure_rate: 0.3
  - name: text-embedding-3-small
    provider: mock
    delay: 0.2
  - name: upstream-gpt-4o-mini
    provider: openai
    model: gpt-4o-mini
    api_base: {upstream_url}/v1
    api_key: {API_KEY}
    timeout: 1
    max_retries: 4
  - name: upstream-priced
    provider: openai
    model: gpt-4o-mini
    api_base: {upstream_url}/v1
    api_key: {API_KEY}
    timeout: 1
    pricing: {{input_per_mtok: 0.5, output_per_mtok: 2.0}}
  - name: fake-expire
    provider: openai
    api_base: {upstream_url}/v1
    api_key: {API_KEY}
    timeout: 1
    pricing: {{input_per_mtok: 1.0, output_per_mtok: 4.0}}
  - name: dead-provider
    provider: openai
    model: gpt-4o-mini
    api_base: http://127.0.0.1:9/v1
    api_key: {API_KEY}
    timeout: 0.5
    max_retries: 0
  - name: fake-refuse
    provider: openai
    api_base: {upstream_url}/v1
    api_key: {API_KEY}
    timeout: 1
    max_retries: 0
"""


@dataclass
class Stack:
    """The provisioned stack and ways to drive its handlers as AWS would."""

    queues: dict[str, str]
    upstream: FakeOpenAI
    api: TestClient
    failures: list[BaseException] = field(default_factory=list)

    @property
    def rt(self) -> Runtime:
        return runtime()

    def pending(self, function: str) -> list[dict[str, Any]]:
        """The events waiting for `function` (SubmitterFunction, CompletionFunction), removed from its queue."""
        sqs = boto3.client("sqs")
        events: list[dict[str, Any]] = []
        while True:
            messages = sqs.receive_message(QueueUrl=self.queues[function], MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return events
            for message in messages:
                events.append(orjson.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queues[function], ReceiptHandle=message["ReceiptHandle"])

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        (spec,) = [f for f in template.functions() if f.logical_id == function]
        return invoke(spec, event)

    def deliver(self, function: str) -> int:
        """Invoke `function` with every event waiting for it, as Lambda's async invocation would; returns how many.

        A failed invocation is recorded in `failures`, not raised: Lambda would retry it, then dead-letter it.
        """
        events = self.pending(function)
        for event in events:
            try:
                self.invoke(function, event)
            except Exception as exc:
                self.failures.append(exc)
        return len(events)

    def poll(self) -> Any:
        return self.invoke("PollerFunction", scheduled_event())

    def run_until(
        self,
        done: Callable[[], bool],
        *,
        rounds: int = 60,
        pause: float = 0.1,
        complete: bool = True,
        at_least: float = 0.0,
    ) -> None:
        """Run the async machinery (submit, poll and, if `complete`, completion) until `done()`, bounded: at
        most `rounds` rounds, or more while fewer than `at_least` seconds have passed (for waits that are
        the provider's, such as a Retry-After backoff, and take wall time however fast the rounds go)."""
        started = time.monotonic()
        ran = 0
        while ran < rounds or time.monotonic() - started < at_least:
            self.deliver("SubmitterFunction")
            self.poll()
            if complete:
                self.deliver("CompletionFunction")
            if done():
                return
            ran += 1
            time.sleep(pause)
        raise AssertionError(f"the stack did not reach the expected state in {ran} rounds")

    def auth(self, key: str = MASTER_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def upstream() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI(processing_seconds=0.3)
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def azure() -> Iterator[tuple[FakeAzureOpenAI, str]]:
    fake = FakeAzureOpenAI(processing_seconds=0.3)
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def anthropic() -> Iterator[tuple[FakeAnthropic, str]]:
    fake = FakeAnthropic(processing_seconds=0.3)
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def vertex() -> Iterator[tuple[FakeVertex, str]]:
    fake = FakeVertex(processing_seconds=0.3)
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def bedrock() -> Iterator[tuple[FakeBedrock, str]]:
    fake = FakeBedrock(processing_seconds=0.3)
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def mistral() -> Iterator[tuple[FakeMistral, str]]:
    fake = FakeMistral(processing_seconds=0.3)
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture
def together() -> Iterator[tuple[FakeTogether, str]]:
    fake = FakeTogether(processing_seconds=0.3)
    with serve_in_thread(fake.app) as url:
        yield fake, url


def vertex_keys(url: str, token: str = TOKEN) -> str:
    """The routing keys of a vertex deployment at the fake Vertex AI and Cloud Storage at `url`."""
    return (
        f"provider: vertex, api_key: {token}, project: test-project, location: us-central1, "
        f'gcs_bucket: {VERTEX_BUCKET}, api_base: "{url}", storage_base: "{url}", timeout: 1'
    )


def bedrock_keys(url: str) -> str:
    """The routing keys of a bedrock deployment at the fake Bedrock at `url`, with S3 from moto."""
    return (
        f'provider: bedrock, role_arn: "{BEDROCK_ROLE}", s3_bucket: {BEDROCK_BUCKET}, region: us-east-1, '
        f'api_base: "{url}"'
    )


@pytest.fixture
def extra_routes() -> str:
    """More `models:` entries for the routing file; a test module overrides this to add its providers."""
    return ""


@pytest.fixture
def stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream: tuple[FakeOpenAI, str], extra_routes: str
) -> Iterator[Stack]:
    fake, url = upstream
    config = tmp_path / "routing.yaml"
    config.write_text(routing_yaml(url) + extra_routes)
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("BATCHGW_MASTER_KEY", MASTER_KEY)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")  # as the dev stack sets it; restored after the test
    monkeypatch.setenv("BATCHGW_SUBMIT_STUCK_SECONDS", "1")
    monkeypatch.setenv("BATCHGW_FINALIZE_STUCK_SECONDS", "1")
    for name in ("BATCHGW_TABLE", "BATCHGW_BUCKET", "BATCHGW_EVENT_BUS", "BATCHGW_CONFIG"):
        monkeypatch.setenv(name, "set-by-the-stack")  # restored after the test
    emulator.atomic_dynamodb()
    with mock_aws():
        dev = DevStack(config=str(config))
        dev.configure()
        queues = dev.provision()
        with TestClient(ApiGateway(template.functions()), raise_server_exceptions=False) as api:
            yield Stack(queues=queues, upstream=fake, api=api)
    reset_runtime()


def batch_lines(n: int, model: str = "gpt-4o-mini", url: str = "/v1/chat/completions", prefix: str = "req") -> bytes:
    """A valid batch input file of `n` chat requests."""
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"{prefix}-{i}",
                "method": "POST",
                "url": url,
                "body": {"model": model, "messages": [{"role": "user", "content": f"question {i}"}]},
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        for i in range(n)
    )


TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


def start(stack: Stack, content: bytes, endpoint: str = "/v1/chat/completions") -> Any:
    """Upload `content` as a batch file and create a batch from it; the API's answer."""
    file_id = stack.api.post(
        "/v1/files", headers=stack.auth(), data={"purpose": "batch"}, files={"file": ("in.jsonl", content)}
    ).json()["id"]
    body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"}
    return stack.api.post("/v1/batches", headers=stack.auth(), json=body)


def started(stack: Stack, content: bytes, endpoint: str = "/v1/chat/completions") -> str:
    """The id of a batch created from `content` (which must be accepted)."""
    response = start(stack, content, endpoint)
    assert response.status_code == 200, response.text
    batch_id: str = response.json()["id"]
    return batch_id


def batch(stack: Stack, batch_id: str) -> dict[str, Any]:
    body: dict[str, Any] = stack.api.get(f"/v1/batches/{batch_id}", headers=stack.auth()).json()
    return body


def record(stack: Stack, batch_id: str) -> BatchRecord:
    found = stack.rt.batch_store.get(batch_id)
    assert found is not None
    return found


# Under injected faults a batch's submission may back off for 1 + 2 + 4 + 8 + 16 s (a busy provider's
# Retry-After, doubled per attempt) before it runs: a fault test waits at least this long
FAULT_PATIENCE = 120.0


def finish(stack: Stack, *batch_ids: str, rounds: int = 80, at_least: float = 0.0) -> list[dict[str, Any]]:
    """Run the stack until every batch is terminal; their final objects."""
    try:
        stack.run_until(
            lambda: all(batch(stack, b)["status"] in TERMINAL for b in batch_ids), rounds=rounds, at_least=at_least
        )
    except AssertionError as exc:
        stuck = [stack.rt.batch_store.get(b) for b in batch_ids if batch(stack, b)["status"] not in TERMINAL]
        raise AssertionError(f"batches not ended after {rounds} rounds: {stuck}") from exc
    return [batch(stack, b) for b in batch_ids]


def lines(stack: Stack, file_id: str | None) -> list[dict[str, Any]]:
    """A result file's lines, parsed (none for no file)."""
    if not file_id:
        return []
    content = stack.api.get(f"/v1/files/{file_id}/content", headers=stack.auth()).content
    return [orjson.loads(line) for line in content.splitlines()]


def end_under_faults(
    stack: Stack,
    calls: Mapping[str, int],
    model: str,
    *,
    batches: int = 4,
    kinds: tuple[str, ...] = ("500", "429", "hang"),
) -> tuple[list[str], SpendRow]:
    """Run `batches` batches of 3 requests of `model` to their end through a provider whose faults are set:
    each completes with its own custom_ids once and every fault kind was met. Their ids, and the key's one
    spend row, counting them once."""
    batch_ids = [started(stack, batch_lines(3, model=model, prefix=f"b{n}")) for n in range(batches)]
    finish(stack, *batch_ids, rounds=200, at_least=FAULT_PATIENCE)
    for n, batch_id in enumerate(batch_ids):
        done = batch(stack, batch_id)
        assert done["status"] == "completed", done
        assert sorted(line["custom_id"] for line in lines(stack, done["output_file_id"])) == [
            f"b{n}-{i}" for i in range(3)
        ]
    assert all(calls[f"fault:{kind}"] for kind in kinds), calls
    (row,) = stack.rt.key_store.spend("master")
    assert row.batches == batches
    return batch_ids, row
