from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app


@pytest.fixture
def app() -> Flask:
    # Log lines are written at once here, so tests can read them right after a request.
    config = {"TESTING": True, "VERSION": "1.2.3", "REVISION": "abc123", "MAX_REQUEST_BYTES": 1024}
    return create_app({**config, "LOG_FLUSH_SECONDS": 0})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def engine():  # type: ignore[no-untyped-def]
    """A client for the Docker engine; skipped without one, except under CI, where it must run."""
    import os

    from ops.docker.engine import connect
    from ops.errors import EngineUnavailable

    try:
        return connect(timeout=10)
    except EngineUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a Docker engine: {exc}")
        pytest.skip(str(exc))
