"""cnd_toolkit/: project facts, build arguments, and the Docker layer against a real engine where one answers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cnd_toolkit import project as proj
from cnd_toolkit.docker import containers, engine, images
from cnd_toolkit.errors import BuildFailed, EngineUnavailable, ImageMissing, NeverHealthy, OpsError

from tests.conftest import unavailable


def test_project_facts_come_from_pyproject() -> None:
    project = proj.load()
    assert project.slug == "my-service"
    assert project.container_port == 8080
    assert project.local_image == "my-service"


def test_git_revision_of_a_real_repository(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    assert proj.git_revision(tmp_path) == "unknown"
    git("init", "-q")
    (tmp_path / "f.txt").write_text("one")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "one")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert proj.git_revision(tmp_path) == sha
    (tmp_path / "f.txt").write_text("two")
    assert proj.git_revision(tmp_path) == f"{sha}-dirty"


def test_build_args(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BASE_IMAGE", raising=False)
    project = proj.load()
    args = proj.build_args(project, revision="abc")
    assert args["VERSION"] == project.version
    assert args["REVISION"] == "abc"
    assert args["CREATED"].endswith("Z")
    assert "BASE_IMAGE" not in args  # the Dockerfile's default applies
    monkeypatch.setenv("BASE_IMAGE", "mirror.example.com/python:3.12-slim")
    assert proj.build_args(project, revision="abc")["BASE_IMAGE"] == "mirror.example.com/python:3.12-slim"
    assert proj.build_args(project, "explicit:1", revision="abc")["BASE_IMAGE"] == "explicit:1"


def test_created_comes_from_the_source_not_the_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `created` label: commit time when clean, the newest edit of the build context otherwise."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    ignore = tmp_path / ".dockerignore"  # sent with every build context, so its edits count too
    ignore.write_text("*\n!api/\n**/.*\n")
    os.utime(ignore, (1_500_000_000, 1_500_000_000))
    app = tmp_path / "api" / "app.py"
    app.parent.mkdir()
    app.write_text("one")
    os.utime(app, (1_700_000_000, 1_700_000_000))
    readme = tmp_path / "README.md"  # outside the build context: editing it does not count
    readme.write_text("x")
    os.utime(readme, (1_800_000_000, 1_800_000_000))
    assert proj.source_date(tmp_path).timestamp() == 1_700_000_000  # no git
    env = {**os.environ, "GIT_COMMITTER_DATE": "@1600000000 +0000", "GIT_AUTHOR_DATE": "@1600000000 +0000"}
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "c"],
    ):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, env=env)
    assert proj.source_date(tmp_path).timestamp() == 1_600_000_000  # clean: the commit's time
    app.write_text("two")  # uncommitted: the newest edit, stable until the next edit
    os.utime(app, (1_750_000_000, 1_750_000_000))
    assert proj.source_date(tmp_path).timestamp() == 1_750_000_000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    assert proj.build_args(proj.load(), revision="abc")["CREATED"] == "2009-02-13T23:31:30Z"
    for bad in ("soon", "1.5", "99999999999999999999"):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", bad)
        with pytest.raises(OpsError, match="SOURCE_DATE_EPOCH"):
            proj.source_date(tmp_path)


def test_the_build_context_leaves_out_secrets_and_junk(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text((proj.ROOT / ".dockerignore").read_text())
    wanted = {"api/app.py", "api/data/reference.json", "certs/proxy-ca.crt", "serve.py", "requirements.lock"}
    unwanted = {
        ".env", "api/.env", "api/.env.local", "api/prod.env", "api/.git/config", "api/tests/test_x.py",
        "api/key.PEM", "api/tls/server.Key", "api/id_ed25519", "api/__pycache__/app.cpython-311.pyc",
        "api/debug.log", "api/.venv/bin/python", "certs/key.pem", "certs/README.md", "tests/test_api.py",
    }  # fmt: skip
    for rel in wanted | unwanted:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    sent = {path.relative_to(tmp_path).as_posix() for path in proj.build_context_files(tmp_path)}
    assert sent == wanted | {".dockerignore"}  # the SDK sends it, as the docker CLI does; no COPY names it


def test_source_url() -> None:
    assert proj.source_url("ghcr.io/acme/orders") == "https://github.com/acme/orders"
    assert proj.source_url("registry.example.com/acme/orders") == ""


def test_unreachable_engine_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(EngineUnavailable) as caught:
        engine.connect(timeout=5)
    message = str(caught.value)
    assert f"unix://{tmp_path}/no-such.sock" in message
    assert "DOCKER_HOST" in message
    assert "start" in message


def test_free_port_is_bindable() -> None:
    import socket

    port = containers.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.fixture
def client():  # type: ignore[no-untyped-def]
    try:
        return engine.connect(timeout=10)
    except EngineUnavailable as exc:
        unavailable(str(exc))


@pytest.mark.docker
def test_build_streams_the_log_and_tags_every_name(client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "hello.txt").write_text("hi")
    (tmp_path / "Dockerfile").write_text("FROM scratch\nARG MESSAGE\nCOPY hello.txt /\nLABEL message=$MESSAGE\n")
    lines: list[str] = []
    tags = ["ops-test-build:one", "ops-test-build:two"]
    result = images.build_image(client, tmp_path, tags, {"MESSAGE": "hello"}, on_line=lines.append)
    try:
        image = client.images.get(result.image_id)
        assert set(tags) <= set(image.tags)
        assert image.labels["message"] == "hello"
        assert any("COPY hello.txt" in line for line in lines)
    finally:
        for tag in tags:
            client.images.remove(tag, force=True)


@pytest.mark.docker
def test_failed_build_raises_with_the_log_tail(client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY missing-file.txt /\n")
    with pytest.raises(BuildFailed) as caught:
        images.build_image(client, tmp_path, ["ops-test-fail:x"])
    assert "missing-file.txt" in str(caught.value) + caught.value.detail
    assert "COPY missing-file.txt" in caught.value.detail


@pytest.mark.docker
def test_running_a_missing_image_says_to_build_it(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(
        ImageMissing, match=r"'ops-test-missing:nope' does not exist here; build it first with `inv build`"
    ):
        containers.start(client, "ops-test-missing:nope", container_port=8080)


# GUNICORN_GRACEFUL_TIMEOUT values as a shell may hold them: whole numbers in and out of range,
# signs, spaces, underscores, other scripts' digits, decimals, exponents, words, control characters.
GRACEFUL_VALUES = [
    "", " ", "1", "20", "600", "0", "601", "-5", "+7", " 30 ", "0030", "1_0", "٣٠", "२०", "5.5", "1e3",
    "abc", "20s", "0x10", "\t9\n", "9\x1b[0m", "inf", "NaN", "99999999999999999999",
]  # fmt: skip


def gunicorn_conf_reads(monkeypatch: pytest.MonkeyPatch, value: str) -> int | str:
    """What gunicorn.conf.py itself makes of ``value``: the setting, or its refusal."""
    import runpy

    monkeypatch.setenv("GUNICORN_GRACEFUL_TIMEOUT", value)
    try:
        settings = runpy.run_path(str(proj.ROOT / "gunicorn.conf.py"))
    except SystemExit as exc:
        return f"refused: {exc.code}"
    return int(settings["graceful_timeout"])


@pytest.mark.parametrize("value", GRACEFUL_VALUES)
def test_stop_timeout_reads_the_graceful_timeout_as_gunicorn_does(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """The oracle is gunicorn.conf.py: the tooling must accept exactly what it accepts, as the same number."""
    expected = gunicorn_conf_reads(monkeypatch, value)
    if isinstance(expected, str):
        with pytest.raises(OpsError) as caught:
            containers.graceful_timeout({"GUNICORN_GRACEFUL_TIMEOUT": value})
        message = str(caught.value)
        assert message.startswith("GUNICORN_GRACEFUL_TIMEOUT=") and "1..600" in message
        assert "\n" not in message.strip("\n") or "\n" in value  # one line, bar the value's own
    else:
        assert containers.graceful_timeout({"GUNICORN_GRACEFUL_TIMEOUT": value}) == expected


def test_the_server_variables_pass_to_the_container_and_nothing_else() -> None:
    shell = {
        "APP_LOG_LEVEL": "debug", "GUNICORN_THREADS": "4", "WEB_CONCURRENCY": "2", "ACCESS_LOG": "1",
        "FORWARDED_ALLOW_IPS": "*", "HOME": "/root", "PATH": "/usr/bin", "DOCKER_HOST": "tcp://x:2375",
        "NETLIFY_AUTH_TOKEN": "secret", "PORT": "1234", "APPLE": "no", "app_lower": "no",
    }  # fmt: skip
    assert containers.server_environment(shell) == {
        "ACCESS_LOG": "1", "APP_LOG_LEVEL": "debug", "FORWARDED_ALLOW_IPS": "*",
        "GUNICORN_THREADS": "4", "WEB_CONCURRENCY": "2",
    }  # fmt: skip


def test_source_digest_follows_content_not_time(tmp_path: Path) -> None:
    import shutil
    import time

    from cnd_toolkit import source

    root = tmp_path / "copy"
    shutil.copytree(proj.ROOT, root, ignore=shutil.ignore_patterns(".git", ".venv", ".nox", "*_cache", "__pycache__"))
    first = source.source_digest(root)
    assert source.source_digest(root) == first
    routes = root / "api" / "routes.py"
    later = time.time() + 60
    os.utime(routes, (later, later))
    assert source.source_digest(root) == first  # touched, same content: nothing to rebuild
    routes.write_text(routes.read_text() + "\n# changed\n")
    changed = source.source_digest(root)
    assert changed != first
    (root / "tests" / "test_extra.py").write_text("# not in the image\n")
    assert source.source_digest(root) == changed  # .dockerignore keeps tests/ out of the build
    assert source.stale_reason("x:latest", None, changed) == "x:latest does not exist yet"
    assert "without a source digest" in source.stale_reason("x:latest", {}, changed)
    assert "changed" in source.stale_reason("x:latest", {source.SOURCE_LABEL: first}, changed)
    assert source.stale_reason("x:latest", {source.SOURCE_LABEL: changed}, changed) == ""


def _unreachable(monkeypatch: pytest.MonkeyPatch, host: str, timeout: float = 3) -> str:
    monkeypatch.setenv("DOCKER_HOST", host)
    with pytest.raises(EngineUnavailable) as caught:
        engine.connect(timeout=timeout)
    message = str(caught.value)
    assert message.startswith(f"No Docker engine answers at {host}: ")
    assert "\n" not in message and "Max retries" not in message and "HTTPConnectionPool" not in message
    return message.removeprefix(f"No Docker engine answers at {host}: ")


@pytest.fixture
def serve():  # type: ignore[no-untyped-def]
    """Start loopback TCP servers that hand each connection to ``handler`` (in a thread of its
    own); they and their connections are closed when the test ends."""
    import contextlib
    import socket
    import threading

    opened: list[socket.socket] = []

    def start(handler) -> int:  # type: ignore[no-untyped-def]
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        opened.append(server)

        def loop() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:  # closed at the test's end
                    return
                opened.append(conn)
                threading.Thread(target=handler, args=(conn,), daemon=True).start()

        threading.Thread(target=loop, daemon=True).start()
        port: int = server.getsockname()[1]
        return port

    yield start
    for sock in opened:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # wakes the accept loop
        sock.close()


def test_unreachable_engine_reasons_are_whole(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, serve) -> None:  # type: ignore[no-untyped-def]
    """Each way an engine can be missing gets its own reason, in words, and what to do."""
    import socket
    import time

    closed = containers.free_port()
    assert _unreachable(monkeypatch, f"tcp://127.0.0.1:{closed}").startswith("connection refused (nothing listens")
    assert _unreachable(monkeypatch, f"unix://{tmp_path}/missing.sock").startswith(
        f"no such socket: {tmp_path}/missing.sock;"
    )
    (tmp_path / "file.sock").write_text("not a socket")
    assert _unreachable(monkeypatch, f"unix://{tmp_path}/file.sock").startswith(
        f"{tmp_path}/file.sock is not a socket;"
    )
    (tmp_path / "dir.sock").mkdir()
    assert _unreachable(monkeypatch, f"unix://{tmp_path}/dir.sock").startswith(f"{tmp_path}/dir.sock is a directory")
    assert _unreachable(monkeypatch, "bogus://x").startswith("Invalid bind address protocol: bogus://x")

    # A server that never answers: the connect ends at its own timeout (the reason names it), after
    # one request: it is not sent again (each retry would wait the timeout out once more).
    silent: list[socket.socket] = []
    reason = _unreachable(monkeypatch, f"tcp://127.0.0.1:{serve(silent.append)}", timeout=1)
    assert reason.startswith("no answer within 1s"), reason
    deadline = time.monotonic() + 60
    while not silent and time.monotonic() < deadline:  # the server's accept may trail the client
        time.sleep(0.01)
    assert len(silent) == 1, silent

    def hang_up(conn: socket.socket) -> None:
        conn.recv(1024)
        conn.close()

    assert "closed without an answer" in _unreachable(monkeypatch, f"tcp://127.0.0.1:{serve(hang_up)}")

    def not_docker(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        conn.close()

    assert _unreachable(monkeypatch, f"tcp://127.0.0.1:{serve(not_docker)}").startswith(
        "it answered HTTP 404, so it is not a Docker engine's API"
    )


def test_permission_denied_on_the_socket_names_the_fix(tmp_path: Path) -> None:
    """A socket this user may not open: the engine runs, so the hint is the docker group, not "start one"."""
    import socket
    import sys

    path = tmp_path / "docker.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)
    tmp_path.chmod(0o755)
    path.chmod(0o600 if os.geteuid() == 0 else 0o000)
    # As root, only another user is refused: drop to nobody after the imports are loaded.
    drop = "os.setgid(65534); os.setuid(65534)" if os.geteuid() == 0 else "pass"
    code = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(proj.ROOT)!r})\n"
        "from cnd_toolkit.docker import engine\nfrom cnd_toolkit.errors import EngineUnavailable\n"
        f"os.environ['DOCKER_HOST'] = 'unix://{path}'\n{drop}\n"
        "try:\n    engine.connect(timeout=3)\nexcept EngineUnavailable as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    listener.close()
    assert result.stdout.strip() == (
        f"No Docker engine answers at unix://{path}: permission denied on {path} "
        "(add your user to the `docker` group, or use sudo)."
    ), result.stderr


def test_port_options_accept_ports_and_refuse_the_rest_in_one_line() -> None:
    from cnd_toolkit import options

    for text, port in [("0", 0), ("1", 1), ("8080", 8080), (" 65535 ", 65535), ("00080", 80)]:
        assert options.port(text) == port
    bad_values = ["", "abc", "-1", "65536", "99999", "1e3", "0x50", "80.0", "\uff18\uff10", "80\n81", "9" * 30]
    for bad in [*bad_values, "x" * 500]:
        with pytest.raises(OpsError) as caught:
            options.port(bad)
        message = str(caught.value)
        assert message.startswith("--port ") and message.endswith("is not a port; use 1-65535 (or 0 for a free one)")
        assert "\n" not in message and len(message) < 160


def test_port_from_the_shell_is_named_not_passed() -> None:
    assert containers.port_not_passed({"APP_X": "1"}) == ""
    note = containers.port_not_passed({"PORT": "99999"})
    assert note.startswith("PORT=99999 in your environment is not passed") and "--port" in note
    assert "PORT" not in containers.server_environment({"PORT": "1", "GUNICORN_TIMEOUT": "5"})
    hostile = containers.port_not_passed({"PORT": "1\n2\x1b[2J\x07" + "9" * 100})
    assert "\n" not in hostile and "\x1b" not in hostile and "\x07" not in hostile and len(hostile) < 200


def test_ssh_addresses_become_an_ssh_command_or_one_line() -> None:
    from cnd_toolkit.docker import ssh as engine_ssh

    command = engine_ssh.ssh_command("ssh://deploy@build.example.com:2222", timeout=10)
    assert command[-3:] == ["--", "build.example.com", "docker system dial-stdio"]
    assert command[command.index("-l") : command.index("-l") + 2] == ["-l", "deploy"]
    assert command[command.index("-p") : command.index("-p") + 2] == ["-p", "2222"]
    assert "BatchMode=yes" in command  # no password prompt in the middle of a task's output
    assert "-l" not in engine_ssh.ssh_command("ssh://host", timeout=10)
    for bad in ["ssh://", "ssh://host:port", "ssh://host/var/run/docker.sock", "ssh://host?x=1", "tcp://host"]:
        with pytest.raises(EngineUnavailable, match="write it as ssh://"):
            engine_ssh.ssh_command(bad, timeout=10)


@pytest.fixture(scope="module")
def gate_images():  # type: ignore[no-untyped-def]
    """Two small images on the base image: one whose HEALTHCHECK passes, one whose check fails.

    The engine's first check runs an interval after the start, and the images' interval is an hour:
    a test that sees a health status other than ``starting`` sees the interval a gate sets, and a
    probe that answers before the engine has checked cannot be mistaken for the engine's verdict."""
    import tempfile

    try:
        client = engine.connect(timeout=10)
    except EngineUnavailable as exc:
        unavailable(str(exc))
    dockerfile = (proj.ROOT / "Dockerfile").read_text()
    default = next(line.split("=", 1)[1] for line in dockerfile.splitlines() if line.startswith("ARG BASE_IMAGE="))
    base = os.environ.get("BASE_IMAGE") or default
    if images.tagged_id(client, base) == "":
        unavailable(f"the base image {base} is not on this engine (docker pull {base}, or set BASE_IMAGE)")
    # SIGINT: http.server stops on KeyboardInterrupt, so a stop is not the full stop timeout.
    serve = 'STOPSIGNAL SIGINT\nCMD ["python3", "-m", "http.server", "8080"]\n'
    ok = "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/')"
    failing = "print('database unreachable'); raise SystemExit(1)"
    checks = {
        "ok": f'HEALTHCHECK --interval=1h CMD ["python3", "-c", "{ok}"]\n',
        "failing": f'HEALTHCHECK --interval=1h --retries=2 CMD ["python3", "-c", "{failing}"]\n',
    }
    tags = {}
    for name, check in checks.items():
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "Dockerfile").write_text(f"FROM {base}\n{check}{serve}")
            tags[name] = f"ops-test-gate:{name}"
            images.build_image(client, Path(tmp), [tags[name]])
    yield client, tags
    for tag in tags.values():
        client.images.remove(tag, force=True)


@pytest.mark.docker
def test_the_gate_needs_no_port_the_engine_says_when_it_is_healthy(gate_images) -> None:  # type: ignore[no-untyped-def]
    """Unpublished, as a deploy's container behind the proxy: the engine's HEALTHCHECK is the gate,
    with its interval shortened for the wait (the image's hour would hold it for an hour: healthy
    at all is the shortened interval at work)."""
    client, tags = gate_images
    with containers.running(client, tags["ok"], container_port=8080, publish=False, health_interval=0.3) as running:
        assert running.url == "" and running.probe_url == ""
        containers.wait_healthy(running, timeout=120)
        assert containers.health(running.container)[0] == "healthy"
        container_id = running.container.id
    assert not client.containers.list(all=True, filters={"id": container_id})  # removed on the way out


@pytest.mark.docker
def test_the_gate_fails_fast_on_unhealthy_with_what_the_check_said(gate_images) -> None:  # type: ignore[no-untyped-def]
    """Found by the engine's verdict, not by the timeout: the error is the engine's "unhealthy"
    with the check's own words, not "was not healthy after 120s"."""
    client, tags = gate_images
    block = containers.running(client, tags["failing"], container_port=8080, publish=False, health_interval=0.3)
    engine_said = r"turned unhealthy: its health check says database unreachable"
    with block as running, pytest.raises(NeverHealthy, match=engine_said):
        containers.wait_healthy(running, timeout=120)


@pytest.mark.docker
def test_a_published_container_is_probed_over_http_where_it_is_reachable(gate_images) -> None:  # type: ignore[no-untyped-def]
    """On this machine's engine the HTTP probe answers before the engine's first check (an hour in):
    the engine still says ``starting`` when the gate has passed."""
    client, tags = gate_images
    with containers.running(client, tags["ok"], container_port=8080) as running:
        assert running.reachable and running.probe_url.startswith("http://127.0.0.1:")
        containers.wait_healthy(running, timeout=120, path="/")
        assert containers.health(running.container)[0] == "starting"


@pytest.mark.docker
def test_the_container_is_removed_when_the_block_fails(gate_images) -> None:  # type: ignore[no-untyped-def]
    client, tags = gate_images
    block = containers.running(client, tags["ok"], container_port=8080)
    with pytest.raises(RuntimeError, match="boom"), block as running:
        container_id = running.container.id
        containers.wait_healthy(running, timeout=120, path="/")  # its SIGINT handler is in place
        raise RuntimeError("boom")
    assert not client.containers.list(all=True, filters={"id": container_id})


@pytest.mark.docker
def test_an_exit_before_healthy_is_reported_with_its_error(gate_images) -> None:  # type: ignore[no-untyped-def]
    client, tags = gate_images
    with containers.running(client, tags["ok"], container_port=8080, publish=False) as running:
        running.container.kill()
        with pytest.raises(NeverHealthy, match=r"exited before it was healthy|the app did not start"):
            containers.wait_healthy(running, timeout=120)


def test_engine_addresses_on_this_machine_are_local() -> None:
    for address in ["unix:///var/run/docker.sock", "tcp://127.0.0.1:2375", "tcp://localhost:2375", "tcp://[::1]:2376",
                    "ssh://deploy@127.0.0.2"]:  # fmt: skip
        assert engine.is_local(address), address
    for address in ["tcp://10.0.0.5:2375", "ssh://deploy@docker.example.com", "tcp://docker:2375"]:
        assert not engine.is_local(address), address


TOOL_CND = '[tool.cnd]\nimage = "ghcr.io/acme/orders"\npython = "3.12"\nport = 8000\n'


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("port = 8000", 'port = "8000"', "port must be a whole number from 1024 to 65535"),
        ("port = 8000", "port = 80", "port must be a whole number from 1024 to 65535"),
        ("port = 8000", "port = 80800", "port must be a whole number from 1024 to 65535"),
        ("port = 8000", "port = true", "port must be a whole number from 1024 to 65535"),
        ('python = "3.12"', 'python = "banana"', "python must be a Python version such as 3.12"),
        ('python = "3.12"', "python = 3.12", "python must be a Python version such as 3.12"),
        ('image = "ghcr.io/acme/orders"', 'image = ""', "image must be a registry path without a tag"),
        ('image = "ghcr.io/acme/orders"', 'image = "ghcr.io/acme/orders:1"', "image must be a registry path"),
        ("port = 8000", "port = 8000\nprot = 1", "[tool.cnd] has no setting 'prot': it takes image, python and port"),
        (TOOL_CND, "", "has no [tool.cnd] table"),
        (TOOL_CND, "[tool.cnd\n", "is not valid TOML"),
    ],
)
def test_a_bad_tool_cnd_table_is_one_clear_error(tmp_path: Path, old: str, new: str, message: str) -> None:
    """[tool.cnd] as Copier's questions take its values: each wrong one named, with an example."""
    text = f'[project]\nname = "orders"\nversion = "1.0.0"\n\n{TOOL_CND}'
    assert old in text
    (tmp_path / "pyproject.toml").write_text(text.replace(old, new))
    with pytest.raises(OpsError) as caught:
        proj.load(tmp_path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_project_is_found_from_a_subfolder_even_with_a_broken_pyproject(tmp_path: Path) -> None:
    """From api/ the project is the folder above: its pyproject.toml names [tool.cnd], even broken."""
    (tmp_path / "api").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project\nname = "x"\n\n' + TOOL_CND)
    assert proj.find_root(tmp_path / "api") == tmp_path.resolve()
    with pytest.raises(OpsError, match="is not valid TOML"):
        proj.load(proj.find_root(tmp_path / "api"))


def test_only_python_files_in_ops_are_leftovers(tmp_path: Path) -> None:
    (tmp_path / "ops" / "__pycache__").mkdir(parents=True)
    (tmp_path / "ops" / "runbook.md").write_text("# on call\n")
    (tmp_path / "ops" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    assert proj.leftover_ops(tmp_path) == []
    (tmp_path / "ops" / "seed.py").write_text("")
    assert proj.leftover_ops(tmp_path) == ["ops/seed.py"]
