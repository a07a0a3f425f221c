"""What the openai and azure adapters send, and what the fake OpenAI and Azure servers answer, checked against
the openai package's own types (shared/providers/openai.py, tests/fakes/openai_upstream.py, azure_upstream.py).

The SDK has no type for a batch input line, so its envelope is checked by hand and its body against the
endpoint's request params. Answers are parsed with the SDK's response models; Azure's may differ from them
only where Azure documents a quirk (reference/provider-apis.md section 4), which the SDK, building its
models without validating, passes through.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, get_type_hints

import orjson
import pytest
from fastapi.testclient import TestClient
from openai.types import Batch as SdkBatch
from openai.types import (
    BatchCreateParams,
    Completion,
    CreateEmbeddingResponse,
    EmbeddingCreateParams,
    FileCreateParams,
    FileDeleted,
    FileObject,
    FilePurpose,
)
from openai.types.chat import ChatCompletion
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming as ChatParams
from openai.types.completion_create_params import CompletionCreateParamsNonStreaming as TextCompletionParams
from openai.types.file_create_params import ExpiresAfter
from openai.types.responses import Response
from openai.types.responses.response_create_params import ResponseCreateParamsNonStreaming as ResponseParams
from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.providers.openai import FILE_TTL_SECONDS, UPLOAD_FIELDS, batch_line, create_body
from tests.fakes.azure_upstream import AZURE_KEY, DEPLOYMENT, FakeAzureOpenAI
from tests.fakes.openai_upstream import API_KEY, FakeOpenAI
from tests.sdk_types import extra_fields, sdk_problems

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "participants": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "participants"],
    "additionalProperties": False,
}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# OpenAI request bodies each endpoint takes, by name (the name is the custom_id sent)
BODIES: dict[str, dict[str, dict[str, Any]]] = {
    "/v1/chat/completions": {
        "plain": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]},
        "image-and-sampling": {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe this picture"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                        },
                    ],
                }
            ],
            "max_completion_tokens": 300,
            "temperature": 1.2,
            "seed": 7,
            "user": "user-1",
        },
        "tools-and-results": {
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            ],
            "tools": [TOOL],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
        },
        "structured": {
            "messages": [{"role": "user", "content": "Alice and Bob go to a fair."}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "event", "strict": True, "schema": SCHEMA},
            },
        },
    },
    "/v1/embeddings": {
        "one": {"input": "hello"},
        "many": {"input": ["a", "b"], "dimensions": 256, "encoding_format": "float"},
    },
    "/v1/completions": {"prompt": {"prompt": "Say hi", "max_tokens": 5, "temperature": 0}},
    "/v1/responses": {
        "text": {"input": "When was Microsoft founded?"},
        "image": {
            "input": [
                {"role": "system", "content": "You are a helpful assistant."},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is in this image?"},
                        {"type": "input_image", "image_url": "https://example.com/seattle.png", "detail": "low"},
                    ],
                },
            ],
            "max_output_tokens": 1000,
        },
        "structured": {
            "input": [{"role": "user", "content": "Alice and Bob go to a fair."}],
            "text": {"format": {"type": "json_schema", "name": "event", "schema": SCHEMA, "strict": True}},
        },
    },
}
PARAMS: dict[str, Any] = {
    "/v1/chat/completions": ChatParams,
    "/v1/embeddings": EmbeddingCreateParams,
    "/v1/completions": TextCompletionParams,
    "/v1/responses": ResponseParams,
}
ANSWERS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletion,
    "/v1/embeddings": CreateEmbeddingResponse,
    "/v1/completions": Completion,
    "/v1/responses": Response,
}
AZURE_ENDPOINTS = ("/v1/chat/completions", "/v1/responses")  # what Global-Batch serves
# where Azure's batch objects differ from the SDK's Batch, as its docs show: ISO 8601 timestamps,
# capitalised statuses, `endpoint: null` and null request counts while the batch runs
AZURE_BATCH_QUIRKS = {
    "created_at",
    "in_progress_at",
    "status",
    "endpoint",
    "request_counts.total",
    "request_counts.completed",
    "request_counts.failed",
}
# Azure's content filter annotations on chat bodies, which ChatCompletion does not declare
AZURE_CHAT_EXTRAS = {"choices.0.content_filter_results", "prompt_filter_results"}


def cases(endpoints: tuple[str, ...] = tuple(BODIES)) -> list[tuple[str, str]]:
    return [(endpoint, name) for endpoint in endpoints for name in BODIES[endpoint]]


def azure_url(endpoint: str) -> str:
    """The url Azure's docs give lines and creates: OpenAI's without `/v1`."""
    return endpoint.removeprefix("/v1")


def model_problems(model: type[BaseModel], value: Any) -> set[str]:
    """Where the SDK's response `model` refuses `value` (its validation errors) or does not declare it."""
    try:
        parsed = model.model_validate(value)
    except ValidationError as exc:
        return {".".join(str(part) for part in error["loc"]) for error in exc.errors()}
    return set(extra_fields(parsed))


def uploaded_form(fields: dict[str, str]) -> dict[str, Any]:
    """The upload's form fields as the SDK's FileCreateParams: `name[key]` fields nested, numbers as numbers."""
    form: dict[str, Any] = {}
    for name, value in fields.items():
        nested = re.fullmatch(r"(\w+)\[(\w+)\]", name)
        typed = int(value) if value.isdigit() else value
        if nested:
            form.setdefault(nested[1], {})[nested[2]] = typed
        else:
            form[name] = typed
    return form


# --- what the adapters send ----------------------------------------------------------------------------------


def test_sdk_checks_refuse_unknown_keys_and_wrong_types_in_what_is_sent() -> None:
    body = BODIES["/v1/chat/completions"]["tools-and-results"] | {"model": DEPLOYMENT}
    assert sdk_problems(body, TypeAdapter(ChatParams), ChatParams) == []
    assert sdk_problems(body | {"max_tokens_to_sample": 5}, TypeAdapter(ChatParams), ChatParams) == [
        "max_tokens_to_sample"
    ]
    assert "temperature" in sdk_problems(body | {"temperature": "hot"}, TypeAdapter(ChatParams), ChatParams)[0]
    batch = create_body("file-1", "/v1/chat/completions", "batch_x")
    assert sdk_problems(batch | {"window": "24h"}, TypeAdapter(BatchCreateParams), BatchCreateParams) == ["window"]


@pytest.mark.parametrize(
    ("provider", "endpoint", "name"),
    [("openai", *case) for case in cases()] + [("azure", *case) for case in cases(AZURE_ENDPOINTS)],
)
def test_each_uploaded_line_is_a_batch_request_line_with_the_endpoints_sdk_params(
    provider: str, endpoint: str, name: str
) -> None:
    url = endpoint if provider == "openai" else azure_url(endpoint)
    line = orjson.loads(batch_line(name, {"model": "our-name", **BODIES[endpoint][name]}, model=DEPLOYMENT, url=url))
    assert list(line) == ["custom_id", "method", "url", "body"]
    assert (line["custom_id"], line["method"], line["url"]) == (name, "POST", url)
    assert line["body"]["model"] == DEPLOYMENT
    assert sdk_problems(line["body"], TypeAdapter(PARAMS[endpoint]), PARAMS[endpoint]) == []


@pytest.mark.parametrize("endpoint", BODIES)
def test_each_create_body_is_the_sdks_batch_create_params(endpoint: str) -> None:
    body = create_body("file-abc", endpoint, "batch_123")
    assert sdk_problems(body, TypeAdapter(BatchCreateParams), BatchCreateParams) == []
    assert body["output_expires_after"] == {"anchor": "created_at", "seconds": FILE_TTL_SECONDS}


@pytest.mark.parametrize("endpoint", AZURE_ENDPOINTS)
def test_azure_create_body_differs_from_the_sdks_only_by_azures_documented_endpoint(endpoint: str) -> None:
    body = create_body("file-abc", azure_url(endpoint), "batch_123")
    (problem,) = sdk_problems(body, TypeAdapter(BatchCreateParams), BatchCreateParams)
    assert "endpoint" in problem
    assert sdk_problems(body | {"endpoint": endpoint}, TypeAdapter(BatchCreateParams), BatchCreateParams) == []


def test_upload_fields_are_the_sdks_file_params_with_an_expiry_openai_and_azure_both_take() -> None:
    # FileCreateParams' `file` (an IO) has no pydantic schema: its other fields are checked one by one
    form = uploaded_form(UPLOAD_FIELDS)
    assert set(form) == set(get_type_hints(FileCreateParams)) - {"file"}
    assert sdk_problems(form["purpose"], TypeAdapter(FilePurpose), FilePurpose) == []
    assert sdk_problems(form["expires_after"], TypeAdapter(ExpiresAfter), ExpiresAfter) == []
    seconds = form["expires_after"]["seconds"]
    # OpenAI takes 3600 to 2592000 seconds; Azure 1209600 to 2592000 (14 to 30 days)
    assert 3600 <= seconds <= 2_592_000 and 1_209_600 <= seconds <= 2_592_000


# --- what the fakes answer -------------------------------------------------------------------------------


def run(client: TestClient, prefix: str, endpoint: str, url: str, **params: str) -> Iterator[tuple[str, Any]]:
    """Every answer of one batch's life at a fake, as (what, JSON): upload, file, create, list, retrieve once
    it has ended (the fake runs it at once), each result file and line, delete. The batch holds every body of
    `endpoint` as the adapter sends it, and one request the fake fails."""
    lines = b"".join(
        batch_line(name, body, model=DEPLOYMENT, url=url) for name, body in BODIES[endpoint].items()
    ) + batch_line("fail-0", next(iter(BODIES[endpoint].values())), model=DEPLOYMENT, url=url)
    upload = client.post(f"{prefix}/files", params=params, data=UPLOAD_FIELDS, files={"file": ("b.jsonl", lines)})
    assert upload.status_code == 200, upload.text
    file_id = upload.json()["id"]
    yield "file", upload.json()
    yield "file", client.get(f"{prefix}/files/{file_id}", params=params).json()
    created = client.post(f"{prefix}/batches", params=params, json=create_body(file_id, url, "batch_1"))
    assert created.status_code == 200, created.text
    yield "batch", created.json()
    for listed in client.get(f"{prefix}/batches", params=params).json()["data"]:
        yield "batch", listed
    ended = client.get(f"{prefix}/batches/{created.json()['id']}", params=params).json()
    yield "batch", ended
    assert str(ended["status"]).lower() == "completed"
    for key in ("output_file_id", "error_file_id"):
        if ended[key]:
            yield "file", client.get(f"{prefix}/files/{ended[key]}", params=params).json()
            for raw in client.get(f"{prefix}/files/{ended[key]}/content", params=params).content.splitlines():
                yield "line", orjson.loads(raw)
    yield "deleted", client.delete(f"{prefix}/files/{file_id}", params=params).json()


def problems_by_kind(answers: list[tuple[str, Any]], endpoint: str) -> dict[str, set[str]]:
    """Where the answers of each kind differ from the SDK's types for them."""
    found: dict[str, set[str]] = {"file": set(), "batch": set(), "line": set(), "deleted": set()}
    for what, answer in answers:
        found[what] |= answer_problems(what, answer, endpoint)
    return found


def answer_problems(what: str, answer: Any, endpoint: str) -> set[str]:
    """Where one answer differs from the SDK's type for it."""
    if what == "batch":
        return model_problems(SdkBatch, answer)
    if what == "file":
        return model_problems(FileObject, answer)
    if what == "deleted":
        return model_problems(FileDeleted, answer)
    found = {f"line.{key}" for key in answer if key not in ("id", "custom_id", "response", "error")}
    response = answer["response"]
    if response is not None and response["status_code"] == 200:
        found |= model_problems(ANSWERS[endpoint], response["body"])
    return found


@pytest.mark.parametrize("endpoint", BODIES)
def test_fake_openai_answers_are_the_sdks_types(endpoint: str) -> None:
    fake = FakeOpenAI(processing_seconds=0)
    with TestClient(fake.app, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        answers = list(run(client, "/v1", endpoint, endpoint))
    assert problems_by_kind(answers, endpoint) == {"file": set(), "batch": set(), "line": set(), "deleted": set()}
    succeeded = [a for what, a in answers if what == "line" and a["response"] and a["response"]["status_code"] == 200]
    assert len(succeeded) == len(BODIES[endpoint])


@pytest.mark.parametrize("endpoint", AZURE_ENDPOINTS)
@pytest.mark.parametrize("prefix", ["/openai/v1", "/openai"])
def test_fake_azure_answers_are_the_sdks_types_but_for_azures_documented_quirks(endpoint: str, prefix: str) -> None:
    fake = FakeAzureOpenAI(processing_seconds=0)
    params = {"api-version": "2024-10-21"} if prefix == "/openai" else {}
    with TestClient(fake.app, headers={"api-key": AZURE_KEY}) as client:
        answers = list(run(client, prefix, endpoint, azure_url(endpoint), **params))
    chat = endpoint == "/v1/chat/completions"
    assert problems_by_kind(answers, endpoint) == {
        "file": set(),
        "batch": AZURE_BATCH_QUIRKS,
        "line": AZURE_CHAT_EXTRAS if chat else set(),
        "deleted": set(),
    }
    # and Azure's output lines carry no `id`
    assert not any("id" in answer for what, answer in answers if what == "line")


def test_fake_azure_file_still_pending_differs_from_the_sdks_file_only_by_its_status() -> None:
    fake = FakeAzureOpenAI()
    fake.file_processing_seconds = 60
    with TestClient(fake.app, headers={"api-key": AZURE_KEY}) as client:
        upload = client.post("/openai/v1/files", data=UPLOAD_FIELDS, files={"file": ("a.jsonl", b"{}\n")}).json()
    assert upload["status"] == "pending" and model_problems(FileObject, upload) == {"status"}
