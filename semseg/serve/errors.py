"""The API's errors: one exception type, one JSON shape ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse


class ServeError(Exception):
    """A request the server refuses, with its HTTP status and a machine-readable code.

    Attributes:
        status: HTTP status code (400, 401, 413, ...).
        code: short snake_case name of the error (``"payload_too_large"``).
        message: one sentence for a person, naming the value that was wrong.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """``{"error": {"code": code, "message": message}}`` with ``status``."""
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )
