"""The Bedrock adapter's calls and records, and the fake Bedrock's answers, against botocore's own service models.

The adapter runs against moto's S3 with its real botocore `bedrock` client, answered by a Stubber, so what it
sends is what botocore would put on the wire. botocore's ParamValidator checks types, required and unknown
members and minimums; Bedrock also checks maximums, patterns and enums server-side, which `shape_problems`
checks too. Claude records are checked against the `anthropic` package's own params type instead (Bedrock's
InvokeModel body for Claude is Anthropic's Messages params, less `model`, plus `anthropic_version`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.session
import orjson
import pytest
from anthropic.types import Message
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from botocore.model import ListShape, OperationModel, Shape, StructureShape
from botocore.serialize import create_serializer
from botocore.stub import Stubber
from botocore.validate import ParamValidator
from moto import mock_aws
from pydantic import TypeAdapter

from shared.providers.base import ResultLine
from shared.providers.bedrock import BedrockProvider
from shared.providers.bedrock_format import ANTHROPIC_VERSION
from shared.routing import Deployment
from tests.fakes.bedrock_upstream import OUT_OF_TIME_MARKER, FakeBedrock, FakeJob
from tests.fakes.journal import MemoryJournal, submit_request
from tests.sdk_types import extra_fields, openai_completion_problems, sdk_problems

_BOTOCORE = botocore.session.get_session()
BEDROCK = _BOTOCORE.get_service_model("bedrock")
RUNTIME = _BOTOCORE.get_service_model("bedrock-runtime")
CREATE_REQUEST = BEDROCK.shape_for("CreateModelInvocationJobRequest")
CREATE_RESPONSE = BEDROCK.shape_for("CreateModelInvocationJobResponse")
GET_RESPONSE = BEDROCK.shape_for("GetModelInvocationJobResponse")
LIST_RESPONSE = BEDROCK.shape_for("ListModelInvocationJobsResponse")
CONVERSE = RUNTIME.operation_model("Converse")
CONVERSE_REQUEST = RUNTIME.shape_for("ConverseRequest")
CONVERSE_RESPONSE = RUNTIME.shape_for("ConverseResponse")
PARAMS = TypeAdapter(MessageCreateParamsNonStreaming)

CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
CLAUDE_PROFILE = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
NOVA = "amazon.nova-lite-v1:0"
BUCKET = "batchgw-dev"
BATCH_ID = "batch_019aa1b2c3d40000a1b2c3d4e5f6"
STUB_JOB = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefghij12"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg=="
PDF = "JVBERi0xLjQK"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def chat(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "on-bedrock", "messages": list(messages), **fields}


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


PICTURE = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}}

# OpenAI chat bodies Bedrock takes for every model, by name
COMMON_BODIES: dict[str, dict[str, Any]] = {
    "plain": chat(user("Hello")),
    "system-and-developer": chat(
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [text("Answer in French.")]},
        user("Hello"),
    ),
    "multi-turn-merged": chat(
        user("one"), user([text("two")]), {"role": "assistant", "content": "three"}, user([text("four")])
    ),
    "image": chat(user([text("What is this?"), PICTURE])),
    "stops": chat(user("Count"), stop=["\n\n", "", "END"]),
    "hot-temperature-and-top-p": chat(user("Be creative"), temperature=1.7, top_p=0.9),
    "max-tokens": chat(user("Short"), max_tokens=5),
    "max-completion-tokens": chat(user("Short"), max_tokens=300, max_completion_tokens=7),
    "json-object": chat(user("A JSON verdict?"), response_format={"type": "json_object"}),
    "dropped-openai-knobs": chat(user("Hi"), seed=1, n=1, presence_penalty=0.5, logprobs=False),
}
# and those only Claude's native body takes
CLAUDE_BODIES: dict[str, dict[str, Any]] = {
    **COMMON_BODIES,
    "pdf": chat(
        user([{"type": "file", "file": {"filename": "a.pdf", "file_data": f"data:application/pdf;base64,{PDF}"}}])
    ),
    "tools": chat(user("Weather?"), tools=[WEATHER_TOOL], tool_choice="required"),
    "tool-calls-and-results": chat(
        user("Weather in Paris?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"P"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        tools=[WEATHER_TOOL],
    ),
    "json-schema": chat(
        user("Is water wet?"),
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": {"type": "object"}}},
    ),
    "user": chat(user("Hi"), user="user-1234"),
}


# --- checking against a service model ---------------------------------------------------------------


def shape_problems(value: Any, shape: Shape) -> list[str]:
    """What `shape` refuses in `value`: botocore's ParamValidator, then the maximums, patterns and enums it skips."""
    report = ParamValidator().validate(value, shape)
    found = [report.generate_report()] if report.has_errors() else []
    return found + [problem.lstrip(".") for problem in constraint_problems(value, shape, "")]


def constraint_problems(value: Any, shape: Shape, where: str) -> list[str]:
    """The paths where `value` breaks a `max`, `pattern` or `enum` of `shape` (types are ParamValidator's job)."""
    limits = shape.metadata
    if isinstance(shape, StructureShape) and isinstance(value, dict) and not shape.is_document_type:
        return [
            problem
            for name, item in value.items()
            if name in shape.members
            for problem in constraint_problems(item, shape.members[name], f"{where}.{name}")
        ]
    if isinstance(shape, ListShape) and isinstance(value, list):
        found = [f"{where}: {len(value)} items, above {limits['max']}"] if len(value) > limits.get("max", 1e9) else []
        return found + [
            p for i, item in enumerate(value) for p in constraint_problems(item, shape.member, f"{where}.{i}")
        ]
    if shape.type_name == "string" and isinstance(value, str):
        found = []
        if "enum" in limits and value not in limits["enum"]:
            found.append(f"{where}: {value!r} is not one of {limits['enum']}")
        if "pattern" in limits and re.fullmatch(limits["pattern"], value) is None:
            found.append(f"{where}: {value!r} does not match {limits['pattern']}")
        if len(value) > limits.get("max", 1e9):
            found.append(f"{where}: longer than {limits['max']}")
        return found
    if shape.type_name in ("integer", "long", "float", "double") and isinstance(value, int | float):
        return [f"{where}: {value} is above {limits['max']}"] if value > limits.get("max", 1e9) else []
    return []


def blobs_as_bytes(value: Any, shape: Shape) -> Any:
    """`value` as boto3 params: the blobs a JSON body carries as base64 text, as the bytes they hold."""
    if shape.type_name == "blob" and isinstance(value, str):
        return base64.b64decode(value, validate=True)
    if isinstance(shape, StructureShape) and isinstance(value, dict) and not shape.is_document_type:
        return {k: blobs_as_bytes(v, shape.members[k]) if k in shape.members else v for k, v in value.items()}
    if isinstance(shape, ListShape) and isinstance(value, list):
        return [blobs_as_bytes(item, shape.member) for item in value]
    return value


def json_body(params: dict[str, Any], operation: OperationModel) -> Any:
    """The JSON body botocore sends for `params` (members bound to the URI, like `modelId`, are not in it)."""
    request = create_serializer(operation.metadata["protocol"]).serialize_to_request(params, operation)
    return orjson.loads(request["body"])


def test_shape_checks_catch_what_bedrock_refuses_beyond_botocores_own_validation() -> None:
    good = {"modelId": NOVA, "messages": [{"role": "user", "content": [{"text": "Hi"}]}]}
    assert shape_problems(good, CONVERSE_REQUEST) == []
    assert "inferenceConfig.temperature: 1.7 is above 1" in shape_problems(
        {**good, "inferenceConfig": {"temperature": 1.7}}, CONVERSE_REQUEST
    )
    stray = {"role": "user", "content": [{"text": "Hi"}], "modelInput": {}}
    (unknown,) = shape_problems({**good, "messages": [stray]}, CONVERSE_REQUEST)
    assert 'Unknown parameter in messages[0]: "modelInput"' in unknown
    refused = shape_problems({**good, "messages": [{"role": "critic", "content": [{"text": "Hi"}]}]}, CONVERSE_REQUEST)
    assert refused == ["messages.0.role: 'critic' is not one of ['user', 'assistant', 'system']"]
    bad_name = {"jobName": "batchgw_batch_01", "roleArn": "arn:aws:iam::123456789012:role/r", "modelId": NOVA}
    create = {
        **bad_name,
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": f"s3://{BUCKET}/in.jsonl"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{BUCKET}/out/"}},
    }
    (problem,) = shape_problems(create, CREATE_REQUEST)
    assert problem.startswith("jobName: 'batchgw_batch_01' does not match")


# --- what the adapter sends -------------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield


def provider_for(model: str) -> BedrockProvider:
    deployment = Deployment(
        name="on-bedrock",
        provider="bedrock",
        model=model,
        role_arn="arn:aws:iam::123456789012:role/batchgw-bedrock",
        s3_bucket=BUCKET,
        region="us-east-1",
        min_requests=1,
    )
    return BedrockProvider(deployment, boto3.session.Session())


def submitted(
    model: str, bodies: dict[str, dict[str, Any]], batch_id: str = BATCH_ID
) -> tuple[BedrockProvider, MemoryJournal, dict[str, Any]]:
    """Submit `bodies` (custom_id: body) through an adapter for `model`: the adapter, its journal and the
    CreateModelInvocationJob params its real `bedrock` client sent, answered by a Stubber."""
    provider = provider_for(model)
    content = b"".join(
        orjson.dumps({"custom_id": name, "method": "POST", "url": "/v1/chat/completions", "body": body}) + b"\n"
        for name, body in bodies.items()
    )
    client = provider._bedrock
    sent: list[dict[str, Any]] = []
    client.meta.events.register(
        "provide-client-params.bedrock.CreateModelInvocationJob", lambda params, **_: sent.append(dict(params))
    )
    journal = MemoryJournal(batch_id)
    with Stubber(client) as stub:
        stub.add_response("create_model_invocation_job", {"jobArn": STUB_JOB})
        provider.submit(submit_request(batch_id, model, content), journal)
        stub.assert_no_pending_responses()
    (params,) = sent
    return provider, journal, params


def written_records(journal: MemoryJournal) -> list[dict[str, Any]]:
    key = journal.refs["input_uri"].removeprefix(f"s3://{BUCKET}/")
    body = boto3.client("s3", region_name="us-east-1").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return [orjson.loads(line) for line in body.splitlines()]


@pytest.mark.usefixtures("aws")
@pytest.mark.parametrize(("model", "invocation"), [(CLAUDE, None), (CLAUDE_PROFILE, None), (NOVA, "Converse")])
def test_create_job_call_is_a_valid_create_model_invocation_job_request(model: str, invocation: str | None) -> None:
    _, journal, params = submitted(model, {"plain": COMMON_BODIES["plain"]})
    assert shape_problems(params, CREATE_REQUEST) == []
    assert params.get("modelInvocationType") == invocation and params["modelId"] == model
    assert params["inputDataConfig"]["s3InputDataConfig"]["s3Uri"] == journal.refs["input_uri"]
    assert journal.refs["batch_id"] == STUB_JOB


@pytest.mark.usefixtures("aws")
def test_every_converse_record_is_a_bedrock_runtime_converse_request() -> None:
    _, journal, _ = submitted(NOVA, COMMON_BODIES)
    records = written_records(journal)
    assert len(records) == len(COMMON_BODIES)
    for record in records:
        # the form of record id Bedrock's docs show, and give records without one
        assert re.fullmatch("[a-zA-Z0-9]{11}", record["recordId"]), record["recordId"]
        model_input = record["modelInput"]
        # boto3 takes the image as bytes; Bedrock's JSON protocol, and so a batch record, carries them as
        # base64 text: botocore sends exactly the record's modelInput as Converse's body
        params = {**blobs_as_bytes(model_input, CONVERSE_REQUEST), "modelId": NOVA}
        assert shape_problems(params, CONVERSE_REQUEST) == [], model_input
        assert json_body(params, CONVERSE) == model_input


@pytest.mark.usefixtures("aws")
@pytest.mark.parametrize("model", [CLAUDE, CLAUDE_PROFILE])
def test_every_claude_record_is_anthropics_message_params_less_model_plus_bedrocks_version(model: str) -> None:
    _, journal, _ = submitted(model, CLAUDE_BODIES)
    records = written_records(journal)
    assert len(records) == len(CLAUDE_BODIES)
    for record in records:
        body = dict(record["modelInput"])
        assert body.pop("anthropic_version") == ANTHROPIC_VERSION and "model" not in body
        assert sdk_problems({**body, "model": model}, PARAMS, MessageCreateParamsNonStreaming) == []


# --- what the fake answers --------------------------------------------------------------------------


def run_in_fake(fake: FakeBedrock, params: dict[str, Any]) -> FakeJob:
    """The job the fake makes for the adapter's create call, its answer checked."""
    created = orjson.loads(fake.create(params).body)
    assert shape_problems(created, CREATE_RESPONSE) == []
    return fake.jobs[created["jobArn"]]


def answer_problems(fake: FakeBedrock, job: FakeJob) -> list[str]:
    """What botocore's GetModelInvocationJob and ListModelInvocationJobs output shapes refuse in the fake's answers."""
    return shape_problems(fake.job_json(job), GET_RESPONSE) + shape_problems(fake.list_json(), LIST_RESPONSE)


def output_records(job: FakeJob) -> list[dict[str, Any]]:
    (key,) = [key for key in job.output_keys if key.endswith(".jsonl.out")]
    body = boto3.client("s3", region_name="us-east-1").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return [orjson.loads(line) for line in body.splitlines()]


@pytest.mark.usefixtures("aws")
@pytest.mark.parametrize(("model", "bodies"), [(CLAUDE, CLAUDE_BODIES), (NOVA, COMMON_BODIES)])
def test_fake_runs_the_adapters_job_answering_in_bedrocks_shapes_and_results_read_as_openai_types(
    model: str, bodies: dict[str, dict[str, Any]]
) -> None:
    # Given the adapter's job at the fake
    fake = FakeBedrock(processing_seconds=0, min_records=1)
    provider, journal, params = submitted(model, bodies)
    job = run_in_fake(fake, params)
    assert job.status == "Submitted" and answer_problems(fake, job) == []

    # When it runs to its end
    fake.advance(job)

    # Then every record succeeded, answered in Bedrock's shapes, its outputs in Converse's or Anthropic's
    assert job.status == "Completed" and job.succeeded == len(bodies)
    assert answer_problems(fake, job) == []
    for record in output_records(job):
        if model == NOVA:
            assert shape_problems(record["modelOutput"], CONVERSE_RESPONSE) == []
        else:
            assert extra_fields(Message.model_validate(record["modelOutput"])) == []

    # and the adapter reads them as OpenAI chat completions
    results = list(provider.results({**journal.refs, "batch_id": job.arn}, list(bodies)))
    assert sorted(line.custom_id for line in results if line.custom_id) == sorted(bodies)
    for line in results:
        assert isinstance(line, ResultLine) and line.succeeded, line
        assert openai_completion_problems({"response": line.response}) == []


def create_params(input_key: str, name: str) -> dict[str, Any]:
    return {
        "jobName": name,
        "roleArn": "arn:aws:iam::123456789012:role/batchgw-bedrock",
        "clientRequestToken": name,
        "modelId": NOVA,
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": f"s3://{BUCKET}/{input_key}", "s3InputFormat": "JSONL"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{BUCKET}/{name}/output/"}},
        "modelInvocationType": "Converse",
    }


@pytest.mark.usefixtures("aws")
def test_fake_answers_for_errored_late_and_stopped_jobs_are_bedrocks_shapes() -> None:
    # Given a job with a good record, one the Converse shape refuses and one Bedrock does not get to in time
    ask = {"role": "user", "content": [{"text": "question"}]}
    late = {"role": "user", "content": [{"text": f"{OUT_OF_TIME_MARKER} question"}]}
    records = [
        {"recordId": "r0000000000", "modelInput": {"messages": [ask]}},
        {"recordId": "r0000000001", "modelInput": {"messages": [ask], "inferenceConfig": {"temperature": "hot"}}},
        {"recordId": "r0000000002", "modelInput": {"messages": [late]}},
    ]
    key = "manual/input.jsonl"
    body = b"".join(orjson.dumps(record) + b"\n" for record in records)
    boto3.client("s3", region_name="us-east-1").put_object(Bucket=BUCKET, Key=key, Body=body)
    fake = FakeBedrock(processing_seconds=0, min_records=1)
    job = run_in_fake(fake, create_params(key, "manual"))
    assert shape_problems(create_params(key, "manual"), CREATE_REQUEST) == []

    # When it ends
    fake.advance(job)

    # Then it is PartiallyCompleted, the late record absent, the refused one an error record saying why
    assert job.status == "PartiallyCompleted" and answer_problems(fake, job) == []
    written = {record["recordId"]: record for record in output_records(job)}
    assert sorted(written) == ["r0000000000", "r0000000001"]
    assert shape_problems(written["r0000000000"]["modelOutput"], CONVERSE_RESPONSE) == []
    error = written["r0000000001"]["error"]
    assert error["errorCode"] == 400 and "inferenceConfig.temperature" in error["errorMessage"]
    assert fake.job_json(job)["errorRecordCount"] == 1 and fake.job_json(job)["processedRecordCount"] == 2

    # and a stopped job answers in Bedrock's shapes on its way
    fake.processing_seconds = 60
    stopped = run_in_fake(fake, create_params(key, "stopped"))
    stopped.stop_requested = True
    states = []
    for _ in range(2):
        fake.advance(stopped)
        states.append(stopped.status)
        assert answer_problems(fake, stopped) == []
    assert states == ["Stopping", "Stopped"]
