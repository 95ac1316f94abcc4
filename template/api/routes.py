"""Health endpoints and the JSON API the static site calls."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request
from flask.typing import ResponseReturnValue

bp = Blueprint("api", __name__)
_STARTED = time.time()


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Liveness: the process answers. Never checks dependencies (a restart would not fix them).
    GET and HEAD are answered before Flask (api.observability); this rule gives others their 405."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Readiness: the app can serve traffic. Add checks of real dependencies here."""
    checks: dict[str, bool] = {"config": bool(current_app.config.get("VERSION"))}
    ready = all(checks.values())
    return jsonify({"status": "ready" if ready else "not ready", "checks": checks}), 200 if ready else 503


@bp.get("/api/version")
def version() -> ResponseReturnValue:
    return {"version": current_app.config["VERSION"], "revision": current_app.config["REVISION"]}


@bp.get("/api/greeting")
def greeting() -> ResponseReturnValue:
    """What the static page shows: a greeting for ``?name=`` and facts about this server."""
    name = request.args.get("name", "world").strip() or "world"
    if len(name) > 100:
        abort(400, description="name must be 100 characters or fewer")
    return {
        "message": f"Hello, {name}!",
        "service": current_app.config["APP_NAME"],
        "version": current_app.config["VERSION"],
        "uptime_s": round(time.time() - _STARTED, 1),
    }


@bp.post("/api/echo")
def echo() -> ResponseReturnValue:
    """Return the JSON body sent; bodies over APP_MAX_REQUEST_BYTES get 413."""
    payload: Any = request.get_json(silent=True)
    if payload is None:
        abort(400, description="send one standard JSON value with Content-Type: application/json")
    return {"echo": payload, "bytes": request.content_length or 0}
