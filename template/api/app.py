"""The application factory behind ``api.create_app``: Flask, its hooks and the routes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from api.config import load_config
from api.errors import register_error_handlers
from api.observability import register_request_hooks
from api.routes import bp
from api.strict_json import register_strict_json


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application; ``config`` overrides what the environment says."""
    app = Flask("api")  # the package: its name for app.logger and root path
    app.config.update(load_config())
    if config:
        app.config.update(config)
    # Werkzeug answers bodies above this with 413 before the view reads them.
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_REQUEST_BYTES"]
    register_strict_json(app)  # standard JSON only; chunked bodies bounded like the others
    app.json.sort_keys = False  # type: ignore[attr-defined]
    register_request_hooks(app)
    register_error_handlers(app)
    app.register_blueprint(bp)
    return app
