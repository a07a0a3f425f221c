"""The FastAPI app factory the API functions (and the dev stack) build their app with.

Errors map to HTTP here and only here: one handler per domain error, each answering OpenAI's error
shape `{"error": {message, type, param, code}}` with an `x-request-id` header. Bad input is a 4xx,
never a 5xx; conditions a retry cannot fix are never 409 or 429, which the OpenAI SDK retries.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import errors
from shared.runtime import runtime
from shared.wire import ErrorBody, Health

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
# room left in a request for an upload part's multipart boundaries and headers (the openai SDK's take 182 bytes)
_PART_FRAMING_BYTES = 1024

# domain error -> (status, OpenAI error type)
_ERRORS: dict[type[errors.BatchgwError], tuple[int, str]] = {
    errors.InvalidRequest: (400, "invalid_request_error"),
    errors.AuthenticationFailed: (401, "invalid_request_error"),
    errors.PermissionDenied: (403, "permission_error"),
    errors.NotFound: (404, "invalid_request_error"),
    errors.PayloadTooLarge: (413, "invalid_request_error"),
}


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id") or "")


def error_response(
    request: Request,
    status: int,
    message: str,
    *,
    type_: str,
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers={REQUEST_ID_HEADER: request_id(request)})


def _domain_handler(status: int, type_: str) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.BatchgwError)
        return error_response(request, status, exc.message, type_=type_, param=exc.param, code=exc.code)

    return handle


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first: dict[str, Any] = dict(exc.errors()[0]) if exc.errors() else {"loc": (), "msg": "invalid request"}
    context: dict[str, Any] = first.get("ctx") or {}
    if first.get("type") == "json_invalid":  # its location is the offset of the parse error, not a parameter
        message = f"We could not parse the JSON body of your request: {context.get('error', 'invalid JSON')}."
        return error_response(request, 400, message, type_="invalid_request_error")
    location = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = ".".join(location) or None
    # a validator's own message, without pydantic's "Value error, " before it
    said = str(context["error"]) if first.get("type") == "value_error" and "error" in context else first["msg"]
    message = f"Invalid value for '{param}': {said}" if param else f"Invalid request: {said}"
    return error_response(request, 400, message, type_="invalid_request_error", param=param, code="invalid_value")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = {404: "Unknown request URL", 405: "Method not allowed"}.get(exc.status_code, str(exc.detail))
    if exc.status_code in (404, 405):
        message = f"{message}: {request.method} {request.url.path}."
    return error_response(
        request,
        exc.status_code,
        message,
        type_="invalid_request_error",
        code={404: "unknown_url", 405: "method_not_allowed"}.get(exc.status_code),
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error", extra={"request_id": request_id(request)})
    return error_response(request, 500, "The server had an error while processing your request.", type_="server_error")


class RequestLimits:
    """Stamps a request id on every request and refuses bodies over the limit with 413: declared ones before
    reading them, chunked ones as soon as they pass it (whatever the app was doing with the body, its
    answer is replaced by the 413)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: Callable[[], int]) -> None:
        self.app = app
        self._max_body_bytes = max_body_bytes

    @property
    def max_body_bytes(self) -> int:
        return self._max_body_bytes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # behind API Gateway, its request id: the one the function's logs carry as correlation id
        gateway_id = ((scope.get("aws.event") or {}).get("requestContext") or {}).get("requestId")
        rid = f"req_{gateway_id}" if gateway_id else f"req_{secrets.token_hex(12)}"
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", rid.encode())]
            await send(message)

        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, receive, send_with_id)
            return
        await self._counted(scope, receive, send_with_id)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app on a body counted as it arrives; past the limit, the answer is the 413.

        An unexpected error is answered here too, a 500 logged once: left to Starlette's outermost layer,
        which answers it and raises it again, Mangum (or uvicorn) would log it a second time.
        """
        received = 0
        over = False
        answered = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    over = True
                    raise errors.PayloadTooLarge(self._message(scope.get("path", "")))
            return message

        async def send_or_too_large(message: Message) -> None:
            nonlocal answered, started
            if not over:
                started = started or message["type"] == "http.response.start"
                await send(message)
            elif not answered:  # the app answered the broken body its own way: answer the 413 instead
                answered = True
                await self._too_large(scope, receive, send)

        try:
            await self.app(scope, counted_receive, send_or_too_large)
        except Exception as exc:
            if over:
                if not answered:
                    await self._too_large(scope, receive, send)
            elif started:  # too late to answer an error: the server ends the response (and logs why)
                raise
            else:
                await (await _unexpected(Request(scope), exc))(scope, receive, send)

    def _message(self, path: str) -> str:
        """The limit; for a file, the way round it; for an upload's part, the part size that fits."""
        limit = self.max_body_bytes
        message = f"The request body is larger than {limit:,} bytes."
        path = path.rstrip("/")
        if path.endswith("/files"):
            message += " Upload large files with the Uploads API (POST /v1/uploads), in parts under that size."
        elif path.startswith("/v1/uploads/") and path.endswith("/parts"):
            part = limit - _PART_FRAMING_BYTES
            message += (
                f" Send parts of at most {part:,} bytes of data (the rest of the request is the multipart framing):"
                f" in the openai SDK, upload_file_chunked(..., part_size={part})."
            )
        return message

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = {
            "message": self._message(scope.get("path", "")),
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
        await JSONResponse({"error": error}, status_code=413)(scope, receive, send)


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Bad request: the message says what and where"),
        (401, "Missing, malformed, unknown or revoked key"),
        (403, "The key may not do this"),
        (404, "No such object for this key"),
        (413, "Request body over the limit (files: use the Uploads API)"),
    )
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document without its 422 responses: batchgw answers bad input with OpenAI's 400."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(*routers: APIRouter, title: str = "batchgw") -> FastAPI:
    """An app serving `routers` plus /health, with OpenAI-shaped errors and request limits.

    Building it reads no setting and makes no client; the first request does, through get_context().
    """
    app = FastAPI(title=title, version="1.0", docs_url=None, redoc_url=None, responses=_ERROR_RESPONSES)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    for error_type, (status, type_) in _ERRORS.items():
        app.add_exception_handler(error_type, _domain_handler(status, type_))
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

    @app.get("/health", tags=["health"])
    @app.head("/health", tags=["health"])  # what uptime checks send
    def health() -> Health:
        return Health()

    for router in routers:
        app.include_router(router)
    app.add_middleware(RequestLimits, max_body_bytes=lambda: runtime().settings.max_request_bytes)
    return app
