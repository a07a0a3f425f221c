"""The vertex adapter through the real handlers, against a fake Cloud Storage + Vertex AI over loopback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import google.auth.transport.urllib3
import orjson
import pytest
from google.auth.credentials import Credentials

from shared.providers.vertex import VertexProvider
from shared.providers.vertex_format import line_index, line_labels
from shared.routing import Deployment
from tests.fakes.faults import Faults
from tests.fakes.journal import MemoryJournal, submit_request
from tests.fakes.vertex_upstream import (
    LABEL_VALUES_LIMIT,
    TOKEN,
    BilledUsage,
    FakeJob,
    FakeVertex,
    Forecast,
    line_problem,
)
from tests.integration.conftest import (
    FAULT_PATIENCE,
    VERTEX_BUCKET,
    Stack,
    batch,
    finish,
    lines,
    record,
    start,
    started,
    vertex_keys,
)

# Google's published Vertex AI batch price for gemini-2.5-flash (half the online $0.30 / $2.50 per 1M tokens);
# cached input is billed at the context-cache rate ($0.03), which takes precedence over the batch discount
FLASH_BATCH_INPUT = Decimal("0.15")
FLASH_BATCH_OUTPUT = Decimal("1.25")
FLASH_CACHED_INPUT = Decimal("0.03")


@pytest.fixture
def extra_routes(vertex: tuple[FakeVertex, str]) -> str:
    _, url = vertex
    return f"""
  - {{name: gemini-via-vertex, model: gemini-2.5-flash, {vertex_keys(url)}}}
  - {{name: gemini-flaky, model: gemini-2.5-flash, max_retries: 6, {vertex_keys(url)}}}
  - {{name: gemini-expiring, model: gemini-expire, {vertex_keys(url)},
      pricing: {{input_per_mtok: 1.0, output_per_mtok: 4.0}}}}
  - {{name: gemini-wrong-token, model: gemini-2.5-flash, {vertex_keys(url, token="ya29.revoked")}}}
"""


def request_line(custom_id: str, model: str, question: str, url: str = "/v1/chat/completions") -> bytes:
    body = {
        "model": model,
        "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": question}],
        "max_tokens": 64,
        "temperature": 0.2,
    }
    line = {"custom_id": custom_id, "method": "POST", "url": url, "body": body}
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def questions(model: str, n: int, prefix: str = "req") -> bytes:
    return b"".join(request_line(f"{prefix}-{i}", model, f"question {i}") for i in range(n))


def input_object(batch_id: str) -> str:
    """Where batchgw uploads a batch's input at the fake Cloud Storage."""
    return f"{VERTEX_BUCKET}/batchgw/{batch_id}/input.jsonl"


def the_job(fake: FakeVertex, batch_id: str) -> FakeJob:
    (job,) = fake.jobs_named(batch_id)
    return job


def google_batch_cost(job: FakeJob) -> Decimal:
    uncached = job.prompt_tokens - job.cached_tokens
    return (
        uncached * FLASH_BATCH_INPUT + job.cached_tokens * FLASH_CACHED_INPUT + job.output_tokens * FLASH_BATCH_OUTPUT
    ) / 1_000_000


def test_vertex_batch_completes_with_openai_lines_right_custom_ids_usage_and_google_batch_price(
    stack: Stack, vertex: tuple[FakeVertex, str]
) -> None:
    # Given six requests, two of them identical and one that Vertex fails
    fake, _ = vertex
    content = (
        request_line("alpha", "gemini-via-vertex", "question a")
        + request_line("twin-1", "gemini-via-vertex", "same question")
        + request_line("beta", "gemini-via-vertex", "question b")
        + request_line("bad", "gemini-via-vertex", "please fail")
        + request_line("twin-2", "gemini-via-vertex", "same question")
        + request_line("gamma", "gemini-via-vertex", "question c")
    )
    order = ["alpha", "twin-1", "beta", "bad", "twin-2", "gamma"]
    batch_id = started(stack, content)

    # When the stack runs it to its end
    (done,) = finish(stack, batch_id)

    # Then it completed with every custom_id once, each answer matching its own request
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 6, "completed": 5, "failed": 1}
    output, errors = lines(stack, done["output_file_id"]), lines(stack, done["error_file_id"])
    assert sorted(line["custom_id"] for line in output) == sorted(set(order) - {"bad"})
    for line in output:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and body["object"] == "chat.completion"
        assert body["model"] == "gemini-2.5-flash" and body["choices"][0]["finish_reason"] == "stop"
        # usage is billed by input position, so it proves even the identical twins came back to their own ids
        billed = BilledUsage.of(order.index(line["custom_id"]))
        assert body["usage"]["prompt_tokens"] == billed.prompt
        assert body["usage"]["completion_tokens"] == billed.candidates + billed.thoughts
        assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": billed.cached}
    answers = {line["custom_id"]: line["response"]["body"]["choices"][0]["message"]["content"] for line in output}
    assert answers["alpha"] == "answer to question a" and answers["twin-2"] == "answer to same question"
    (error,) = errors
    assert error["custom_id"] == "bad" and error["response"]["status_code"] == 400
    assert "invalid argument" in error["response"]["body"]["error"]["message"]

    # and usage and cost are what Vertex billed, at Google's batch prices
    job = the_job(fake, batch_id)
    assert job.model == "gemini-2.5-flash" and job.state == "JOB_STATE_SUCCEEDED"
    assert done["usage"] == {
        "input_tokens": job.prompt_tokens,
        "input_tokens_details": {"cached_tokens": job.cached_tokens},
        "output_tokens": job.output_tokens,
        "output_tokens_details": {"reasoning_tokens": job.thoughts_tokens},
        "total_tokens": job.prompt_tokens + job.output_tokens,
    }
    assert job.cached_tokens and job.thoughts_tokens
    cost = google_batch_cost(job)
    assert done["cost"]["value"] == pytest.approx(float(cost), rel=1e-9) and done["cost"]["currency"] == "usd"
    (row,) = stack.rt.key_store.spend("master")
    assert float(row.cost) == pytest.approx(float(cost), rel=1e-9) and row.batches == 1
    # and nothing batchgw put in Cloud Storage outlives the batch: its input and the job's predictions are gone
    assert live_objects(fake, batch_id) == [] and job.output_directory


def live_objects(fake: FakeVertex, batch_id: str) -> list[str]:
    """The objects of `batch_id` (its input, its job's output) still held by the fake Cloud Storage."""
    job_dirs = tuple(j.output_directory.removeprefix("gs://") for j in fake.jobs_named(batch_id) if j.output_directory)
    return [name for name in fake.objects if name.startswith((input_object(batch_id), *job_dirs))]


def test_vertex_input_is_translated_into_the_bucket_with_line_labels(
    stack: Stack, vertex: tuple[FakeVertex, str]
) -> None:
    fake, _ = vertex
    batch_id = started(stack, questions("gemini-via-vertex", 3))
    finish(stack, batch_id)
    uploaded = the_job(fake, batch_id).lines  # as the job read its input object (since deleted by the cleanup)
    assert [line["request"]["labels"] for line in uploaded] == [line_labels(i) for i in range(3)]
    assert uploaded[1]["request"]["contents"] == [{"role": "user", "parts": [{"text": "question 1"}]}]
    assert uploaded[1]["request"]["systemInstruction"] == {"parts": [{"text": "Answer briefly."}]}
    assert uploaded[1]["request"]["generationConfig"] == {"maxOutputTokens": 64, "temperature": 0.2}
    job = the_job(fake, batch_id)
    assert job.body["model"] == "publishers/google/models/gemini-2.5-flash"
    assert job.body["inputConfig"]["gcsSource"]["uris"] == [f"gs://{input_object(batch_id)}"]
    assert job.output_prefix == f"gs://{VERTEX_BUCKET}/batchgw/{batch_id}/output"


def test_reasoning_effort_reaches_vertex_as_the_deployments_models_thinking_budget(
    stack: Stack, vertex: tuple[FakeVertex, str]
) -> None:
    # Given a batch asking gemini-2.5-flash (which thinks by default, billed as output) not to reason, and a
    # line with an effort OpenAI does not know
    fake, _ = vertex
    asked = [orjson.loads(request_line(f"req-{i}", "gemini-via-vertex", "2+2?")) for i in range(3)]
    for line, effort in zip(asked, ("none", "high", "extreme"), strict=True):
        line["body"]["reasoning_effort"] = effort
    batch_id = started(stack, b"".join(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE) for line in asked))
    (done,) = finish(stack, batch_id)

    # Then Vertex is asked for no thinking and for the most, and the third line fails alone, saying why
    uploaded = the_job(fake, batch_id).lines
    assert [line["request"]["generationConfig"]["thinkingConfig"] for line in uploaded] == [
        {"thinkingBudget": 0},
        {"thinkingBudget": 24576},
    ]
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    (refused,) = lines(stack, done["error_file_id"])
    assert refused["custom_id"] == "req-2"
    assert refused["error"]["code"] == "invalid_request"
    assert "reasoning_effort must be one of" in refused["error"]["message"]


def test_a_batch_past_googles_label_value_limit_still_maps_every_result_to_its_custom_id(
    stack: Stack, vertex: tuple[FakeVertex, str]
) -> None:
    # Given more lines than Google keeps values for one label key (the fake then drops such a key)
    fake, _ = vertex
    n = LABEL_VALUES_LIMIT + 50
    batch_id = started(stack, questions("gemini-via-vertex", n))

    # When the stack runs it to its end
    (done,) = finish(stack, batch_id)

    # Then every answer came back to the request that asked for it
    assert done["status"] == "completed" and done["request_counts"] == {"total": n, "completed": n, "failed": 0}
    output = lines(stack, done["output_file_id"])
    answers = {line["custom_id"]: line["response"]["body"]["choices"][0]["message"]["content"] for line in output}
    assert answers == {f"req-{i}": f"answer to question {i}" for i in range(n)}
    assert max(len(values) for values in fake.label_values.values()) <= 10


def test_the_fake_drops_a_label_key_that_took_more_values_than_google_keeps() -> None:
    # the trap the test above guards against: one key whose value is the line index
    fake = FakeVertex(processing_seconds=0)
    indexed = [
        {"request": {"contents": [{"role": "user", "parts": [{"text": f"q{i}"}]}], "labels": {"line": str(i)}}}
        for i in range(LABEL_VALUES_LIMIT + 1)
    ]
    assert all(line_problem(line) is None for line in indexed)
    fake.see_labels(indexed)
    job = FakeJob(
        name="projects/p/locations/l/batchPredictionJobs/1",
        display_name="b",
        model="gemini-2.5-flash",
        body={},
        output_prefix="gs://b/out",
        lines=indexed,
    )
    fake.advance(job)
    (predictions,) = [v for k, v in fake.objects.items() if k.endswith("predictions.jsonl")]
    echoed = [orjson.loads(raw)["request"]["labels"] for raw in predictions.splitlines()]
    assert len(echoed) == LABEL_VALUES_LIMIT + 1 and all(labels == {} for labels in echoed)


def test_vertex_batch_with_pydantic_json_schemas_in_tools_and_response_format_completes(
    stack: Stack, vertex: tuple[FakeVertex, str]
) -> None:
    # Given a JSON-schema answer and a forced tool call, both with Pydantic schemas ($defs, $ref, anyOf null)
    fake, _ = vertex
    schema = Forecast.model_json_schema()
    structured = {
        "model": "gemini-via-vertex",
        "messages": [{"role": "user", "content": "Forecast for Paris"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "forecast", "schema": schema}},
    }
    tool = {"type": "function", "function": {"name": "record_forecast", "parameters": schema}}
    calling = {
        "model": "gemini-via-vertex",
        "messages": [{"role": "user", "content": "Record the forecast"}],
        "tools": [tool],
        "tool_choice": "required",
    }
    content = b"".join(
        orjson.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}) + b"\n"
        for custom_id, body in (("structured", structured), ("calling", calling))
    )
    batch_id = started(stack, content)

    # When it runs to its end
    (done,) = finish(stack, batch_id)

    # Then Vertex took the schemas (as JSON Schema) and both requests were answered
    assert done["status"] == "completed", done
    output = {line["custom_id"]: line["response"]["body"] for line in lines(stack, done["output_file_id"])}
    assert output["structured"]["choices"][0]["message"]["content"] == "answer to Forecast for Paris"
    (called,) = output["calling"]["choices"]
    assert called["finish_reason"] == "tool_calls"
    assert [call["function"]["name"] for call in called["message"]["tool_calls"]] == ["record_forecast"]
    sent = [line["request"] for line in the_job(fake, batch_id).lines]
    assert sent[0]["generationConfig"]["responseJsonSchema"] == schema
    assert sent[1]["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"] == schema


def test_the_fake_refuses_json_schema_where_vertex_wants_its_own_schema_type_and_takes_it_as_json_schema() -> None:
    contents = [{"role": "user", "parts": [{"text": "hi"}]}]
    pydantic = Forecast.model_json_schema()
    nullable = {"type": "object", "properties": {"note": {"type": ["string", "null"]}}}
    closed = {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False}
    for schema, name in ((pydantic, "$defs"), (nullable, "type"), (closed, "additionalProperties")):
        json_mode = {"responseMimeType": "application/json"}
        as_response = {"contents": contents, "generationConfig": {**json_mode, "responseSchema": schema}}
        as_parameters = {
            "contents": contents,
            "tools": [{"functionDeclarations": [{"name": "f", "parameters": schema}]}],
        }
        for request in (as_response, as_parameters):
            problem = line_problem({"request": request})
            assert problem is not None
            assert problem.startswith(f'Invalid JSON payload received. Unknown name "{name}"'), problem
        taken = {
            "contents": contents,
            "generationConfig": {**json_mode, "responseJsonSchema": schema},
            "tools": [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": schema}]}],
        }
        assert line_problem({"request": taken}) is None


@pytest.mark.parametrize(
    "labels",
    [
        {"Line": "1"},  # keys and values are lowercase
        {"line": "A"},
        {"1line": "1"},  # keys start with a letter
        {"": "1"},
        {"line": "1.5"},  # letters, digits, "_" and "-" only
        {"line": "x" * 64},  # at most 63 characters
        {"l" * 64: "1"},
        {f"k{i}": "1" for i in range(65)},  # at most 64 labels
        {"line": 1},
    ],
)
def test_the_fake_refuses_labels_that_break_googles_label_rules(labels: dict[str, Any]) -> None:
    request = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "labels": labels}
    assert line_problem({"request": request}) is not None
    assert line_problem({"request": {**request, "labels": {"line": "1", "team-ü": "ü_1"}}}) is None


def test_expired_vertex_job_keeps_and_prices_its_partial_results(stack: Stack, vertex: tuple[FakeVertex, str]) -> None:
    fake, _ = vertex
    batch_id = started(stack, questions("gemini-expiring", 4))
    (done,) = finish(stack, batch_id)
    assert done["status"] == "expired" and done["expired_at"]
    assert done["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    output, errors = lines(stack, done["output_file_id"]), lines(stack, done["error_file_id"])
    assert sorted(line["custom_id"] for line in output) == ["req-0", "req-1"]
    assert sorted(line["custom_id"] for line in errors) == ["req-2", "req-3"]
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}
    job = the_job(fake, batch_id)
    assert done["usage"]["input_tokens"] == job.prompt_tokens and done["usage"]["output_tokens"] == job.output_tokens
    # the routing file's price wins: $1 in, $4 out per 1M tokens, cached tokens at the input rate
    expected = (job.prompt_tokens * Decimal(1) + job.output_tokens * Decimal(4)) / 1_000_000
    assert done["cost"]["value"] == pytest.approx(float(expected), rel=1e-9) and expected > 0
    assert live_objects(fake, batch_id) == []


def test_cancel_moves_a_vertex_batch_through_cancelling_to_cancelled(
    stack: Stack, vertex: tuple[FakeVertex, str]
) -> None:
    fake, _ = vertex
    fake.processing_seconds = 60
    batch_id = started(stack, questions("gemini-via-vertex", 4))
    stack.deliver("SubmitterFunction")
    assert batch(stack, batch_id)["status"] == "in_progress"

    cancelling = stack.api.post(f"/v1/batches/{batch_id}/cancel", headers=stack.auth())
    assert cancelling.status_code == 200 and cancelling.json()["status"] == "cancelling"
    stack.poll()
    assert batch(stack, batch_id)["status"] == "cancelling"
    assert the_job(fake, batch_id).state == "JOB_STATE_CANCELLING"
    (done,) = finish(stack, batch_id)

    assert done["status"] == "cancelled" and done["cancelled_at"]
    assert the_job(fake, batch_id).state == "JOB_STATE_CANCELLED"
    assert done["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
    assert {line["error"]["code"] for line in lines(stack, done["error_file_id"])} == {"batch_cancelled"}
    assert done["cost"]["value"] == pytest.approx(float(google_batch_cost(the_job(fake, batch_id))), rel=1e-9)
    assert fake.calls[f"POST /v1/{the_job(fake, batch_id).name}:cancel"] == 1


@pytest.mark.parametrize("how", ["error", "hang"])
def test_a_lost_create_answer_makes_no_second_job(stack: Stack, vertex: tuple[FakeVertex, str], how: Any) -> None:
    fake, _ = vertex
    fake.lose_next_create = how
    fake.faults.hang_seconds = 1.2  # the answer comes after the adapter's 1 s timeout
    batch_id = started(stack, questions("gemini-via-vertex", 3))
    (done,) = finish(stack, batch_id)
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 3
    assert len(fake.jobs_named(batch_id)) == 1
    assert done["cost"]["value"] == pytest.approx(float(google_batch_cost(the_job(fake, batch_id))), rel=1e-9)


def test_embeddings_routed_to_vertex_are_refused_at_batch_creation(
    stack: Stack, vertex: tuple[FakeVertex, str]
) -> None:
    fake, _ = vertex
    line = {
        "custom_id": "e1",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "gemini-via-vertex", "input": "text"},
    }
    response = start(stack, orjson.dumps(line), endpoint="/v1/embeddings")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_endpoint" and error["param"] == "endpoint"
    assert "/v1/embeddings" in error["message"] and "/v1/chat/completions" in error["message"]
    assert not fake.jobs


def test_a_rejected_token_fails_the_batch_with_googles_message(stack: Stack, vertex: tuple[FakeVertex, str]) -> None:
    fake, _ = vertex
    batch_id = started(stack, questions("gemini-wrong-token", 2))
    (done,) = finish(stack, batch_id)
    assert done["status"] == "failed"
    (error,) = done["errors"]["data"]
    assert "HTTP 401" in error["message"] and "invalid authentication credentials" in error["message"]
    assert not fake.jobs and not fake.objects


def test_faults_still_end_every_vertex_batch_right_and_billed_once(
    stack: Stack, vertex: tuple[FakeVertex, str]
) -> None:
    # Given a Vertex that answers 500, 429 with Retry-After, or hangs past the timeout on a share of calls
    fake, _ = vertex
    fake.faults = Faults(error_rate=0.1, rate_limit_rate=0.05, hang_rate=0.05, hang_seconds=1.1, seed=11)
    fake.shard_lines = 2
    batch_ids = [started(stack, questions("gemini-flaky", 4, prefix=f"b{n}")) for n in range(3)]

    finished = finish(stack, *batch_ids, rounds=200, at_least=FAULT_PATIENCE)

    # Then each ends completed with all its lines, one Vertex job each, and its cost booked once
    assert sum(fake.calls[f"fault:{kind}"] for kind in ("500", "429", "hang")) > 0
    for n, (batch_id, done) in enumerate(zip(batch_ids, finished, strict=True)):
        assert done["status"] == "completed", done
        assert done["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
        assert sorted(line["custom_id"] for line in lines(stack, done["output_file_id"])) == [
            f"b{n}-{i}" for i in range(4)
        ]
        job = the_job(fake, batch_id)
        assert done["usage"]["input_tokens"] == job.prompt_tokens
        assert done["cost"]["value"] == pytest.approx(float(google_batch_cost(job)), rel=1e-9)
    (row,) = stack.rt.key_store.spend("master")
    assert row.batches == 3
    assert float(row.cost) == pytest.approx(
        float(sum(google_batch_cost(the_job(fake, b)) for b in batch_ids)), rel=1e-9
    )


class MintingCredentials(Credentials):
    """Credentials as ADC returns them: no token until refreshed, then one that expires."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # google-auth leaves it untyped
        self.transports: list[object] = []

    def refresh(self, request: object) -> None:
        self.transports.append(request)
        self.token = TOKEN
        self.expiry = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)


def test_adc_credentials_are_refreshed_over_urllib3_when_expired(vertex: tuple[FakeVertex, str]) -> None:
    # Given a deployment without api_key, so the adapter authenticates with (injected) default credentials
    fake, url = vertex
    deployment = Deployment(
        name="gemini-adc",
        provider="vertex",
        model="gemini-2.5-flash",
        project="test-project",
        gcs_bucket=VERTEX_BUCKET,
        api_base=url,
        storage_base=url,
        timeout=1,
    )
    credentials = MintingCredentials()
    provider = VertexProvider(deployment, None, credentials=credentials)
    content = questions("gemini-adc", 2)
    request = submit_request("batch_adc", "gemini-2.5-flash", content)
    journal = MemoryJournal()
    try:
        # When it submits, then polls after the token expired
        provider.submit(request, journal)
        assert len(credentials.transports) == 1
        credentials.expiry = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)
        status = provider.refresh(journal.refs)
    finally:
        provider.close()

    # Then the job exists, the token was minted twice, and never through the `requests` package
    assert status.state in {"validating", "in_progress"}
    assert len(fake.jobs_named("batch_adc")) == 1
    assert len(credentials.transports) == 2
    assert all(isinstance(t, google.auth.transport.urllib3.Request) for t in credentials.transports)


def test_an_upload_retried_after_503s_sends_the_whole_translated_input_again(vertex: tuple[FakeVertex, str]) -> None:
    fake, url = vertex
    fake.fail_next["POST /upload/"] = 2
    deployment = Deployment(
        name="gemini-via-vertex",
        provider="vertex",
        model="gemini-2.5-flash",
        project="test-project",
        gcs_bucket=VERTEX_BUCKET,
        api_base=url,
        storage_base=url,
        api_key=TOKEN,
        timeout=1,
    )
    content = questions("gemini-via-vertex", 50)
    request = submit_request("batch_retry", "gemini-2.5-flash", content)
    provider = VertexProvider(deployment, TOKEN)
    try:
        provider.submit(request, MemoryJournal())
    finally:
        provider.close()
    assert fake.calls[f"POST /upload/storage/v1/b/{VERTEX_BUCKET}/o"] == 3
    uploaded = fake.objects[input_object("batch_retry")].splitlines()
    assert [line_index(orjson.loads(line)) for line in uploaded] == list(range(50))
    assert len(fake.jobs_named("batch_retry")) == 1


def test_large_input_goes_up_in_256_kib_multiples_of_a_resumable_upload(
    vertex: tuple[FakeVertex, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = vertex
    monkeypatch.setattr("shared.providers.vertex.UPLOAD_CHUNK", 256 * 1024)
    deployment = Deployment(
        name="g",
        provider="vertex",
        model="gemini-2.5-flash",
        project="p",
        location="us-central1",
        gcs_bucket=VERTEX_BUCKET,
        api_base=url,
        storage_base=url,
        api_key=TOKEN,
    )
    content = b"".join(request_line(f"r{i}", "g", f"question {i} " + "x" * 500) for i in range(1500))
    request = submit_request("batch_019aa1b2c3d40000a1b2c3d4e5f6", "gemini-2.5-flash", content)

    provider = VertexProvider(deployment, TOKEN)
    try:
        provider.submit(request, MemoryJournal())
    finally:
        provider.close()
    (stored,) = [v for k, v in fake.objects.items() if k.endswith("/input.jsonl")]
    assert len(stored) > 3 * 256 * 1024 and len(stored.splitlines()) == 1500
    assert fake.calls["PUT /upload/storage/v1/b/test-bucket/o"] == -(-len(stored) // (256 * 1024))


def test_running_jobs_are_polled_from_list_pages_without_getting_each(
    stack: Stack, vertex: tuple[FakeVertex, str]
) -> None:
    # Given 30 batch prediction jobs running on Vertex, a list page holding 5 (Google may hold a page to fewer
    # than the 1,000 asked), and a job made outside the gateway in the project
    fake, _ = vertex
    fake.processing_seconds, fake.page_size = 60.0, 5
    batch_ids = [started(stack, questions("gemini-via-vertex", 1, prefix=f"b{i}")) for i in range(30)]
    stack.deliver("SubmitterFunction")
    parent = next(iter(fake.jobs)).rsplit("/", 1)[0]
    other = FakeJob(f"{parent}/999", "someone-elses-job", "gemini-2.5-flash", {}, "gs://elsewhere/out", [])
    fake.jobs[other.name] = other
    assert all(record(stack, b).status == "in_progress" for b in batch_ids)
    before = fake.calls.copy()

    # When the poller ticks
    stack.poll()

    # Then six list pages of the gateway's jobs showed them all, and no job was got on its own
    calls = fake.calls - before
    jobs = [c for c in calls if c.startswith("GET /v1/projects/") and "/batchPredictionJobs" in c]
    assert [c for c in jobs if c.endswith("/batchPredictionJobs")] == jobs and calls[jobs[0]] == 6, calls
    fake.processing_seconds = 0.0
    stack.run_until(lambda: all(record(stack, b).status == "completed" for b in batch_ids))
