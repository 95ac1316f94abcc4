"""Every error leaves as JSON: ``{"error": {"status", "code", "message", "request_id"}}``."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

from api.observability import current_request_id

log = logging.getLogger("api")


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    body = {"error": {"status": status, "code": code, "message": message, "request_id": current_request_id()}}
    return jsonify(body), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        response, status = error_response(status, code, exc.description or exc.name)
        if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return response, status

    @app.errorhandler(Exception)
    def unhandled(exc: Exception) -> tuple[Response, int]:
        # The traceback goes to the log with the request id; the client gets no internals.
        log.exception("unhandled error", extra={"request_id": current_request_id()})
        return error_response(500, "internal_server_error", InternalServerError.description)
