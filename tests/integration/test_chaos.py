"""Chaos: each provider adapter reads a result file that mixes good lines with every defect its format can
carry (tests/fakes/defects.py), repeats of lines and lines naming no request, through the real handlers.

Whatever the provider writes, the batch completes, each request has exactly one line, the counts add up,
and only the good lines are priced, at exactly what the fake billed for them. Expected costs come from the
fake's billing and the deployments' `pricing` override, not from our pricing code.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
import pytest

from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import RESULT_LINE, usage_for
from tests.fakes.azure_upstream import AZURE_KEY, DEPLOYMENT
from tests.fakes.bedrock_upstream import CLAUDE_RECORD, CONVERSE_RECORD, tokens_for
from tests.fakes.defects import DEFECTS, OPENAI_LINE, Defect, LineFormat
from tests.fakes.mistral_upstream import API_KEY as MISTRAL_KEY
from tests.fakes.openai_upstream import API_KEY as OPENAI_KEY
from tests.fakes.together_upstream import API_KEY as TOGETHER_KEY
from tests.fakes.vertex_upstream import PREDICTION_LINE, BilledUsage
from tests.integration.conftest import Stack, bedrock_keys, finish, lines, started, vertex_keys

MTOK = 1_000_000
# the chaos deployments' pricing override, USD per million tokens
INPUT_RATE, CACHED_RATE, OUTPUT_RATE = 1.0, 0.25, 4.0
GOOD = ("good-0", "good-1", "good-2")
FAILED = "fail-0"  # a request the provider fails: an error line of its own, not a defect
REPEATED: frozenset[Defect] = frozenset({"duplicate", "duplicate_differing"})  # defects whose first line is good
GARBAGE_LINES = 3  # what garbage_lines writes: bytes that are not JSON, a JSON array, a line naming no request


class Tokens(NamedTuple):
    """What a fake billed one request, in OpenAI's terms."""

    prompt: int  # cached tokens included
    cached: int
    completion: int


def _only(found: Mapping[str, Any]) -> Any:
    (one,) = found.values()
    return one


def _openai_billed(fake: Any, index: int, custom_id: str) -> Tokens:
    prompt, completion = _only(fake.batches).line_usage[custom_id]
    return Tokens(prompt, 0, completion)


def _mistral_billed(fake: Any, index: int, custom_id: str) -> Tokens:
    prompt, completion = _only(fake.jobs).line_usage[custom_id]
    return Tokens(prompt, 0, completion)


def _anthropic_billed(fake: Any, index: int, custom_id: str) -> Tokens:
    usage = usage_for(index)
    cache_read = usage["cache_read_input_tokens"]
    prompt = usage["input_tokens"] + cache_read + usage["cache_creation_input_tokens"]
    return Tokens(prompt, cache_read, usage["output_tokens"])


def _vertex_billed(fake: Any, index: int, custom_id: str) -> Tokens:
    usage = BilledUsage.of(index)
    return Tokens(usage.prompt, usage.cached, usage.candidates + usage.thoughts)


def _bedrock_billed(fake: Any, index: int, custom_id: str) -> Tokens:
    prompt, completion = tokens_for(index)
    return Tokens(prompt, 0, completion)


# what the error line of each defect says was wrong, by the format it was written in
OPENAI_SAYS: Mapping[Defect, str] = {
    "no_status": "status_code None is not an HTTP status",
    "status_as_string": "status_code '200' is not an HTTP status",
    "body_not_object": "body is not a JSON object",
    "negative_usage": "token count -5 is not a non-negative integer",
    "usage_not_number": "tokens' is not a non-negative integer",
    "cut": "not valid JSON",
}
ANTHROPIC_SAYS: Mapping[Defect, str] = {
    "no_status": "its result type None is unknown",
    "status_as_string": "its result type '200' is unknown",
    "body_not_object": "its message is '<html>",
    "negative_usage": "its usage.input_tokens is -5, not a count of tokens",
    "usage_not_number": "tokens', not a count of tokens",
    "cut": "not valid JSON",
}


@dataclass(frozen=True)
class Case:
    """A provider adapter and its fake, for the chaos test."""

    fixture: str  # the fixture that starts the fake
    keys: Callable[[str], str]  # the deployment's routing keys for the fake at a URL, but its name and pricing
    form: LineFormat  # the format the fake writes its results in
    says: Mapping[Defect, str]  # a part of the message of each defect's error line
    billed: Callable[[Any, int, str], Tokens]  # what the fake billed the request at an input index, by custom_id
    by_index: bool = False  # the fake knows requests by their input index, not their custom_id
    min_records: int | None = None  # the least records the fake's account takes in a batch


CASES = {
    "openai": Case(
        "upstream",
        lambda url: f'provider: openai, model: gpt-4o-mini, api_base: "{url}/v1", api_key: {OPENAI_KEY}, timeout: 1',
        OPENAI_LINE,
        OPENAI_SAYS,
        _openai_billed,
    ),
    "azure": Case(
        "azure",
        lambda url: f'provider: azure, model: {DEPLOYMENT}, api_base: "{url}", api_key: {AZURE_KEY}, timeout: 1',
        OPENAI_LINE,
        OPENAI_SAYS,
        _openai_billed,
    ),
    "anthropic": Case(
        "anthropic",
        lambda url: (
            f'provider: anthropic, model: claude-sonnet-4-5, api_base: "{url}", api_key: {ANTHROPIC_KEY}, timeout: 1'
        ),
        RESULT_LINE,
        ANTHROPIC_SAYS,
        _anthropic_billed,
    ),
    "vertex": Case(
        "vertex",
        lambda url: f"model: gemini-2.5-flash, {vertex_keys(url)}",
        PREDICTION_LINE,
        {
            "no_status": "it has no status and its response is not an object: null",
            "body_not_object": "it has no status and its response is not an object",
            "negative_usage": "response.usageMetadata.promptTokenCount is not a token count: -5",
            "usage_not_number": "response.usageMetadata.promptTokenCount is not a token count",
            "cut": "a prediction line is not valid JSON",
        },
        _vertex_billed,
        by_index=True,
    ),
    "bedrock-claude": Case(
        "bedrock",
        lambda url: f'model: "anthropic.claude-3-5-sonnet-20240620-v1:0", min_requests: 10, {bedrock_keys(url)}',
        CLAUDE_RECORD,
        {
            "no_status": "the record has neither a modelOutput nor an error",
            "body_not_object": "its message is '<html>",
            "negative_usage": "its usage.input_tokens is -5, not a count of tokens",
            "usage_not_number": "tokens', not a count of tokens",
            "cut": "a record is not valid JSON",
        },
        _bedrock_billed,
        by_index=True,
        min_records=10,
    ),
    "bedrock-converse": Case(
        "bedrock",
        lambda url: f'model: "amazon.nova-lite-v1:0", min_requests: 10, {bedrock_keys(url)}',
        CONVERSE_RECORD,
        {
            "no_status": "the record has neither a modelOutput nor an error",
            "body_not_object": "its modelOutput is '<html>",
            "negative_usage": "its usage.inputTokens is -5, not a count of tokens",
            "usage_not_number": "tokens', not a count of tokens",
            "cut": "a record is not valid JSON",
        },
        _bedrock_billed,
        by_index=True,
        min_records=10,
    ),
    "mistral": Case(
        "mistral",
        lambda url: (
            f'provider: mistral, model: mistral-small-latest, api_base: "{url}/v1", api_key: {MISTRAL_KEY}, timeout: 1'
        ),
        OPENAI_LINE,
        OPENAI_SAYS,
        _mistral_billed,
    ),
    "together": Case(
        "together",
        lambda url: (
            f'provider: together, model: meta-llama/Llama-3.3-70B-Instruct-Turbo, api_base: "{url}/v1", '
            f"api_key: {TOGETHER_KEY}, timeout: 1"
        ),
        OPENAI_LINE,
        OPENAI_SAYS,
        _openai_billed,
    ),
}


@pytest.fixture(params=sorted(CASES))
def provider(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def extra_routes(provider: str, request: pytest.FixtureRequest) -> str:
    case = CASES[provider]
    _, url = request.getfixturevalue(case.fixture)  # starts this provider's fake only
    pricing = f"input_per_mtok: {INPUT_RATE}, output_per_mtok: {OUTPUT_RATE}, cached_input_per_mtok: {CACHED_RATE}"
    return f"""
  - {{name: chaos, {case.keys(url)}, pricing: {{{pricing}}}}}
"""


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def completion_warnings() -> Iterator[list[str]]:
    """The warnings the completion step logs (its handler's logging config stops them reaching caplog)."""
    log, handler = logging.getLogger("shared.completion"), _Messages()
    log.addHandler(handler)
    yield handler.messages
    log.removeHandler(handler)


def chat_lines(custom_ids: list[str]) -> bytes:
    """A batch input of one chat request per custom_id, each asking about its custom_id (so `fail` fails)."""
    return b"".join(
        orjson.dumps(
            {
                "custom_id": custom_id,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "chaos", "messages": [{"role": "user", "content": f"question {custom_id}"}]},
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        for custom_id in custom_ids
    )


def test_results_mixing_good_lines_with_every_defect_complete_each_request_once_and_price_the_good_exactly(
    stack: Stack, provider: str, request: pytest.FixtureRequest, completion_warnings: list[str]
) -> None:
    # Given a provider that writes each defect its format can carry into one request's result, repeats two
    # good lines (once as they were, once with other usage) and mixes in lines that name no request
    case = CASES[provider]
    fake, _ = request.getfixturevalue(case.fixture)
    defects = [d for d in DEFECTS if case.form.takes(d)]
    custom_ids = [*GOOD, *defects, FAILED]
    fake.corrupt = {custom_ids.index(d) if case.by_index else d: d for d in defects}
    fake.garbage = True
    if case.min_records is not None:
        fake.min_records = case.min_records

    # When a batch of those requests runs
    (done,) = finish(stack, started(stack, chat_lines(custom_ids)))

    # Then it completes, every request with exactly one line, and no handler failed
    assert done["status"] == "completed", done
    output_lines, error_lines = lines(stack, done["output_file_id"]), lines(stack, done["error_file_id"])
    assert Counter(line["custom_id"] for line in output_lines + error_lines) == Counter(custom_ids)
    output = {line["custom_id"]: line for line in output_lines}
    errors = {line["custom_id"]: line for line in error_lines}
    assert not stack.failures

    # and the garbage lines were read and set aside, each logged for the operator
    assert completion_warnings.count("a provider result line names no request of the batch") == GARBAGE_LINES

    # and the good lines, the repeated ones once, are the output; the provider's failure is its own error line
    priced = [*GOOD, *sorted(REPEATED)]
    assert sorted(output) == sorted(priced)
    assert errors[FAILED]["response"]["status_code"] == 400

    # and each other defect is a provider_error line saying what was wrong
    broken = [d for d in defects if d not in REPEATED]
    assert sorted(errors) == sorted([FAILED, *broken])
    for defect in broken:
        error = errors[defect]["error"]
        assert error["code"] == "provider_error", (defect, errors[defect])
        assert case.says[defect] in error["message"], (defect, error["message"])

    # and the counts add up
    assert done["request_counts"] == {"total": len(custom_ids), "completed": len(priced), "failed": len(errors)}

    # and the usage is what the fake billed for the good lines, the first of each repeated one, priced exactly
    billed = {c: case.billed(fake, custom_ids.index(c), c) for c in priced}
    # (the repeat that differs bills EXTRA_TOKENS more: the first line was kept)
    kept = output["duplicate_differing"]["response"]["body"]["usage"]
    assert kept["prompt_tokens"] == billed["duplicate_differing"].prompt
    prompt = sum(b.prompt for b in billed.values())
    cached = sum(b.cached for b in billed.values())
    completion = sum(b.completion for b in billed.values())
    usage = done["usage"]
    assert (usage["input_tokens"], usage["input_tokens_details"]["cached_tokens"], usage["output_tokens"]) == (
        prompt,
        cached,
        completion,
    )
    expected = ((prompt - cached) * INPUT_RATE + cached * CACHED_RATE + completion * OUTPUT_RATE) / MTOK
    assert done["cost"]["value"] == pytest.approx(expected, rel=1e-9)
