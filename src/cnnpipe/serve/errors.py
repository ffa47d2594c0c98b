"""Refusals in the protocols' error shape: ``{"error": "<one line>"}`` with a 4xx status.

Both the Open Inference Protocol and TF Serving's REST API answer errors as a JSON object with
one ``error`` string; so do the upload route and the server's own refusals (unknown route,
wrong method, body too large). Nothing a client sends reaches the client as a traceback.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

MAX_MESSAGE_CHARS = 500


class ApiError(Exception):
    """A request the server refuses: ``status`` (4xx, or 503 while loading), a one-line
    ``message`` for the client, and ``reason``, a short fixed label for the errors metric."""

    def __init__(self, status: int, message: str, reason: str):
        super().__init__(message)
        self.status = status
        self.message = one_line(message)
        self.reason = reason


def one_line(text: object) -> str:
    """The first line of ``text``, at most :data:`MAX_MESSAGE_CHARS` characters."""
    line = (str(text).strip().splitlines() or [""])[0]
    return line if len(line) <= MAX_MESSAGE_CHARS else line[: MAX_MESSAGE_CHARS - 3] + "..."


def error_response(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": one_line(message), **extra}, status_code=status)


def install_error_handlers(app: FastAPI, count_error) -> None:
    """Answer every refusal as ``{"error": ...}``; ``count_error(reason)`` feeds the metric."""

    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError) -> JSONResponse:
        count_error(exc.reason)
        return error_response(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_refusal(request: Request, exc: HTTPException) -> JSONResponse:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        count_error(reason)
        message = exc.detail if exc.status_code != 404 else f"no route {request.url.path}"
        response = error_response(exc.status_code, message)
        response.headers.update(exc.headers or {})  # 405's Allow
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        count_error("bad_request")
        first = exc.errors()[0]
        where = " ".join(str(part) for part in first.get("loc", ()))
        return error_response(400, f"{where}: {first.get('msg', 'invalid')}")


class BodyLimit:
    """ASGI middleware refusing a request body over ``max_bytes`` with 413.

    A declared ``Content-Length`` over the limit is answered before a byte of the body is
    read, so a client cannot make the server buffer it; a chunked body is counted while the
    route reads it and refused as soon as it passes the limit.
    """

    def __init__(self, app, max_bytes: int, count_error):
        self.app = app
        self.max_bytes = max_bytes
        self.count_error = count_error

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            self.count_error("body_too_large")
            await send_json(send, 413, {"error": self._too_large(f"{int(declared)} bytes")})
            return
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise ApiError(413, self._too_large(f"over {received} bytes"), "body_too_large")
            return message

        await self.app(scope, counted_receive, send)

    def _too_large(self, size: str) -> str:
        return (f"request body of {size} is larger than this server takes "
                f"({self.max_bytes} bytes, --max-body-mb)")


async def send_json(send, status: int, body: dict) -> None:
    content = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": content})
