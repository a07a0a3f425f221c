"""Property-based fuzzing with schemathesis against each API function's own OpenAPI document.

With a valid key, generated requests (valid and invalid) must never get a 5xx, and every answer must
match the documented status codes, content types and schemas. Bounded: a fixed number of examples per
operation, derandomized so CI runs repeat.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from functions.batches_api.app import app as batches_app
from functions.files_api.app import app as files_app
from tests.integration.conftest import Stack

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
FUZZ = settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))

files_api = schemathesis.openapi.from_asgi("/openapi.json", files_app)
batches_api = schemathesis.openapi.from_asgi("/openapi.json", batches_app)


@files_api.parametrize()
@FUZZ
def test_files_api_never_fails_and_always_matches_its_schema(case: schemathesis.Case[Any], stack: Stack) -> None:
    case.call_and_validate(headers=stack.auth(), checks=CHECKS)


@batches_api.parametrize()
@FUZZ
def test_batches_api_never_fails_and_always_matches_its_schema(case: schemathesis.Case[Any], stack: Stack) -> None:
    case.call_and_validate(headers=stack.auth(), checks=CHECKS)
