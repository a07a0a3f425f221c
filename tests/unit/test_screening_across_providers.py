"""What every translating provider refuses alike, before the batch is sent, as the request's own
`invalid_request` line: an output limit other than the one budgets reserved (shared/providers/base.py
`own_output_limit`), and a `tool_choice` with no equivalent (`named_function`)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from shared.providers import registry
from shared.providers.anthropic_format import to_params
from shared.providers.bedrock import model_input
from shared.providers.mistral_format import to_mistral
from shared.providers.vertex_format import input_line
from shared.routing import Deployment

BEDROCK = {"provider": "bedrock", "role_arn": "arn:aws:iam::1:role/b", "s3_bucket": "b", "region": "us-east-1"}
DEPLOYMENTS = {
    name: Deployment.model_validate({"name": "d", **fields})
    for name, fields in {
        "vertex": {"provider": "vertex", "model": "gemini-2.5-flash", "project": "p", "gcs_bucket": "b"},
        "anthropic": {"provider": "anthropic", "model": "claude-sonnet-4-5"},
        "bedrock claude": {**BEDROCK, "model": "anthropic.claude-3-5-haiku-20241022-v1:0"},
        "bedrock converse": {**BEDROCK, "model": "amazon.nova-lite-v1:0"},
        "mistral": {"provider": "mistral", "model": "mistral-small-latest"},
    }.items()
}
HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("provider", list(DEPLOYMENTS))
@pytest.mark.parametrize(
    ("limits", "named"),
    [
        # budgets read past a limit that is not a positive integer, to the next or to the deployment's bound;
        # sent as it is, 0 may read as "no limit" and a tenant's line produce more than was reserved
        ({"max_completion_tokens": 0, "max_tokens": 1}, "max_completion_tokens must be a positive integer, not 0"),
        ({"max_tokens": 0}, "max_tokens must be a positive integer, not 0"),
        ({"max_tokens": -1}, "not -1"),
        ({"max_tokens": 10.5}, "not 10.5"),
        ({"max_completion_tokens": True}, "not True"),
        ({"max_tokens": "100"}, "not '100'"),
    ],
)
def test_an_output_limit_that_is_not_a_positive_integer_fails_its_request_alone(
    provider: str, limits: dict[str, Any], named: str
) -> None:
    reason = registry.screen(DEPLOYMENTS[provider], {"model": "d", "messages": HI, **limits})
    assert reason is not None and named in reason


def limit_sent(provider: str, body: dict[str, Any]) -> int | None:
    """The output limit `provider`'s translation sends for `body` (None: Mistral's, which is not sent)."""
    deployment = DEPLOYMENTS[provider]
    if provider == "vertex":
        request = orjson.loads(input_line(body, 0, max_output_tokens=deployment.output_bound, model="gemini-2.5-flash"))
        sent: int = request["request"]["generationConfig"]["maxOutputTokens"]
        return sent
    if provider == "anthropic":
        return int(to_params(body, deployment.provider_model, max_tokens=deployment.output_bound)["max_tokens"])
    if provider == "mistral":
        return to_mistral(body).get("max_tokens")
    model_body = model_input(deployment, body)
    return int(model_body["max_tokens"] if provider == "bedrock claude" else model_body["inferenceConfig"]["maxTokens"])


@pytest.mark.parametrize("provider", list(DEPLOYMENTS))
def test_a_positive_limit_is_sent_and_none_sends_the_bound_budgets_reserved(provider: str) -> None:
    bound = None if provider == "mistral" else DEPLOYMENTS[provider].output_bound
    for limits, sent in (
        ({"max_completion_tokens": 5, "max_tokens": 0}, 5),  # OpenAI's newer name wins, as budgets read it
        ({"max_tokens": 1}, 1),
        ({"max_tokens": None}, bound),
        ({}, bound),
    ):
        body = {"model": "d", "messages": HI, **limits}
        assert registry.screen(DEPLOYMENTS[provider], body) is None
        assert limit_sent(provider, body) == sent, limits


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("provider", ["vertex", "anthropic", "bedrock claude"])
@pytest.mark.parametrize(
    "tool_choice",
    [
        "any",
        {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [WEATHER_TOOL]}},
        {"type": "custom", "custom": {"name": "grep"}},
        {"type": "function"},
        {"type": "function", "function": {"name": 7}},
        7,
    ],
)
def test_a_tool_choice_with_no_equivalent_fails_its_request_alone(provider: str, tool_choice: Any) -> None:
    # read as auto, `allowed_tools` let the model call any tool, and a misspelt choice passed unnoticed
    body = {"model": "d", "messages": HI, "tools": [WEATHER_TOOL], "tool_choice": tool_choice}
    reason = registry.screen(DEPLOYMENTS[provider], body)
    assert reason is not None and "tool_choice" in reason and "has no equivalent" in reason
