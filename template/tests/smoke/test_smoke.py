"""What must hold for any running instance of the service. Runs in file order: the last test
stops the container."""

from __future__ import annotations

import re

import httpx


def test_liveness(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readiness(http: httpx.Client) -> None:
    response = http.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


def test_version_header_and_endpoint(http: httpx.Client) -> None:
    response = http.get("/api/version")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"version", "revision"}
    assert response.headers["X-App-Version"] == body["version"]


def test_a_real_api_call(http: httpx.Client) -> None:
    response = http.get("/api/greeting", params={"name": "smoke"})
    assert response.status_code == 200
    assert response.json()["message"] == "Hello, smoke!"


def test_request_id_round_trip(http: httpx.Client) -> None:
    assert http.get("/healthz", headers={"X-Request-ID": "smoke-123"}).headers["X-Request-ID"] == "smoke-123"


def test_errors_are_json(http: httpx.Client) -> None:
    missing = http.get("/api/does-not-exist")
    assert missing.status_code == 404
    assert missing.json()["error"]["status"] == 404
    wrong_method = http.put("/api/version")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["status"] == 405
    too_big = http.post("/api/echo", content=b"x" * (2 * 1024 * 1024), headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413
    assert too_big.json()["error"]["status"] == 413


def exec_output(container, command: list[str]) -> str:  # type: ignore[no-untyped-def]
    """What ``command`` prints in the container (it must succeed). Asked up to three times while
    the output comes back empty: through a tcp:// engine relayed by socat, Docker 20.10 has been
    seen to return an exec's exit code 0 with its output lost."""
    text = ""
    for _ in range(3):
        exit_code, output = container.exec_run(command)
        assert exit_code == 0, output
        text = output.decode().strip()
        if text:
            break
    return text


def greetings_counted(container) -> float:  # type: ignore[no-untyped-def]
    """/api/greeting requests in the container's /metrics, read on its metrics listener (nothing publishes it)."""
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    probe = (
        "import urllib.request\n"
        f"text = urllib.request.urlopen('http://127.0.0.1:{env.get('METRICS_PORT', '9101')}/metrics').read().decode()\n"
        "print(sum(float(line.rsplit(' ', 1)[1]) for line in text.splitlines()"
        " if line.startswith('http_requests_total{') and 'route=\"/api/greeting\"' in line))"
    )
    return float(exec_output(container, ["python", "-c", probe]))


def test_metrics_are_not_public(http: httpx.Client) -> None:
    """Only the metrics listener, or a bearer of the metrics token, reads /metrics."""
    for path in ["/metrics", "/api/../metrics", "/%6detrics"]:
        response = http.get(path)
        assert response.status_code in {401, 404}, path
        assert "http_requests_total" not in response.text


def test_metrics_count_requests_on_the_metrics_port(container, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    """On a read-only root with /tmp as tmpfs, as the deploy runs it: the workers' shared counts live there."""
    before = greetings_counted(container)
    for _ in range(25):
        assert http.get("/api/greeting", headers={"Connection": "close"}).status_code == 200
    assert greetings_counted(container) - before == 25


def test_runs_as_non_root(container) -> None:  # type: ignore[no-untyped-def]
    uid = exec_output(container, ["python", "-c", "import os; print(os.getuid())"])
    assert int(uid) != 0
    assert container.attrs["Config"]["User"] not in ("", "root", "0")


def test_honours_port(container, base_url: str) -> None:  # type: ignore[no-untyped-def]
    port = next(e.split("=", 1)[1] for e in container.attrs["Config"]["Env"] if e.startswith("PORT="))
    probe = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/healthz').status)"
    assert exec_output(container, ["python", "-c", probe]) == "200"
    assert f"{port}/tcp" in container.attrs["NetworkSettings"]["Ports"]


def test_starts_without_errors(container) -> None:  # type: ignore[no-untyped-def]
    logs = container.logs().decode()
    errors = [line for line in logs.splitlines() if "[ERROR]" in line or "Traceback" in line]
    assert not errors, "\n".join(errors)


def test_stops_gracefully_on_sigterm(container, http: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    graceful = int(env.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
    assert http.get("/healthz").status_code == 200
    container.kill(signal="SIGTERM")
    # The deadline only stops a stuck container from hanging the suite: a stop that waited out
    # the graceful timeout shows in the logs below, however long either took.
    result = container.wait(timeout=graceful + 60)
    logs = container.logs().decode()
    assert result["StatusCode"] == 0, logs[-5000:]
    assert "Shutting down" in logs or "Handling signal: term" in logs
    # Every worker finished on its own: one that was still running at the graceful timeout is
    # SIGKILLed by the master (which logs it) and never logs its own exit.
    booted = set(re.findall(r"Booting worker with pid: (\d+)", logs))
    exited = set(re.findall(r"Worker exiting \(pid: (\d+)\)", logs))
    assert booted and booted == exited, logs[-5000:]
    assert "SIGKILL" not in logs, logs[-5000:]
