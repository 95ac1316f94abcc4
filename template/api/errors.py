"""Every error leaves as JSON: ``{"error": {"status", "code", "message", "request_id"}}``."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from gunicorn.http.errors import NoMoreData, ParseException
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

    @app.errorhandler(ParseException)
    @app.errorhandler(NoMoreData)
    def bad_body(exc: Exception) -> tuple[Response, int]:
        # gunicorn raises these while the app reads a body: a malformed chunk, or a body that
        # ends before its Content-Length. The client's fault, so a 400, not a 500 with a traceback.
        return error_response(400, "bad_request", "the request body is malformed or incomplete")

    @app.errorhandler(Exception)
    def unhandled(exc: Exception) -> tuple[Response, int]:
        # The traceback goes to the log with the request id; the client gets no internals.
        log.exception("unhandled error", extra={"request_id": current_request_id()})
        return error_response(500, "internal_server_error", InternalServerError.description)
