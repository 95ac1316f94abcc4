"""The HTTP contract of api/: what the static page, Netlify, Caddy and Docker rely on."""

from __future__ import annotations

import io
import json
import logging
import math
import random
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.config import ConfigError, load_config


def test_healthz_is_json_ok_whatever_hooks_the_app_gets(app: Flask) -> None:
    app.before_request(lambda: ("auth says no", 401))  # a team's hook: liveness does not depend on it
    response = app.test_client().get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})
    assert response.headers["Content-Length"] == str(len(response.data))
    assert app.test_client().get("/readyz").status_code == 401


def test_readyz_reports_checks(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "checks": {"config": True}}


def test_version_endpoint_and_header(client: FlaskClient) -> None:
    response = client.get("/api/version")
    assert response.get_json() == {"version": "1.2.3", "revision": "abc123"}
    assert response.headers["X-App-Version"] == "1.2.3" and response.headers["X-Content-Type-Options"] == "nosniff"


def test_greeting_uses_name(client: FlaskClient) -> None:
    body = client.get("/api/greeting", query_string={"name": "Ada"}).get_json()
    assert body["message"] == "Hello, Ada!"
    assert body["version"] == "1.2.3"


def test_greeting_rejects_long_name_with_json_400(client: FlaskClient) -> None:
    response = client.get("/api/greeting", query_string={"name": "x" * 101})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_request"


def test_404_is_json_with_request_id(client: FlaskClient) -> None:
    response = client.get("/api/nope", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 404
    assert response.is_json
    assert response.get_json()["error"] == {
        "status": 404,
        "code": "not_found",
        "message": response.get_json()["error"]["message"],
        "request_id": "req-42",
    }


def test_405_is_json_and_lists_allowed_methods(client: FlaskClient) -> None:
    response = client.delete("/api/version")
    assert response.status_code == 405
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert "GET" in response.headers["Allow"]


def test_413_for_bodies_over_the_limit(client: FlaskClient) -> None:
    response = client.post("/api/echo", data=json.dumps({"x": "y" * 2000}), content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "request_entity_too_large"


def test_echo_within_the_limit(client: FlaskClient) -> None:
    response = client.post("/api/echo", json={"a": 1})
    assert response.status_code == 200
    assert response.get_json()["echo"] == {"a": 1}


def test_500_is_json_without_internals(app: Flask) -> None:
    @app.get("/api/boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().get("/api/boom")
    assert response.status_code == 500
    body = response.get_json()
    assert body["error"]["code"] == "internal_server_error"
    assert "secret" not in response.get_data(as_text=True)


def test_request_id_is_echoed_or_generated(client: FlaskClient) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc.DEF-1"}).headers["X-Request-ID"] == "abc.DEF-1"
    generated = client.get("/healthz").headers["X-Request-ID"]
    assert len(generated) == 32
    # An unsafe id (header injection, huge) is replaced, not echoed.
    assert client.get("/healthz", headers={"X-Request-ID": "a b<script>"}).headers["X-Request-ID"] != "a b<script>"


def test_one_json_log_line_per_request(client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    client.get("/api/version", headers={"X-Request-ID": "log-me"})
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    requests = [line for line in lines if line.get("logger") == "api.request"]
    assert len(requests) == 1
    entry = requests[0]
    assert entry["request_id"] == "log-me"
    assert entry["path"] == "/api/version"
    assert entry["status"] == 200
    assert entry["duration_ms"] >= 0


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_VERSION", "9.9.9")
    monkeypatch.setenv("APP_MAX_REQUEST_BYTES", "10")
    app = create_app()
    assert app.config["MAX_CONTENT_LENGTH"] == 10
    assert app.test_client().get("/api/version").get_json()["version"] == "9.9.9"


@pytest.mark.parametrize("value", ["ten", "0", "-5"])
def test_invalid_config_fails_with_the_variable_name(value: str) -> None:
    with pytest.raises(ConfigError, match="APP_MAX_REQUEST_BYTES"):
        load_config({"APP_MAX_REQUEST_BYTES": value})


def test_request_lines_are_batched_and_flushed_by_the_timer(capsys: pytest.CaptureFixture[str]) -> None:
    # Not one write per request: the line waits (an interval longer than the test) for the next
    # write, here a warning, which takes what waited with it, in order.
    create_app({"LOG_FLUSH_SECONDS": 60}).test_client().get("/healthz", headers={"X-Request-ID": "waiting"})
    assert "waiting" not in capsys.readouterr().out
    logging.getLogger("api").warning("written at once")
    out = capsys.readouterr().out
    assert '"request_id": "waiting"' in out and out.index("waiting") < out.index("written at once")

    # With nothing else written, the timer writes the line out (the deadline only stops a broken timer).
    create_app({"LOG_FLUSH_SECONDS": 0.2}).test_client().get("/healthz", headers={"X-Request-ID": "batched"})
    deadline = time.monotonic() + 60
    seen = ""
    while "batched" not in seen and time.monotonic() < deadline:
        time.sleep(0.05)
        seen += capsys.readouterr().out
    assert '"request_id": "batched"' in seen


def test_warnings_are_written_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    create_app({"LOG_FLUSH_SECONDS": 60})
    capsys.readouterr()
    logging.getLogger("api").warning("disk almost full")
    assert "disk almost full" in capsys.readouterr().out


def test_invalid_log_level_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="APP_LOG_LEVEL='loud'"):
        load_config({"APP_LOG_LEVEL": "loud"})


# Hostile bodies: each class with several cases, through the Flask test client (real gunicorn in
# tests/test_server.py and the smoke suite covers the server side).


@pytest.mark.parametrize("depth", [1_000, 5_000, 50_000])
def test_deeply_nested_json_is_a_400(depth: int) -> None:
    client = create_app({"TESTING": True, "MAX_REQUEST_BYTES": 1_000_000}).test_client()
    for body in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        response = client.post("/api/echo", data=body, content_type="application/json")
        assert response.status_code in (200, 400), depth
        if depth >= 5_000:
            assert response.status_code == 400
            assert response.get_json()["error"]["status"] == 400


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "[NaN]", '{"a": {"b": [1, Infinity]}}'])
def test_non_standard_json_constants_are_refused(constant: str) -> None:
    client = create_app({"TESTING": True}).test_client()
    response = client.post("/api/echo", data=constant, content_type="application/json")
    assert response.status_code == 400
    json.loads(response.get_data(as_text=True))  # what comes back is standard JSON


NUMBERS = [
    "1e309",
    "-1e999",
    "1E400",
    "1e+400",
    "[1e999]",
    '{"a": [1, 2e308]}',
    "1.8e308",
    "-1.7976931348623159e308",
    "1e-999",
    "-0.0",
    "0",
    "-0",
    "1.7976931348623157e308",
    "5e-324",
    "2.5e-324",
    "123456789012345678901234567890",
    "9" * 4300,
    "-" + "9" * 4300,
    "9" * 4301,
    "1" + "0" * 5000,
    "[" + "1" * 10_000 + "]",
    "0." + "1" * 5000,
    "1" + "0" * 400 + ".0",
    "1" + "0" * 400 + "e-90",
]


def number_texts(rng: random.Random, count: int) -> list[str]:
    """Seeded JSON numbers near and past what a float or an int can hold."""
    texts = []
    for _ in range(count):
        sign = rng.choice(["", "-"])
        digits = "".join(rng.choice("0123456789") for _ in range(rng.choice([1, 3, 17, 20, 400])))
        digits = digits.lstrip("0") or "0"
        fraction = rng.choice(["", "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 30)))])
        exponent = rng.choice(
            ["", f"e{rng.randint(-400, 400)}", f"E+{rng.randint(280, 330)}", f"e-{rng.randint(300, 1000)}"]
        )
        kind = rng.random()
        if kind < 0.1:
            digits = "9" * rng.choice([4299, 4300, 4301, 6000])
            fraction = exponent = ""
        texts.append(sign + digits + fraction + exponent)
    return texts


def expected_number(text: str) -> float | int | None:
    """What a standard JSON reader that refuses numbers it cannot hold would read (None: 400)."""
    if any(c in text for c in ".eE"):
        value = float(text)
        return value if math.isfinite(value) else None
    return int(text) if len(text.lstrip("-")) <= 4300 else None


def test_numbers_json_cannot_hold_are_a_400_never_a_500() -> None:
    """1e999 reads as infinity (which cannot be written back: it was a 500) and integers over
    4300 digits do not read at all: both are a 400 like NaN. Numbers in range are echoed as read;
    1e-999 is 0.0. A list of edge cases plus 300 seeded ones, compared with float()/int()."""
    client = create_app({"TESTING": True}).test_client()
    outcomes: dict[int, int] = {}
    for text in NUMBERS + number_texts(random.Random(9), 300):
        response = client.post("/api/echo", data=text, content_type="application/json")
        outcomes[response.status_code] = outcomes.get(response.status_code, 0) + 1
        inner = text.strip("[]") if text.startswith("[") else None
        expected = expected_number(inner if inner is not None else text) if not text.startswith("{") else None
        if text.startswith("{"):
            assert response.status_code == 400, text[:60]
        elif expected is None:
            assert response.status_code == 400, text[:60]
            assert response.get_json()["error"]["code"] == "bad_request"
        else:
            assert response.status_code == 200, (text[:60], response.get_data(as_text=True)[:200])
            echoed = response.get_json()["echo"]
            assert (echoed[0] if inner is not None else echoed) == expected
    assert outcomes.get(200, 0) > 50 and outcomes.get(400, 0) > 50, outcomes
    assert set(outcomes) == {200, 400}


def test_nan_is_never_written() -> None:
    app = create_app({"TESTING": True})
    with app.app_context(), pytest.raises(ValueError):
        app.json.dumps({"a": float("nan")})


@pytest.mark.parametrize("size", [12, 99, 100, 101, 5_000])
def test_chunked_bodies_over_the_limit_get_413_like_any_other(size: int) -> None:
    client = create_app({"TESTING": True, "MAX_REQUEST_BYTES": 100}).test_client()
    body = json.dumps({"a": "x" * (size - 9)})
    assert len(body) == size
    response = client.post(
        "/api/echo",
        input_stream=io.BytesIO(body.encode()),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        # As gunicorn hands on a chunked body: no Content-Length, the stream ends where the body does.
        environ_overrides={"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
    )
    if size > 100:
        assert response.status_code == 413
        assert response.get_json()["error"]["status"] == 413
    else:
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json() == {"echo": json.loads(body), "bytes": size}
