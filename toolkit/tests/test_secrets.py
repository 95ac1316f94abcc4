"""Secrets stay with the deploy: APP_ENV cannot hand one to the app, the processes the tooling
starts do not inherit them, NETLIFY_API_URL carries the token over https only (or to this
machine), and no message carries a secret in any form an echo can give it back in.

Secrets are generated (tests/secret_values.py: quotes, ``%``, unicode, base64-looking runs), and
whether one can still be read from a text is judged by its :func:`leaks`, which decodes what it
finds on its own (it shares nothing with cnd_toolkit.redact)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import docker.auth
import httpx
import pytest
from cnd_toolkit import dev, run, smoke
from cnd_toolkit import project as proj
from cnd_toolkit import settings as settings_mod
from cnd_toolkit.docker import engine, images
from cnd_toolkit.errors import EngineUnavailable, OpsError
from cnd_toolkit.netlify import api
from cnd_toolkit.release import deploy
from cnd_toolkit.settings import SettingsError, child_environment, load
from cnd_toolkit.wait import NotReady, poll

from tests.conftest import free_port, git_project
from tests.secret_values import deploy_secrets, leaks, no_leaks, password, token

ISSUE_EXAMPLE = "METRICS_TOKEN,NETLIFY_AUTH_TOKEN,REGISTRY_PASSWORD"


# BACKEND_URL resolves here: the preflight asks the resolver (test_preflight.py).
DEPLOYABLE = {"BACKEND_URL": "http://127.0.0.1", "IMAGE": "registry.acme.dev/acme/x", "NETLIFY_SITE_ID": "site-1"}


# -- APP_ENV: never a deploy secret -------------------------------------------------------------


def test_the_catalogue_withholds_every_deploy_secret_and_the_registry_login() -> None:
    assert settings_mod.withheld_names() >= {
        "NETLIFY_AUTH_TOKEN", "REGISTRY_PASSWORD", "REGISTRY_USERNAME", "METRICS_TOKEN", "ALERT_WEBHOOK_URL",
    }  # fmt: skip
    assert settings_mod.withheld_names() == {s.name for s in settings_mod.SETTINGS if s.secret or s.credential}


@pytest.mark.parametrize(
    ("app_env", "named"),
    [
        ("DATABASE_URL,SENTRY_DSN", "SENTRY_DSN, set nowhere"),  # a CI secret not mapped into the step
        ("DATABSE_URL", "DATABSE_URL, set nowhere"),  # a typo
        ("DATABASE_URL SENTRY_DSN", "'DATABASE_URL SENTRY_DSN', not variable names"),
        ("DATABASE_URL;SENTRY_DSN", "'DATABASE_URL;SENTRY_DSN', not variable names"),
    ],
)
def test_a_name_app_env_lists_that_nothing_sets_stops_the_deploy(tmp_path: Path, app_env: str, named: str) -> None:
    """The app would start without it, and nothing would say so."""
    here = git_project(tmp_path)
    environ = {**DEPLOYABLE, **deploy_secrets(2), "APP_ENV": app_env, "DATABASE_URL": "postgres://db/app"}
    settings = load(tmp_path, environ=environ, defaults={})
    with pytest.raises(deploy.PreflightFailed) as caught:
        deploy.preflight(here, settings, deploy.Options(netlify=False))
    [line] = [line for line in str(caught.value).splitlines() if "APP_ENV" in line]
    assert f"APP_ENV (environment) lists {named}" in line, line
    fine = load(tmp_path, environ={**environ, "APP_ENV": "DATABASE_URL"}, defaults={})
    assert deploy.preflight(here, fine, deploy.Options(netlify=False))


def test_the_issues_example_stops_the_deploy_in_its_preflight(tmp_path: Path) -> None:
    """APP_ENV=METRICS_TOKEN,NETLIFY_AUTH_TOKEN,REGISTRY_PASSWORD passed all three in clear to the
    release, the swarm service and the smoke container: now the deploy stops before it connects."""
    here = git_project(tmp_path)
    secrets = deploy_secrets(1)
    settings = load(tmp_path, environ={**DEPLOYABLE, **secrets, "APP_ENV": ISSUE_EXAMPLE}, defaults={})
    connected: list[str] = []

    def connect(address: str) -> Any:
        connected.append(address)
        raise AssertionError("the deploy connected to an engine before refusing APP_ENV")

    with pytest.raises(deploy.PreflightFailed) as caught:
        deploy.deploy(here, settings, deploy.Options(netlify=False), say=lambda line: None, connect=connect)
    assert connected == []
    [line] = [line for line in str(caught.value).splitlines() if "APP_ENV" in line]
    assert "METRICS_TOKEN, NETLIFY_AUTH_TOKEN, REGISTRY_PASSWORD" in line, line
    assert "APP_ENV (environment) lists" in line and "another name" in line and "SHA-256" in line, line
    assert no_leaks(str(caught.value), secrets) == {}
    # Every other path to a container refuses the same line: a release, a swarm service, a canary
    # and the smoke run (release_environment), and `inv run` / `inv dev` (local_environment).
    for path in (deploy.release_environment, lambda s: run.local_environment(s), lambda s: s.runtime_environment()):
        with pytest.raises(SettingsError) as refused:
            path(settings)
        assert str(refused.value) == line.removeprefix("  - ")
    # --netlify-only starts no container: APP_ENV is not its business.
    assert deploy.preflight(here, settings, deploy.Options(backend=False))


@pytest.mark.parametrize("seed", range(16))
def test_app_env_refuses_each_withheld_setting_in_one_line_naming_them(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    secrets = deploy_secrets(seed)
    withheld = sorted(settings_mod.withheld_names())
    refused = rng.sample(withheld, rng.randint(1, len(withheld)))
    ordinary = rng.sample(["DATABASE_URL", "SENTRY_DSN", "FEATURE_FLAGS"], rng.randint(0, 3))
    listed = refused + ordinary
    rng.shuffle(listed)
    app_env = ",".join(f"{' ' * rng.randint(0, 2)}{name}{' ' * rng.randint(0, 2)}" for name in listed)
    where = rng.choice(["environment", ".env"])
    environ = {**secrets, **{name: f"value-of-{name.lower()}" for name in ordinary}}
    if where == "environment":
        environ["APP_ENV"] = app_env
    else:
        (tmp_path / ".env").write_text(f"APP_ENV='{app_env}'\n")
    settings = load(tmp_path, environ=environ, defaults={})
    [line] = settings.app_env_problems()
    assert "\n" not in line
    named = line.split(" lists ", 1)[1].split(";", 1)[0]
    assert sorted(named.split(", ")) == sorted(refused), (line, refused)
    assert f"APP_ENV ({'environment' if where == 'environment' else '.env:1'})" in line
    assert no_leaks(line, secrets) == {} and secrets["REGISTRY_USERNAME"] not in line
    with pytest.raises(SettingsError, match=re.escape(line)):
        deploy.release_environment(settings)
    # Without the refused names, the rest passes as before.
    (tmp_path / ".env").unlink(missing_ok=True)
    kept = load(tmp_path, environ={**environ, "APP_ENV": ",".join(ordinary)}, defaults={})
    assert kept.app_env_problems() == []
    passed = deploy.release_environment(kept)
    assert {name: passed[name] for name in ordinary} == {name: environ[name] for name in ordinary}
    assert no_leaks(json.dumps(passed), secrets) == {} and secrets["REGISTRY_USERNAME"] not in json.dumps(passed)


@pytest.mark.parametrize("seed", range(12))
def test_a_secret_under_another_name_is_refused_without_showing_it(tmp_path: Path, seed: int) -> None:
    """An APP_ENV name, or a server variable (APP_*, GUNICORN_*), that holds a secret's value."""
    rng = random.Random(seed)
    secrets = deploy_secrets(seed)
    secret = rng.choice(["NETLIFY_AUTH_TOKEN", "REGISTRY_PASSWORD", "METRICS_TOKEN", "ALERT_WEBHOOK_URL"])
    copy = rng.choice([
        "{}", "postgres://deploy:{}@db.internal/app", "Bearer {}", "{}\x20trailing",
    ]).format(secrets[secret])  # fmt: skip
    name, listed = rng.choice(
        [("DEPLOY_KEY", "DEPLOY_KEY"), ("APP_UPSTREAM_TOKEN", ""), ("DATABASE_URL", "DATABASE_URL")]
    )
    environ = {**secrets, name: copy, "APP_ENV": listed}
    settings = load(tmp_path, environ=environ, defaults={})
    [line] = settings.app_env_problems()
    assert f"{name} (environment) holds the value of {secret}" in line, line
    assert no_leaks(line, secrets) == {}
    with pytest.raises(SettingsError):
        settings.runtime_environment()


def test_a_new_secret_setting_is_withheld_by_its_flag_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    added = settings_mod.Setting("SENTRY_AUTH_TOKEN", "", "Sentry's release token", secret=True, kind="token")
    monkeypatch.setattr(settings_mod, "SETTINGS", (*settings_mod.SETTINGS, added))
    monkeypatch.setattr(settings_mod, "BY_NAME", {**settings_mod.BY_NAME, added.name: added})
    value = token(random.Random(5), prefix="sntrys_")
    settings = load(tmp_path, environ={"SENTRY_AUTH_TOKEN": value, "APP_ENV": "SENTRY_AUTH_TOKEN"}, defaults={})
    [line] = settings.app_env_problems()
    assert "lists SENTRY_AUTH_TOKEN" in line and value not in line
    assert "SENTRY_AUTH_TOKEN = (set)  (environment)" in settings.describe()
    assert "SENTRY_AUTH_TOKEN" not in child_environment({"SENTRY_AUTH_TOKEN": value, "PATH": "/bin"})
    assert leaks(str(OpsError(f"the API answered: token={value}")), value) == []


# -- APP_ENV's names come from the environment as well as the files ------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_app_env_names_come_from_the_environment_as_well_as_the_files(tmp_path: Path, seed: int) -> None:
    """Each listed name is absent, empty (unset) or set in the environment, and absent, bare,
    blank or set in each file: the first place with a value wins, as for every setting. Names
    APP_ENV does not list never come from the environment."""
    rng = random.Random(seed)
    names = ["DATABASE_URL", "SENTRY_DSN", "REDIS_URL"]
    listed = rng.sample(names, rng.randint(1, 3))
    environ = {"PATH": "/usr/bin", "HOME": "/root", "UNLISTED_TOKEN": "never"}
    files: dict[str, list[str]] = {".env.production": [], ".env": []}
    app_env_in = rng.choice(["environment", ".env.production", ".env"])
    if app_env_in == "environment":
        environ["APP_ENV"] = ",".join(listed)
    else:
        files[app_env_in].append(f"APP_ENV={','.join(listed)}")
    expected: dict[str, tuple[str, str]] = {}
    for name in names:
        env_kind = rng.choice(["absent", "empty", "value"])
        if env_kind != "absent":
            environ[name] = f"{name.lower()}-from-env" if env_kind == "value" else ""
        layers = [("environment", environ.get(name) or None)]
        for file_name in files:
            lines = files[file_name]
            kind = rng.choice(["absent", "bare", "blank", "value"])
            value = f"{name.lower()}-from{file_name}"
            if kind != "absent":
                lines.append({"bare": name, "blank": f"{name}=", "value": f"{name}={value}"}[kind])
            layers.append((f"{file_name}:{len(lines)}", {"blank": "", "value": value}.get(kind)))
        found = next(((source, value) for source, value in layers if value is not None), None)
        if name in listed and found is not None:
            expected[name] = found
    for file_name, lines in files.items():
        (tmp_path / file_name).write_text("\n".join(lines) + "\n")
    settings = load(tmp_path, "production", environ=environ, defaults={})
    passed = settings.runtime_environment()
    got = {name: (settings.sources[name], passed[name]) for name in names if name in passed}
    assert got == expected, (environ, files)
    assert "UNLISTED_TOKEN" not in settings.values and "PATH" not in settings.values


# -- child processes: the environment without the deploy's secrets -------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_the_child_environment_is_this_one_without_the_deploys_secrets(tmp_path: Path, seed: int) -> None:
    secrets = deploy_secrets(seed)
    load(tmp_path, environ=secrets)  # what every task does first: the secrets are known from here on
    kept = {
        "PATH": "/usr/bin:/bin", "HOME": "/root", "SSH_AUTH_SOCK": "/tmp/agent.1", "DOCKER_HOST": "ssh://deploy@host",
        "DATABASE_URL": "postgres://db/app", "APP_LOG_LEVEL": "debug", "LANG": "C.UTF-8",
    }  # fmt: skip
    copies = {  # the same secrets under other names, as CI steps and shells make them
        "CI_NETLIFY_TOKEN": secrets["NETLIFY_AUTH_TOKEN"],
        "DOCKER_AUTH": f"ci:{secrets['REGISTRY_PASSWORD']}",
        "SLACK_HOOK": secrets["ALERT_WEBHOOK_URL"],
        "SCRAPE_HEADER": f"Authorization: Bearer {secrets['METRICS_TOKEN']}",
    }
    child = child_environment({**kept, **secrets, **copies})
    assert child == kept
    assert no_leaks(json.dumps(child), secrets) == {}


@pytest.mark.parametrize("seed", range(5))
def test_a_copy_of_an_exported_secret_is_dropped_when_no_settings_were_loaded(seed: int) -> None:
    """`inv smoke --url` and `inv relock` start a child without loading the settings first."""
    secrets = deploy_secrets(seed)
    kept = {"PATH": "/usr/bin:/bin", "HOME": "/root"}
    copies = {"MY_COPY": f"xx-{secrets['NETLIFY_AUTH_TOKEN']}", "REG": secrets["REGISTRY_PASSWORD"]}
    child = child_environment({**kept, **secrets, **copies})
    assert child == kept


@pytest.fixture
def secret_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> dict[str, str]:
    """This process's environment with the deploy's secrets (as CI exports them; seeded by the
    test's name), a copy of the token under another name, and a marker that must reach every child."""
    secrets = deploy_secrets(zlib.crc32(request.node.name.encode()))
    load(tmp_path, environ=secrets)
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CI_DEPLOY_TOKEN", secrets["NETLIFY_AUTH_TOKEN"])
    monkeypatch.setenv("CND_CHILD_MARKER", "reaches-the-child")
    return secrets


class Recorder:
    """A loopback HTTP server that answers every request ``status`` and records its headers."""

    def __init__(self, status: int = 401) -> None:
        self.headers: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.headers.append(dict(self.headers))
                body = b'{"error": "unauthorized"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


REPORT_PLUGIN = """\
import json
import os


def pytest_configure(config):
    with open(os.environ["CND_ENV_REPORT"], "w", encoding="utf-8") as report:
        json.dump(dict(os.environ), report)
"""


def test_the_smoke_suites_pytest_gets_no_secret_and_needs_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret_environment: dict[str, str]
) -> None:
    """The real runner and suite: its /metrics check passes against a server that refuses
    everyone, without the metrics token ever being sent; the child reports its environment."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "report_environment.py").write_text(REPORT_PLUGIN)
    report = tmp_path / "environment.json"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("CND_ENV_REPORT", str(report))
    server = Recorder(status=401)
    try:
        code = smoke.run_suite(
            proj.load(), server.url, extra=["-p", "report_environment", "-q", "-k", "test_metrics_are_not_public"]
        ).code
    finally:
        server.close()
    assert code == 0
    reported = json.loads(report.read_text(encoding="utf-8"))
    assert reported["SMOKE_BASE_URL"] == server.url and reported["CND_CHILD_MARKER"] == "reaches-the-child"
    assert set(secret_environment).isdisjoint(reported) and "CI_DEPLOY_TOKEN" not in reported
    assert no_leaks(json.dumps(reported), secret_environment) == {}
    assert len(server.headers) >= 3  # the check's three paths were asked
    assert no_leaks(json.dumps(server.headers), secret_environment) == {}


def _children(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found.append(int(stat.parent.name))
    return found + [grandchild for child in found for grandchild in _children(child)]


def _environ_of(pid: int) -> str | None:
    """What the kernel says ``pid`` was started with (None: it has ended meanwhile)."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode("utf-8", "surrogateescape")
    except (FileNotFoundError, ProcessLookupError):
        return None


# A platform skip, by design (under CI too): only Linux's /proc shows what a child was started with.
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="Linux only: reads /proc/PID/environ")
def test_inv_devs_local_gunicorn_gets_no_secret(secret_environment: dict[str, str]) -> None:
    """`inv dev --no-docker`'s gunicorn (master and worker), as the kernel started them."""
    lines: list[str] = []
    before = set(_children(os.getpid()))  # a session's processes (the local registry) are not gunicorn's
    with dev.process_backend(proj.load(), free_port(), lines.append, {"APP_LOG_LEVEL": "info"}) as backend:
        assert httpx.get(backend.url + "/readyz").status_code == 200
        found = {pid: _environ_of(pid) for pid in _children(os.getpid()) if pid not in before}
    environments = {pid: text for pid, text in found.items() if text is not None}
    assert len(environments) >= 2, environments.keys()  # gunicorn's master and its worker
    for pid, text in environments.items():
        assert "CND_CHILD_MARKER=reaches-the-child" in text, pid
        assert "CI_DEPLOY_TOKEN=" not in text and not any(f"\0{name}=" in f"\0{text}" for name in secret_environment)
        assert no_leaks(text, secret_environment) == {}, pid


STAND_IN_CLI = """\
#!{python}
import json, os, sys, time
with open(os.environ["CND_ENV_REPORT"] + ".tmp", "w", encoding="utf-8") as report:
    json.dump(dict(argv=sys.argv, environ=dict(os.environ)), report)
os.rename(os.environ["CND_ENV_REPORT"] + ".tmp", os.environ["CND_ENV_REPORT"])
time.sleep(600)
"""


def test_netlify_dev_the_edge_gets_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret_environment: dict[str, str]
) -> None:
    """`inv dev --netlify`'s edge: a stand-in for netlify-cli that reports what it was started with."""
    root = tmp_path / "site"
    root.mkdir()
    shutil.copy(proj.ROOT / "netlify.toml", root / "netlify.toml")
    shutil.copytree(proj.ROOT / "public", root / "public")
    cli = tmp_path / "netlify"
    cli.write_text(STAND_IN_CLI.format(python=sys.executable))
    cli.chmod(0o755)
    report = tmp_path / "edge.json"
    monkeypatch.setenv("CND_ENV_REPORT", str(report))
    here = dataclasses.replace(proj.load(), root=root)

    def reported() -> None:
        if not report.exists():
            raise NotReady("the stand-in has not reported yet")

    with dev.netlify_dev(here, str(cli), f"http://127.0.0.1:{free_port()}", free_port(), lambda line: None):
        poll(reported, timeout=60, interval=0.05)
    started = json.loads(report.read_text(encoding="utf-8"))
    assert started["argv"][1] == "dev" and started["environ"]["CND_CHILD_MARKER"] == "reaches-the-child"
    assert set(secret_environment).isdisjoint(started["environ"]) and "CI_DEPLOY_TOKEN" not in started["environ"]
    assert no_leaks(json.dumps(started), secret_environment) == {}


STAND_IN_SSH = """\
#!{python}
import json, os, sys
with open(os.environ["CND_ENV_REPORT"], "w", encoding="utf-8") as report:
    json.dump(dict(os.environ), report)
print("ssh: connect to host nowhere: stand-in", file=sys.stderr)
sys.exit(255)
"""


def test_the_ssh_relay_to_a_remote_engine_gets_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret_environment: dict[str, str]
) -> None:
    """DOCKER_HOST=ssh://: the tooling's own `ssh` child (a stand-in on PATH that reports and fails)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(STAND_IN_SSH.format(python=sys.executable))
    (bin_dir / "ssh").chmod(0o755)
    report = tmp_path / "ssh.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CND_ENV_REPORT", str(report))
    with pytest.raises(EngineUnavailable, match="stand-in"):
        engine.connect("ssh://deploy@nowhere.invalid", timeout=10)
    started = json.loads(report.read_text(encoding="utf-8"))
    assert started["CND_CHILD_MARKER"] == "reaches-the-child"
    assert set(secret_environment).isdisjoint(started) and "CI_DEPLOY_TOKEN" not in started
    assert no_leaks(json.dumps(started), secret_environment) == {}


# -- NETLIFY_API_URL (and the webhook): https, or this machine ----------------------------------


def _loopback(rng: random.Random) -> str:
    return rng.choice([
        f"127.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}", "127.0.0.1", "[::1]", "localhost",
        "LocalHost", "localhost.",
    ])  # fmt: skip


def _elsewhere(rng: random.Random) -> str:
    return rng.choice([
        "api.netlify.com", "10.0.0.5", "192.168.1.20", "0.0.0.0", "128.0.0.1", "169.254.169.254", "[fe80::1]",
        "[2001:db8::1]", "127.0.0.1.nip.io", "localhost.acme.dev", "my-localhost", "api.example.net",
    ])  # fmt: skip


def _url(rng: random.Random, scheme: str, host: str) -> str:
    port = f":{rng.randint(1, 65535)}" if rng.random() < 0.6 else ""
    return f"{scheme}://{host}{port}{rng.choice(['', '/', '/api/v1', '/netlify/api/v1/'])}"


@pytest.mark.parametrize("seed", range(16))
def test_netlify_api_url_is_https_or_this_machine(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    for url in (
        _url(rng, "https", _elsewhere(rng)),
        _url(rng, "https", _loopback(rng)),
        _url(rng, "http", _loopback(rng)),
    ):
        assert load(tmp_path, environ={"NETLIFY_API_URL": url})["NETLIFY_API_URL"] == url
        api.NetlifyClient("nfp_token", url).close()
    plain = _url(rng, "http", _elsewhere(rng))
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, environ={"NETLIFY_API_URL": plain})
    message = str(caught.value)
    assert message.startswith("NETLIFY_API_URL is http:// to ") and "\n" not in message
    assert "use https://" in message and message.endswith("(environment)")
    # The client refuses it too, before the token goes anywhere.
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200, json={}))
    with pytest.raises(api.NetlifyError, match=r"^NETLIFY_API_URL is http:// to .*use https://"):
        api.NetlifyClient("nfp_token", plain, transport=transport)
    assert sent == []
    other = rng.choice(["ftp", "ws", "file", "gopher"])
    with pytest.raises(SettingsError, match=r"NETLIFY_API_URL.* is not an http\(s\) URL"):
        load(tmp_path, environ={"NETLIFY_API_URL": _url(rng, other, _loopback(rng))})
    with pytest.raises(api.NetlifyError, match=r"^NETLIFY_API_URL is not an https URL"):
        api.NetlifyClient("nfp_token", _url(rng, other, _elsewhere(rng)))


@pytest.mark.parametrize("seed", range(8))
def test_the_webhook_url_is_https_or_this_machine_and_is_never_shown(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    key = token(rng, 24, 32).replace("%", "x").replace("\\", "y").replace("#", "z").replace("?", "q")
    key = urllib.parse.quote(key, safe="")
    local = f"http://{_loopback(rng)}:{rng.randint(1, 65535)}/hook/{key}"
    assert load(tmp_path, environ={"ALERT_WEBHOOK_URL": local})["ALERT_WEBHOOK_URL"] == local
    host = _elsewhere(rng)
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, environ={"ALERT_WEBHOOK_URL": f"http://{host}/services/{key}"})
    message = str(caught.value)
    assert message.startswith("ALERT_WEBHOOK_URL is http:// to a host that is not this machine"), message
    assert key not in message and host.strip("[]") not in message


@pytest.mark.parametrize("seed", range(6))
def test_a_url_setting_with_a_password_is_refused_without_showing_it(tmp_path: Path, seed: int) -> None:
    secret = urllib.parse.quote(password(random.Random(seed)), safe="")
    for name in ("NETLIFY_API_URL", "BACKEND_URL"):
        with pytest.raises(SettingsError) as caught:
            load(tmp_path, environ={name: f"https://deploy:{secret}@api.acme.dev"})
        assert str(caught.value).startswith(f"{name} (environment) has a password in it")
        assert secret not in str(caught.value) and urllib.parse.unquote(secret) not in str(caught.value)


# -- messages: no secret in any form an echo gives it back in ------------------------------------


def _echoes(user: str, secret: str) -> list[str]:
    """What a careless or hostile engine, registry or API could say back, computed here with the
    encoders the SDKs use (docker's own X-Registry-Auth encoder among them)."""
    auth = {"username": user, "password": secret, "serveraddress": "127.0.0.1:5999"}
    header = docker.auth.encode_header(auth).decode("ascii")
    basic = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
    return [
        secret,
        f"X-Registry-Auth: {header}",
        f"decoded: {json.dumps(auth)}",
        f"body: {json.dumps(auth, ensure_ascii=False)}",
        f"Authorization: Basic {basic}",
        f"config {auth!r}",
        f"url https://{urllib.parse.quote(user)}:{urllib.parse.quote(secret, safe='')}@registry.acme.dev/v2/",
    ]


@pytest.mark.parametrize("seed", range(25))
def test_scrub_leaves_no_generated_secret_readable_in_any_echo(seed: int) -> None:
    from cnd_toolkit import redact

    rng = random.Random(seed)
    secret = password(rng) if seed % 2 else token(rng)
    for echo in _echoes("ci-user", secret):
        said = f"{'x' * rng.randint(0, 5)} denied: {echo} (more)"
        cleaned = redact.scrub(said, {"REGISTRY_PASSWORD": secret})
        assert leaks(cleaned, secret) == [], (echo, cleaned)
        assert "[REGISTRY_PASSWORD]" in cleaned, cleaned
    assert redact.scrub("nothing secret here", {"REGISTRY_PASSWORD": secret}) == "nothing secret here"


class EchoingEngine:
    """A stand-in for a Docker engine API (or a registry behind it) that says back everything it
    was sent, in every form: the X-Registry-Auth header as sent, decoded, and the raw password.

    ``mode``: ``refuse`` answers a push with HTTP 500 (the SDK's APIError branch); ``stream``
    starts the push (200) and reports an error in the stream, after status lines that echo too;
    a login (``/auth``) is always refused with its JSON body said back."""

    def __init__(self, mode: str) -> None:
        self.pushes = 0
        engine_ = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # chunked streams need it

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                path = urllib.parse.urlsplit(self.path).path
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if path.endswith("/tag"):
                    self._answer(201, b"")
                    return
                if path.endswith("/auth"):
                    said = f"login refused for {body}: {json.loads(body)['password']}"
                    self._answer(401, json.dumps({"message": said}).encode())
                    return
                engine_.pushes += 1
                header = self.headers.get("X-Registry-Auth", "")
                decoded = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)).decode()
                raw = json.loads(decoded)["password"]
                echo = f"auth {header} decoded {decoded} password {raw} quoted {urllib.parse.quote(raw)}"
                if mode == "refuse":
                    self._answer(500, json.dumps({"message": f"denied: {echo}"}).encode())
                    return
                lines = [
                    {"status": "The push refers to repository [127.0.0.1:5999/acme/app]"},
                    {"status": f"Preparing {echo}", "id": "0123456789ab"},
                    {"error": f"unauthorized: {echo}", "errorDetail": {"message": f"unauthorized: {echo}"}},
                ]
                # As an engine streams: chunked, a JSON object per chunk (the SDK reads them as they come).
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                for line in lines:
                    data = (json.dumps(line) + "\r\n").encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.client = docker.DockerClient(
            base_url=f"tcp://127.0.0.1:{self.server.server_address[1]}", version="1.41", timeout=30
        )

    def close(self) -> None:
        self.client.close()
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def echoing_engine(mode: str) -> Iterator[EchoingEngine]:
    stand_in = EchoingEngine(mode)
    try:
        yield stand_in
    finally:
        stand_in.close()


@pytest.mark.parametrize("mode", ["refuse", "stream"])
@pytest.mark.parametrize("seed", range(8))
def test_a_failed_push_never_shows_the_registry_password(seed: int, mode: str) -> None:
    """Both of push's error branches, for real through the Docker SDK: the engine's refusal
    (APIError) and an error in its stream; the status lines it streams first too."""
    secret = password(random.Random(seed))
    lines: list[str] = []
    with echoing_engine(mode) as stand_in, pytest.raises(images.PushFailed) as caught:
        images.push(
            stand_in.client, "local/app:1", "127.0.0.1:5999/acme/app", "rev1",
            username="ci-user", password=secret, on_line=lines.append,
        )  # fmt: skip
    assert stand_in.pushes == 1  # the push reached the engine, with the credentials
    message = str(caught.value)
    assert message.startswith("docker push 127.0.0.1:5999/acme/app:rev1 failed: ") and "\n" not in message
    assert "[REGISTRY_PASSWORD]" in message
    assert leaks(message, secret) == [], message
    assert leaks("\n".join(lines), secret) == [], lines
    if mode == "stream":
        assert any(line.startswith("0123456789ab: Preparing") for line in lines), lines


@pytest.mark.parametrize("seed", range(6))
def test_a_refused_registry_login_never_shows_the_password(tmp_path: Path, seed: int) -> None:
    secrets = deploy_secrets(100 + seed)
    environ = {**secrets, "IMAGE": "127.0.0.1:5999/acme/app"}
    settings = load(tmp_path, environ=environ, defaults={})
    with echoing_engine("refuse") as stand_in, pytest.raises(images.PushFailed) as caught:
        deploy.login(stand_in.client, settings)
    message = str(caught.value)
    assert message.startswith("registry login to 127.0.0.1:5999 failed: "), message
    assert no_leaks(message, secrets) == {}, message


@pytest.mark.parametrize("seed", range(6))
def test_the_deploys_registry_preflight_never_shows_the_password(seed: int) -> None:
    """The preflight's login check (before the build) against an engine that says the login's
    body back: refused, named, and the password in no form."""
    from cnd_toolkit.release import preflight

    secrets = deploy_secrets(200 + seed)
    with echoing_engine("refuse") as stand_in:
        problems = preflight.registry(
            stand_in.client, "127.0.0.1:5999/acme/app", "ci-user", secrets["REGISTRY_PASSWORD"]
        )
    assert len(problems) == 1 and problems[0].startswith("the registry 127.0.0.1:5999 refused"), problems
    assert "check REGISTRY_USERNAME and REGISTRY_PASSWORD" in problems[0]
    assert no_leaks(problems[0], secrets) == {}, problems[0]


def _echoing_netlify(token_: str, where: str) -> Callable[[httpx.Request], httpx.Response]:
    """An API that says the request's Authorization header back, placed so that shortening the
    message (200 characters of a body, 300 of a JSON message) would cut the token in two."""

    def answer(request: httpx.Request) -> httpx.Response:
        header = request.headers["Authorization"]
        if where == "text":
            body = "x" * (200 - len("Bearer ") - len(token_) // 2) + header + " y"
            return httpx.Response(401, text=body)
        if where == "json":
            message = "z" * (300 - len("Bearer ") - len(token_) // 2) + header
            return httpx.Response(403, json={"message": message})
        raise httpx.ConnectError(f"proxy refused {header} ({json.dumps(token_)})", request=request)

    return answer


@pytest.mark.parametrize("where", ["text", "json", "connection"])
@pytest.mark.parametrize("seed", range(6))
def test_the_netlify_client_masks_an_echoed_token_before_shortening_it(seed: int, where: str) -> None:
    secret = token(random.Random(seed), prefix="nfp_")
    client = api.NetlifyClient(
        secret,
        "https://api.netlify.com/api/v1",
        retries=0,
        transport=httpx.MockTransport(_echoing_netlify(secret, where)),
    )
    with client, pytest.raises(api.NetlifyError) as caught:
        client.get_site("site-1")
    message = str(caught.value)
    assert leaks(message, secret) == [], message
    pieces = {secret[i : i + 8] for i in range(len(secret) - 7)}
    assert not any(piece in message for piece in pieces), message  # not half of it either


def test_a_tasks_unexpected_error_shows_its_traceback_without_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cnd_toolkit import tasks
    from invoke import Exit

    secrets = deploy_secrets(77)
    load(tmp_path, environ=secrets)
    secret = secrets["REGISTRY_PASSWORD"]
    with pytest.raises(Exit) as caught, tasks._failing_cleanly():
        raise RuntimeError("the engine said " + repr({"password": secret}) + " and " + json.dumps(secret))
    printed = capsys.readouterr().err
    assert "Traceback" in printed and "RuntimeError" in printed
    assert "error: unexpected RuntimeError" in str(caught.value.message)
    assert no_leaks(printed + str(caught.value.message), secrets) == {}
    tasks.console.print(f"a line a registry sent: {secret}", markup=False)
    tasks.out.print(f"a result: {json.dumps(secrets)}", markup=False)
    assert no_leaks("".join(capsys.readouterr()), secrets) == {}


class EchoingNetlify:
    """A Netlify API on loopback that refuses every request, saying its Authorization header back."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                header = self.headers.get("Authorization", "")
                body = json.dumps({"message": f"token rejected: {header} {urllib.parse.quote(header)}"}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("seed", range(3))
def test_inv_preview_against_an_api_that_echoes_the_token_prints_no_secret(seed: int) -> None:
    """A real `inv preview` (no engine needed): the API's refusal quotes the token back; the task
    ends in one line naming NETLIFY_AUTH_TOKEN, and no secret is in anything it printed."""
    secrets = deploy_secrets(200 + seed)
    server = EchoingNetlify()
    try:
        environ = {
            **os.environ, **secrets,
            "NETLIFY_SITE_ID": "site-1", "NETLIFY_API_URL": server.url, "BACKEND_URL": "https://api.acme.dev",
        }  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-m", "invoke", "preview"],
            cwd=proj.ROOT, env=environ, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    finally:
        server.close()
    printed = result.stdout + result.stderr
    assert result.returncode == 1, printed
    assert "Netlify refused the token" in printed and "NETLIFY_AUTH_TOKEN" in printed, printed
    assert no_leaks(printed, secrets) == {}, printed


# -- what a message shows: no control sequence for the terminal -----------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_an_error_shows_control_characters_as_escapes_and_keeps_the_rest(seed: int) -> None:
    """An API, an engine or a log can put an escape sequence, a carriage return or a bidi override
    into a message; the terminal must show it, not act on it."""
    rng = random.Random(seed)
    acting = [chr(c) for c in [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]]
    acting += ["\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))]
    plain = "abc xyz:/%\"'[]{}é日\t\n"
    text = "".join(rng.choice(acting) if rng.random() < 0.3 else rng.choice(plain) for _ in range(200))
    error = OpsError(text, detail=text)
    for shown_text in (str(error), error.detail):
        assert not any(c in shown_text for c in acting), repr(shown_text)

    def escaped(c: str) -> str:
        if c not in acting:
            return c
        return "\\r" if c == "\r" else f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"

    assert str(error) == "".join(map(escaped, text))  # the rest kept as it was, in order


def test_a_netlify_error_body_with_escape_codes_reaches_the_terminal_inert() -> None:
    body = '{"message": "denied \\u001b[31mred\\u001b[0m \\u001b]8;;http://evil\\u0007link\\u001b]8;;\\u0007"}'

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        do_GET = do_POST

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = api.NetlifyClient("tok-" + "x" * 20, api_url=f"http://127.0.0.1:{server.server_port}/api/v1")
        with pytest.raises(OpsError) as caught:
            client.create_deploy("site-1", {}, draft=True)
    finally:
        server.shutdown()
        server.server_close()
    assert "\x1b" not in str(caught.value) and "\x07" not in str(caught.value), repr(str(caught.value))
    assert "\\x1b[31mred" in str(caught.value), str(caught.value)
