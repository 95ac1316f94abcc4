"""The HTTP API: a Flask application factory.

``create_app()`` is what gunicorn serves (``api:create_app()``); tests call it with a config
mapping. Everything that differs between machines comes from ``APP_*`` environment variables.

This package imports nothing until ``create_app`` is called: gunicorn's master process imports
``api.server`` (the worker and logger classes) and must not load the app, or workers forked
from it after a code change (``GUNICORN_RELOAD``) would run the old code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application; ``config`` overrides what the environment says."""
    from api.app import create_app as build

    return build(config)
