"""Every error the server answers, as OpenAI's JSON: ``{"error": {"message", "type", "param",
"code"}}``, the message saying what was wrong and what to do.

400: a body that is not JSON, a missing or wrongly typed field, an unknown field, a bad
generation value, or a request the pipeline refuses (:class:`RagloomError`); 404: no such
endpoint or model; 413: a body over the size limit; 503 with ``Retry-After``: the queue is full;
504: no answer within ``--timeout``; 500: a bug (logged with its traceback). None of them stops
the server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import RagloomError
from .schemas import BadRequest, field_path, json_type, problem
from .worker import QueueFull

log = logging.getLogger("ragloom.serve")

TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    503: "overloaded_error",
    504: "timeout_error",
    500: "server_error",
}


class RequestTimeout(Exception):
    """No answer came within ``--timeout`` seconds."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"no answer within {seconds:g} s (ragloom serve --timeout): the server is busy; "
            f"retry later, ask fewer questions at once, or start it with a longer --timeout."
        )


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": status,
        }
    }


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status_code=status, headers=headers)


def describe(error: dict[str, Any]) -> tuple[str, str | None]:
    """One validation error of a request as a sentence, and the field it is about."""
    path = field_path(error["loc"]) or None
    if error["type"] == "json_invalid":
        reason = error.get("ctx", {}).get("error", "not JSON")
        return f"the body is not valid JSON ({reason}): send a JSON object.", None
    if path is None and error["type"] != "value_error":
        if error["type"] == "missing":
            return (
                "the request has no body: send a JSON object (Content-Type: application/json).",
                None,
            )
        if isinstance(error["input"], bytes):
            return (
                "the body was not sent as JSON: send a JSON object with the header "
                "Content-Type: application/json (curl --json).",
                None,
            )
        return f"the body must be a JSON object, not {json_type(error['input'])}.", None
    return problem(error, path or ""), path


class JsonTooLarge:
    """ASGI wrapper giving the 413 of the body limit (Starlette's, in plain text, sent from
    outside the app's handlers) the JSON of every other error."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.body = json.dumps(
            error_body(
                413,
                f"the body is over {limit:,} bytes, the most this server reads: ask fewer or "
                f"shorter questions in one request.",
            )
        ).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def sending(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 413:
                headers = dict(message.get("headers", []))
                if not headers.get(b"content-type", b"").startswith(b"application/json"):
                    replaced = True
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 413,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"content-length", str(len(self.body)).encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": self.body})
                    return
            if not replaced:
                await send(message)

        await self.app(scope, receive, sending)


def endpoints(app: FastAPI) -> list[str]:
    """``GET /healthz`` and the like: every endpoint of ``app`` but the OpenAPI schema."""
    return [
        f"{method} {route.path}"
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods or ())
    ]


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as JSON."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [describe(item) for item in error.errors()]
        message = " ".join(text for text, _ in problems)
        return error_response(400, message, problems[0][1] if problems else None)

    @app.exception_handler(BadRequest)
    async def bad(request: Request, error: BadRequest) -> JSONResponse:
        return error_response(error.status, error.message, error.param)

    @app.exception_handler(RagloomError)
    async def refused(request: Request, error: RagloomError) -> JSONResponse:
        return error_response(400, str(error))

    @app.exception_handler(QueueFull)
    async def busy(request: Request, error: QueueFull) -> JSONResponse:
        message = (
            f"the server is busy: {error.size} requests are waiting for the model (ragloom "
            f"serve --queue-size). Retry after {error.retry_after} s."
        )
        return error_response(503, message, headers={"Retry-After": str(error.retry_after)})

    @app.exception_handler(RequestTimeout)
    async def late(request: Request, error: RequestTimeout) -> JSONResponse:
        return error_response(504, str(error))

    @app.exception_handler(HTTPException)
    async def http(request: Request, error: HTTPException) -> JSONResponse:
        if error.status_code == 404:
            message = (
                f"no endpoint {request.method} {request.url.path}; this server has "
                f"{', '.join(endpoints(app))}."
            )
        elif error.status_code == 405:
            message = f"{request.url.path} does not take {request.method} requests."
        else:
            message = str(error.detail)
        return error_response(error.status_code, message, headers=error.headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return error_response(
            500,
            f"internal error ({type(error).__name__}); the server log has the details, and the "
            f"server goes on serving.",
        )
