"""What the deploy checks before anything is built, and how it names a failed connection.

No engine here: the host-side checks that need one are in test_deploy.py. The resolver, the TLS
stack and the sockets are real: a name under .invalid never resolves (RFC 6761), a closed port
refuses, a self-signed certificate fails verification.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cnd_toolkit import project as proj
from cnd_toolkit import settings as settings_mod
from cnd_toolkit import source
from cnd_toolkit.docker import images
from cnd_toolkit.release import deploy, preflight, rollout
from cnd_toolkit.release.rollout import RolloutFailed

from tests.conftest import needed_tool


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    "url",
    [
        "https://newbie-shop.localhost:18443",
        "https://localhost",
        "https://LOCALHOST.:8443",
        "https://127.0.0.1",
        "https://127.0.0.2:8443",
        "https://[::1]:8443",
        "https://10.0.0.5",
        "https://printer.local",
        "https://api.internal",
        "https://nas.home.arpa",
    ],
)
def test_an_https_backend_caddy_can_only_sign_itself_is_refused_with_the_local_target(url: str) -> None:
    problems = preflight.backend_url(url)
    assert len(problems) == 1, problems
    assert "local CA" in problems[0] and "inv deploy --env local" in problems[0], problems[0]


@pytest.mark.parametrize("url", ["http://127.0.0.1:8480", "http://localhost:8480", "http://[::1]:8480"])
def test_this_machine_over_http_passes(url: str) -> None:
    assert preflight.backend_url(url) == []


@pytest.mark.parametrize("host", ["orders.invalid", "newbie-shop.localhost", "a.b.c.localhost"])
def test_a_host_this_machine_cannot_resolve_is_refused_and_says_what_to_use(host: str) -> None:
    """Judged against the system resolver itself: where it resolves .localhost (systemd-resolved)
    the name passes; where it does not, the problem names http://127.0.0.1."""
    problems = preflight.backend_url(f"http://{host}:18080")
    if _resolves(host):
        assert problems == []
        return
    assert len(problems) == 1 and "does not resolve on this machine" in problems[0], problems
    if host.endswith(".localhost"):
        assert "http://127.0.0.1:PORT" in problems[0] and "inv deploy --env local" in problems[0]
    else:
        assert "DNS" in problems[0]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _failure(url: str) -> BaseException:
    try:
        httpx.get(url, timeout=5)
    except httpx.HTTPError as exc:
        return exc
    raise AssertionError(f"{url} answered")


def test_a_refused_connection_is_named_with_its_port() -> None:
    port = _closed_port()
    url = f"http://127.0.0.1:{port}"
    said = preflight.connection_problem(_failure(url), url)
    assert f"the connection to 127.0.0.1:{port} was refused" in said and "PROXY_HTTP_PORT" in said
    assert "ConnectError" not in said


def test_an_ipv6_address_is_named_with_its_brackets() -> None:
    said = preflight.connection_problem(httpx.ConnectError("[Errno 111] Connection refused"), "http://[::1]:8480")
    assert "the connection to [::1]:8480 was refused" in said, said


def test_a_name_that_does_not_resolve_is_named() -> None:
    url = "http://orders.invalid:8080"
    said = preflight.connection_problem(_failure(url), url)
    assert said.startswith("orders.invalid does not resolve"), said


@pytest.fixture
def self_signed(tmp_path: Path) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 with a certificate nobody trusts; yields its port."""
    openssl = needed_tool("openssl", "to make a certificate nobody trusts")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection, contextlib.suppress(ssl.SSLError, OSError):  # the client gives up at verification
                context.wrap_socket(connection, server_side=True).close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def test_a_certificate_this_machine_does_not_trust_is_named(self_signed: int) -> None:
    url = f"https://localhost:{self_signed}"
    said = preflight.connection_problem(_failure(url), url)
    assert said.startswith("TLS verification failed for localhost"), said


def test_the_deploys_confirm_step_says_what_failed_not_an_exception_class() -> None:
    port = _closed_port()
    with pytest.raises(RolloutFailed) as failed:
        rollout.confirm(f"http://127.0.0.1:{port}", "a" * 40, timeout=0.5)
    assert "was refused" in str(failed.value) and "Error" not in str(failed.value), failed.value


@pytest.mark.parametrize("minor", range(8, 15))
@pytest.mark.parametrize(
    "form", ["python:3.{m}-slim", "mirror.example:5000/lib/python:3.{m}", "python:3.{m}.4-bookworm"]
)
def test_a_base_image_of_another_python_is_named_as_copier_names_it(form: str, minor: int) -> None:
    base = form.format(m=minor)
    problem = images.python_mismatch(base)
    same = f"3.{minor}" == proj.load().python_version
    assert (problem == "") == same, (base, problem)
    if not same:
        assert f"is Python 3.{minor}, but this project is Python {proj.load().python_version}" in problem


@pytest.mark.parametrize(
    "base", ["", "debian:12", "local/python-base:latest", "registry.example/app:3.9", "local/python:nope"]
)
def test_a_base_image_that_names_no_python_is_not_judged(base: str) -> None:
    assert images.python_mismatch(base) == ""


@pytest.mark.parametrize(
    "base", ["python", "python:latest", "python:3", "python:3-slim", "docker.io/library/python:slim",
             "mirror.example:5000/python:bookworm", "python:3-alpine@sha256:" + "0" * 64],
)  # fmt: skip
def test_a_python_image_whose_tag_moves_is_named_as_one(base: str) -> None:
    """No minor version in the tag: the image is whichever Python is newest when it is pulled."""
    problem = images.python_mismatch(base)
    assert f"{base} does not say which Python it is" in problem, problem
    assert f"use python:{proj.load().python_version}-slim" in problem


@pytest.mark.docker
@pytest.mark.parametrize("declared", ["3.9.18", proj.load().python_version + ".2"])
def test_an_image_the_engine_has_is_judged_by_its_python_version(engine: object, declared: str) -> None:
    """The official images set PYTHON_VERSION: a base image by any tag is judged by it, as the engine has it."""
    import io
    import uuid

    import docker

    assert isinstance(engine, docker.DockerClient)
    tag = f"cnd-test-python-{uuid.uuid4().hex[:8]}:floating"
    dockerfile = io.BytesIO(f"FROM scratch\nENV PYTHON_VERSION={declared}\n".encode())
    engine.images.build(fileobj=dockerfile, tag=tag, rm=True, forcerm=True)  # no intermediate container left
    try:
        problem = images.python_mismatch(tag, client=engine)
        if declared.startswith(proj.load().python_version + "."):
            assert problem == ""
        else:
            assert f"{tag} is Python 3.9 (its PYTHON_VERSION), but this project is Python" in problem, problem
    finally:
        engine.images.remove(tag, force=True)


def test_a_build_from_another_base_than_base_image_is_stale() -> None:
    labels = {source.SOURCE_LABEL: "d", source.BASE_IMAGE_LABEL: "mirror/python:3.11-slim"}
    assert source.stale_reason("x:latest", labels, "d", "mirror/python:3.11-slim") == ""
    assert "BASE_IMAGE is not set" in source.stale_reason("x:latest", labels, "d", "")
    assert "built from the Dockerfile's base image" in source.stale_reason(
        "x:latest", {source.SOURCE_LABEL: "d", source.BASE_IMAGE_LABEL: ""}, "d", "other/python:3.11"
    )


def test_recording_a_setting_keeps_every_other_line(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# mine\nIMAGE=ghcr.io/acme/x\nBASE_IMAGE=old/python:3.11\nexport APP_X='a b'\n")
    settings_mod.record(tmp_path, "BASE_IMAGE", "new/python:3.11-slim")
    assert env.read_text() == "# mine\nIMAGE=ghcr.io/acme/x\nBASE_IMAGE=new/python:3.11-slim\nexport APP_X='a b'\n"
    loaded = settings_mod.load(tmp_path, environ={})
    assert loaded["BASE_IMAGE"] == "new/python:3.11-slim" and loaded["APP_X"] == "a b"
    with pytest.raises(settings_mod.SettingsError, match="not an image reference"):
        settings_mod.record(tmp_path, "BASE_IMAGE", "Not An Image")
    with pytest.raises(settings_mod.SettingsError, match="never write one"):
        settings_mod.record(tmp_path, "REGISTRY_PASSWORD", "hunter2hunter2")
    assert "hunter2" not in env.read_text()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    settings_mod.record(fresh, "BASE_IMAGE", "new/python:3.11-slim")
    assert (fresh / ".env").read_text() == "BASE_IMAGE=new/python:3.11-slim\n"


def _local_settings(environ: dict[str, str] | None = None) -> settings_mod.Settings:
    return settings_mod.load(
        proj.ROOT, "local", environ=environ or {}, defaults=settings_mod.project_defaults(proj.ROOT)
    )


def test_the_local_target_needs_no_registry_no_netlify_and_no_secret() -> None:
    local = _local_settings()
    assert not local.warnings, local.warnings
    assert local["REGISTRY_PUSH"] == "off" and local["NETLIFY_DEPLOY"] == "off" and local["DEPLOY_TARGET"] == "host"
    assert local["BACKEND_URL"] == f"http://127.0.0.1:{local['PROXY_HTTP_PORT']}"
    assert not local.secrets()
    for name in settings_mod.withheld_names():
        assert not local.sources.get(name, "").startswith(".env.local"), name
    options = deploy.effective_options(local, deploy.Options())
    assert options.backend and not options.netlify
    assert local.missing(["BACKEND_URL"]) == []
    assert "inv edge --env local" in deploy.netlify_skipped(local, options)


def test_netlify_only_on_a_target_without_netlify_is_refused() -> None:
    with pytest.raises(deploy.PreflightFailed, match="NETLIFY_DEPLOY=off"):
        deploy.effective_options(_local_settings(), deploy.Options(backend=False))


def test_no_push_goes_with_one_host_only() -> None:
    swarm = _local_settings({"DEPLOY_TARGET": "swarm"})
    with pytest.raises(deploy.PreflightFailed, match=r"REGISTRY_PUSH=off .* goes with DEPLOY_TARGET=host"):
        deploy.preflight(proj.load(), swarm, deploy.effective_options(swarm, deploy.Options()))


def test_a_secret_in_a_settings_file_git_tracks_is_refused(tmp_path: Path) -> None:
    """`.env.local` is committed; a token pasted into it (the habit other tools teach) is refused."""
    git = needed_tool("git", "to commit the settings file")
    root = tmp_path / "project"
    shutil.copytree(proj.ROOT, root, ignore=lambda folder, names: [n for n in names if n in {".git", ".venv", ".nox"}])
    token = "nfp_" + "a1" * 20
    (root / ".env.local").write_text((root / ".env.local").read_text() + f"NETLIFY_AUTH_TOKEN={token}\n")
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([git, "init", "-q"], cwd=root, check=True)
    subprocess.run([git, "add", "-A"], cwd=root, check=True)
    subprocess.run([git, *ident, "commit", "-qm", "x"], cwd=root, check=True)
    project = proj.load(root)
    local = settings_mod.load(root, "local", environ={}, defaults=settings_mod.project_defaults(root))
    with pytest.raises(deploy.PreflightFailed) as refused:
        deploy.preflight(project, local, deploy.effective_options(local, deploy.Options()))
    assert "NETLIFY_AUTH_TOKEN is written in .env.local:" in str(refused.value) and token not in str(refused.value)
    # An exported token wins over the committed one, which is still in the repository: refused too.
    exported = settings_mod.load(
        root, "local", environ={"NETLIFY_AUTH_TOKEN": "nfp_" + "b2" * 20}, defaults=settings_mod.project_defaults(root)
    )
    assert [line for line in deploy.committed_secrets(project, exported) if "NETLIFY_AUTH_TOKEN" in line]
    # The same token in the git-ignored .env is where it belongs.
    text = (root / ".env.local").read_text().replace(f"NETLIFY_AUTH_TOKEN={token}\n", "")
    (root / ".env.local").write_text(text)
    (root / ".env").write_text(f"NETLIFY_AUTH_TOKEN={token}\n")
    subprocess.run([git, *ident, "commit", "-qam", "y"], cwd=root, check=True)
    local = settings_mod.load(root, "local", environ={}, defaults=settings_mod.project_defaults(root))
    assert deploy.committed_secrets(project, local) == []
    # The app's own secrets: APP_ENV passes SECRET_KEY and DB_PASSWORD on; written in the committed
    # file they are refused by name, as a secret scanner flags them. LOG_LEVEL says it is no secret.
    app = "APP_ENV=LOG_LEVEL,SECRET_KEY,DB_PASSWORD\nLOG_LEVEL=debug\nSECRET_KEY=k-123\nDB_PASSWORD=p-456\n"
    (root / ".env.local").write_text(text + app)
    local = settings_mod.load(root, "local", environ={}, defaults=settings_mod.project_defaults(root))
    found = deploy.committed_secrets(project, local)
    assert [line.split(" is written in")[0] for line in found] == ["DB_PASSWORD", "SECRET_KEY"], found
    assert not [line for line in found if "k-123" in line or "p-456" in line]
    assert [settings_mod.looks_secret(n) for n in ("STRIPE_API_KEY", "GITHUB_TOKEN", "SENTRY_DSN", "LOG_LEVEL")] == [
        True, True, True, False,
    ]  # fmt: skip


def test_a_backend_on_this_machine_must_use_the_proxys_port() -> None:
    moved = _local_settings({"BACKEND_URL": "http://127.0.0.1:9999"})
    [problem] = preflight.loopback_port(moved)
    assert "port 9999, but the proxy answers on PROXY_HTTP_PORT=8480 (.env.local:" in problem, problem
    both = _local_settings({"BACKEND_URL": "http://127.0.0.1:9999", "PROXY_HTTP_PORT": "9999"})
    assert preflight.loopback_port(both) == []
    assert preflight.loopback_port(_local_settings({"BACKEND_URL": "https://api.acme.dev:9999"})) == []


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (
            "export BASE_IMAGE=old/python:3.11  # ours\r\nX=1\r\n",
            "export BASE_IMAGE=new/python:3.11  # ours\r\nX=1\r\n",
        ),
        ("X=1\r\n", "X=1\r\nBASE_IMAGE=new/python:3.11\r\n"),
        ("X=1", "X=1\nBASE_IMAGE=new/python:3.11\n"),
        ("BASE_IMAGE='old'\nBASE_IMAGE_X=1\n", "BASE_IMAGE=new/python:3.11\nBASE_IMAGE_X=1\n"),
    ],
)
def test_recording_keeps_export_comments_and_line_endings(tmp_path: Path, before: str, after: str) -> None:
    (tmp_path / ".env").write_bytes(before.encode())
    settings_mod.record(tmp_path, "BASE_IMAGE", "new/python:3.11")
    assert (tmp_path / ".env").read_bytes().decode() == after


def test_recording_refuses_a_linked_a_read_only_or_a_folder_env(tmp_path: Path) -> None:
    outside = tmp_path / "outside.env"
    outside.write_text("NETLIFY_AUTH_TOKEN=" + "x" * 40 + "\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / ".env").symlink_to(outside)
    with pytest.raises(settings_mod.SettingsError, match="not a plain file"):
        settings_mod.record(linked, "BASE_IMAGE", "new/python:3.11")
    assert (linked / ".env").is_symlink()
    folder = tmp_path / "folder"
    (folder / ".env").mkdir(parents=True)
    with pytest.raises(settings_mod.SettingsError, match="not a plain file"):
        settings_mod.record(folder, "BASE_IMAGE", "new/python:3.11")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    (read_only / ".env").write_text("X=1\n")
    (read_only / ".env").chmod(0o444)
    with pytest.raises(settings_mod.SettingsError, match="read-only"):  # for root too
        settings_mod.record(read_only, "BASE_IMAGE", "new/python:3.11")
    assert (read_only / ".env").read_text() == "X=1\n"


def test_a_base_image_pinned_by_digest_is_an_image() -> None:
    pinned = "python:3.11-slim@sha256:" + "a" * 64
    assert settings_mod.load(Path("/nonexistent"), environ={"BASE_IMAGE": pinned})["BASE_IMAGE"] == pinned
    assert images.python_mismatch("mypython:3.12") == ""  # not the python image: not judged
