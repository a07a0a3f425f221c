"""The Lambda entry point of an API function: Mangum around the app, with Powertools logs and traces."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from aws_lambda_powertools import Logger
from fastapi import FastAPI
from mangum import Mangum

from shared.logs import share_config
from shared.tracing import traced

type Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def lambda_handler(app: FastAPI) -> Handler:
    """A handler for `app` behind API Gateway, built once per cold start.

    Logs carry the API Gateway request id as correlation id, the same id the caller sees in
    `x-request-id`. Traces never capture responses: they may hold file contents.
    """
    logger = Logger(service="batchgw")
    share_config(logger)
    adapter = Mangum(app, lifespan="off")

    @traced
    @logger.inject_lambda_context(clear_state=True)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        request_id = (event.get("requestContext") or {}).get("requestId")
        if request_id:
            logger.set_correlation_id(f"req_{request_id}")
        response: dict[str, Any] = adapter(event, context)
        return response

    return cast(Handler, handler)
