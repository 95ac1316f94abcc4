"""The whole `inv deploy` pipeline with real parts: this project's image built and smoke-tested,
pushed to a real registry, rolled out behind a real Caddy, its site deployed to the strict local
Netlify API as a draft, smoke-tested through the draft (whose _redirects proxies /api/* to the
backend), published, and recorded on the host."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import threading
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest
from cnd_toolkit import project as proj
from cnd_toolkit import settings as settings_mod
from cnd_toolkit.docker import engine as engine_mod
from cnd_toolkit.docker.engine import client_is_local, connect
from cnd_toolkit.errors import EngineUnavailable, OpsError, SmokeFailed
from cnd_toolkit.netlify import api
from cnd_toolkit.release import caddy, deploy, lock, proxy, records, rollout
from cnd_toolkit.wait import NotReady, poll

from tests import deploy_leaks
from tests.conftest import base_image, engine_socket, free_port, needed_tool
from tests.netlify_api import LocalNetlify
from tests.secret_values import deploy_secrets

pytestmark = pytest.mark.docker
TOKEN = "nfp_deploy_test_token_abcdef0123456789"


@dataclass
class Stage:
    project: proj.Project
    settings: settings_mod.Settings
    netlify: LocalNetlify
    lines: list[str]


@pytest.fixture
def stage(engine: Any, registry: str, proxy_image: str) -> Iterator[Stage]:
    project = proj.load()
    port = free_port()
    name = f"cnd-proxy-deploytest-{uuid.uuid4().hex[:6]}"
    with LocalNetlify(TOKEN) as netlify:
        environ = {
            "IMAGE": f"{registry}/acme/{project.slug}",
            "BASE_IMAGE": base_image(engine),
            "BACKEND_URL": f"http://127.0.0.1:{port}",
            "PROXY_IMAGE": proxy_image,
            "PROXY_NAME": name,
            "PROXY_HTTP_PORT": str(port),
            "PROXY_HTTPS_PORT": str(free_port()),
            "KEEP_RELEASES": "1",
            "HEALTH_TIMEOUT": "120",  # a deadline only: a healthy release passes as soon as it is
            "NETLIFY_AUTH_TOKEN": TOKEN,
            "NETLIFY_SITE_ID": "site-1",
            "NETLIFY_API_URL": netlify.api_url,
        }
        settings = settings_mod.load(project.root, environ=environ)
        try:
            yield Stage(project, settings, netlify, [])
        finally:
            proxy.remove(engine, deploy.target(project, settings).proxy)
            rollout.remove_releases(engine, project.slug)
            lock.release(engine, project.slug)
            for image in engine.images.list(name=environ["IMAGE"]):  # this registry's tags (a new one each run)
                for tag in image.tags:
                    if tag.startswith(f"{environ['IMAGE']}:"):
                        with contextlib.suppress(docker.errors.NotFound):
                            engine.images.remove(tag)


def test_a_deploy_ships_both_halves_and_records_them(engine: Any, stage: Stage) -> None:
    report = deploy.deploy(stage.project, stage.settings, deploy.Options(allow_dirty=True), say=stage.lines.append)
    revision = report.revision
    backend = stage.settings["BACKEND_URL"]
    assert httpx.get(f"{backend}/api/version").json()["revision"] == revision
    assert report.image.startswith(f"{stage.settings['IMAGE']}@sha256:")
    assert report.release is not None and report.release.digest == report.image
    assert report.netlify is not None and report.netlify.uploaded == report.netlify.files
    published = stage.netlify.published()
    assert published is not None and published.id == report.netlify.deploy.id and published.draft
    live_site = stage.netlify.site_url()
    assert httpx.get(live_site).status_code == 200
    assert httpx.get(f"{live_site}api/version").json()["revision"] == revision  # through the site's _redirects
    proxy_container = proxy.get(engine, stage.settings["PROXY_NAME"])
    [record] = records.load(proxy_container, stage.project.slug)
    assert (record.revision, record.image, record.netlify_deploy) == (revision, report.image, published.id)
    for phase in ("build", "smoke", "push", "health", "switch", "netlify", "publish"):
        assert report.phases.get(phase, -1) >= 0, report.phases
    assert lock.holder(engine, stage.project.slug) is None

    again = deploy.deploy(stage.project, stage.settings, deploy.Options(allow_dirty=True), say=stage.lines.append)
    assert again.netlify is not None and again.netlify.uploaded == 0  # the site did not change
    assert len(records.load(proxy_container, stage.project.slug)) == 2

    # A release the smoke gate catches (it answers 400, not 413, to a 2 MiB body): nothing past
    # the smoke step happens, and the live release and Netlify deploy stay.
    live = rollout.live_release(engine, stage.project.slug)
    deploys = dict(stage.netlify.deploys)
    broken = settings_mod.load(
        stage.project.root, environ={**stage.settings.values, "APP_MAX_REQUEST_BYTES": str(8 * 1024 * 1024)}
    )
    with pytest.raises(SmokeFailed, match=r"smoke tests failed") as caught:
        deploy.deploy(stage.project, broken, deploy.Options(allow_dirty=True), say=stage.lines.append)
    assert caught.value.detail  # the container's log comes with it
    assert str(caught.value).splitlines()[-1].startswith("  test_errors_are_json at tests/smoke/test_smoke.py:")
    assert rollout.live_release(engine, stage.project.slug) == live and live is not None
    assert [r.name for r in rollout.releases(engine, stage.project.slug) if r.running] == [live.name]
    assert stage.netlify.deploys == deploys and lock.holder(engine, stage.project.slug) is None
    assert len(records.load(proxy_container, stage.project.slug)) == 2

    # During maintenance the proxy answers 503: the deploy still goes through, checking the
    # draft's page only and saying so, and the project stays in maintenance.
    assert proxy_container is not None
    proxy.set_maintenance(proxy_container, stage.project.slug, True, 120)
    stage.lines.clear()
    during = deploy.deploy(stage.project, stage.settings, deploy.Options(allow_dirty=True), say=stage.lines.append)
    said = "\n".join(stage.lines)
    assert "not confirmed through the proxy" in said and "its page only: maintenance is on" in said, said
    assert during.netlify is not None and stage.netlify.published().id == during.netlify.deploy.id  # type: ignore[union-attr]
    assert httpx.get(f"{backend}/api/version").status_code == 503
    proxy.set_maintenance(proxy_container, stage.project.slug, False, 120)
    assert httpx.get(f"{backend}/api/version").json()["revision"] == revision


def test_metrics_reach_a_scraper_through_the_proxys_internal_port_and_the_public_only_with_the_token(
    engine: Any, stage: Stage
) -> None:
    metrics_token = "m" * 20 + uuid.uuid4().hex
    settings = settings_mod.load(stage.project.root, environ={**stage.settings.values, "METRICS_TOKEN": metrics_token})
    report = deploy.deploy(stage.project, settings, deploy.Options(allow_dirty=True), say=stage.lines.append)
    backend = settings["BACKEND_URL"]
    for _ in range(7):
        assert httpx.get(f"{backend}/api/version").status_code == 200
    # Public: the API origin answers /metrics only to the token's bearer; Netlify's site never.
    assert httpx.get(f"{backend}/metrics").status_code == 401
    assert httpx.get(f"{backend}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    public = httpx.get(f"{backend}/metrics", headers={"Authorization": f"Bearer {metrics_token}"})
    assert public.status_code == 200 and f'revision="{report.revision}"' in public.text
    assert httpx.get(f"{stage.netlify.site_url()}metrics").status_code == 404
    assert httpx.get(f"{stage.netlify.site_url()}api/../metrics").status_code == 404
    # The token reaches no container: the release holds its SHA-256.
    live = rollout.live_release(engine, stage.project.slug)
    assert live is not None and metrics_token not in json.dumps(live.container.attrs)
    # Internal: a scraper on the proxy's network reads /<project>/metrics on the proxy's port 9180.
    target = deploy.target(stage.project, settings)
    proxy_container = proxy.get(engine, target.proxy.name)
    assert proxy_container is not None

    def scrape(*paths: str) -> str:
        base = f"http://{target.proxy.name}:{caddy.METRICS_PORT}"
        fetch = (
            "import sys, urllib.request, urllib.error\n"
            "for path in sys.argv[1:]:\n"
            "    try:\n"
            f"        print(urllib.request.urlopen({base!r} + path, timeout=30).read().decode())\n"
            "    except urllib.error.HTTPError as exc:\n"
            "        print(path, exc.code)\n"
        )
        out = engine.containers.run(
            report.image, ["python", "-c", fetch, *(paths or [f"/{stage.project.slug}/metrics"])],
            network=target.proxy.network, remove=True, read_only=True,
        )  # fmt: skip
        return out.decode() if isinstance(out, bytes) else str(out)

    text = scrape()
    assert f'revision="{report.revision}"' in text
    # Only that exact path: not in capitals, not under it, not with another project's name.
    slug = stage.project.slug
    others = [f"/{slug.upper()}/metrics", f"/{slug}/metrics/x", f"/{slug}/healthz", f"/{slug}/metricsx", "/x/metrics"]
    others += [f"/{slug}//metrics", f"/{slug}/%2e%2e/{slug}/metrics", f"//{slug}/metrics", f"/{slug}/./metrics"]
    assert scrape(*others).split() == [part for path in others for part in (path, "404")]
    # inv status's figures, from the release's own /metrics, while requests come.
    stop = threading.Event()
    answered: list[int] = []

    def load() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                answered.append(client.get(f"{backend}/api/version").status_code)

    def flowing() -> None:
        if not answered:
            raise NotReady("no answer to the load yet")

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        poll(flowing, timeout=60, interval=0.01)  # requests flow before the window opens
        figures = deploy.traffic(stage.project, settings, window=1.0)
    finally:
        stop.set()
        loader.join(30)
    assert "req/s, 5xx 0.0%, p95" in figures, figures
    counted = [
        line for line in text.splitlines() if line.startswith("http_requests_total{") and '"/api/version"' in line
    ]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 7, counted
    # A proxy made by an older template (no metrics port) is brought up to date, with one reload.
    old_main = caddy.MAIN.partition("\n# Prometheus")[0] + "\n"
    proxy.put_file(proxy_container, f"{caddy.CONFIG_DIR}/Caddyfile", old_main)
    proxy.reload(proxy_container)
    with pytest.raises(docker.errors.ContainerError):
        scrape()
    assert proxy.upgrade_main(proxy_container) and not proxy.upgrade_main(proxy_container)
    assert f'revision="{report.revision}"' in scrape()


def test_a_real_inv_deploy_leaves_no_secret_anywhere(
    engine: Any, registry: str, proxy_image: str, tmp_path: Path
) -> None:
    """Issue 21, 12: a real `inv deploy` given a Netlify token, a registry password (and user) and a
    metrics token, generated with quotes, %, unicode and base64-looking runs (and the token again
    under another name, as a CI step may export it). None can be read in what it printed, in
    ``docker inspect`` of any container, volume or network it made (each inspected as it was made),
    in the image it pushed, in a file it wrote (the project, its temporary folder, ~/.docker), in
    the shared proxy's volumes, or in what it uploaded to Netlify."""
    project = proj.load()
    secrets = deploy_secrets(zlib.crc32(b"a real inv deploy"))
    port = free_port()
    name = f"cnd-proxy-secrets-{uuid.uuid4().hex[:6]}"
    with LocalNetlify(secrets["NETLIFY_AUTH_TOKEN"]) as netlify:
        environ = {
            **os.environ,
            **secrets,
            "CI_DEPLOY_TOKEN": secrets["NETLIFY_AUTH_TOKEN"],
            "DEPLOY_TARGET": "host",
            "IMAGE": f"{registry}/acme/{project.slug}",
            "BASE_IMAGE": base_image(engine),
            "BACKEND_URL": f"http://127.0.0.1:{port}",
            "PROXY_IMAGE": proxy_image,
            "PROXY_NAME": name,
            "PROXY_HTTP_PORT": str(port),
            "PROXY_HTTPS_PORT": str(free_port()),
            "KEEP_RELEASES": "1",
            "HEALTH_TIMEOUT": "120",
            "NETLIFY_SITE_ID": "site-1",
            "NETLIFY_API_URL": netlify.api_url,
        }
        settings = settings_mod.load(project.root, environ=environ)
        try:
            deployed = deploy_leaks.deploy_and_read(
                engine, project.root, environ, tmp_path / "tmp",
                names=(project.slug, name), netlify=netlify, proxy_container=lambda: proxy.get(engine, name),
            )  # fmt: skip
            live = rollout.live_release(engine, project.slug)
            assert live is not None
            # The metrics token was in play: the release holds its SHA-256 (only).
            env = dict(item.split("=", 1) for item in live.container.attrs["Config"]["Env"])
            assert env["APP_METRICS_TOKEN_SHA256"] == hashlib.sha256(secrets["METRICS_TOKEN"].encode()).hexdigest()
            containers = {what: attrs for what, attrs in deployed.inspected.items() if what.startswith("container ")}
            assert len(containers) >= 3, list(deployed.inspected)  # the smoke container, the release, the proxy
            for what, attrs in containers.items():  # not the names either: REGISTRY_USERNAME is withheld too
                names = {item.split("=", 1)[0] for item in attrs["Config"].get("Env") or []}
                assert names.isdisjoint(settings_mod.withheld_names()), (what, names)
            pushed = engine.images.get(live.container.attrs["Image"])
            inspected = {**deployed.inspected, "the image": pushed.attrs, "the image's history": pushed.history()}
            found = deploy_leaks.find_leaks(
                secrets, output=deployed.output, inspected=inspected, files=deployed.files, texts=deployed.texts
            )
            assert found == {}
            assert deploy_leaks.image_holds(engine, pushed.id, secrets) == []
        finally:
            proxy.remove(engine, deploy.target(project, settings).proxy)
            rollout.remove_releases(engine, project.slug)
            lock.release(engine, project.slug)
            for image in engine.images.list(name=environ["IMAGE"]):
                for tag in image.tags:
                    if tag.startswith(f"{environ['IMAGE']}:"):
                        with contextlib.suppress(docker.errors.NotFound):
                            engine.images.remove(tag)


def test_a_refused_token_stops_before_anything_changes(engine: Any, stage: Stage) -> None:
    bad = settings_mod.load(
        stage.project.root, environ={**stage.settings.values, "NETLIFY_AUTH_TOKEN": "nfp_wrong_0123456789abcdef"}
    )
    with pytest.raises(api.AuthError) as caught:
        deploy.deploy(stage.project, bad, deploy.Options(allow_dirty=True), say=stage.lines.append)
    assert "nfp_wrong" not in str(caught.value) and "NETLIFY_AUTH_TOKEN" in str(caught.value)
    assert rollout.releases(engine, stage.project.slug) == []  # nothing was started
    assert stage.netlify.deploys == {} and lock.holder(engine, stage.project.slug) is None


def test_missing_settings_are_each_named_before_anything_changes(engine: Any, stage: Stage) -> None:
    empty = settings_mod.load(stage.project.root, environ={"IMAGE": ""}, defaults={})
    with pytest.raises(deploy.PreflightFailed) as caught:
        deploy.deploy(stage.project, empty, deploy.Options(), say=stage.lines.append)
    message = str(caught.value)
    for name in ("BACKEND_URL", "NETLIFY_AUTH_TOKEN", "NETLIFY_SITE_ID"):
        assert f"{name} is not set" in message, message
    assert rollout.releases(engine, stage.project.slug) == []


def test_a_draft_whose_smoke_test_fails_is_never_published(engine: Any, stage: Stage) -> None:
    """The draft's /api/* rule proxies to a BACKEND_URL where nothing answers: the draft is ready
    at Netlify, its smoke test fails, and it stays an unpublished draft; the lock is free."""
    dead = f"http://127.0.0.1:{free_port()}"
    settings = settings_mod.load(
        stage.project.root, environ={**stage.settings.values, "BACKEND_URL": dead, "HEALTH_TIMEOUT": "3"}
    )
    with pytest.raises(SmokeFailed, match=r"was not published") as caught:
        deploy.deploy(stage.project, settings, deploy.Options(backend=False, allow_dirty=True), say=stage.lines.append)
    assert "/api/version" in str(caught.value)
    [draft] = stage.netlify.deploys.values()
    assert draft.state == "ready" and stage.netlify.published() is None
    assert lock.holder(engine, stage.project.slug) is None
    assert records.load(proxy.get(engine, stage.settings["PROXY_NAME"]), stage.project.slug) == []


def test_a_preview_is_a_smoke_tested_draft_that_touches_no_engine_and_is_never_published(
    engine: Any, stage: Stage
) -> None:
    deploy.deploy(stage.project, stage.settings, deploy.Options(allow_dirty=True), say=stage.lines.append)
    published = stage.netlify.published()
    assert published is not None
    # No Docker engine answers at DOCKER_HOST: a preview (a pull request's, in CI) needs none.
    nowhere = {**stage.settings.values, "DOCKER_HOST": f"tcp://127.0.0.1:{free_port()}"}
    done = deploy.preview(stage.project, settings_mod.load(stage.project.root, environ=nowhere), say=stage.lines.append)
    assert done.deploy.state == "ready" and done.deploy.id != published.id
    assert stage.netlify.published().id == published.id  # type: ignore[union-attr]
    assert httpx.get(f"{done.deploy.url.rstrip('/')}/api/version").status_code == 200
    dead = {**nowhere, "BACKEND_URL": f"http://127.0.0.1:{free_port()}", "HEALTH_TIMEOUT": "3"}
    with pytest.raises(SmokeFailed, match="is not a working preview"):
        deploy.preview(stage.project, settings_mod.load(stage.project.root, environ=dead), say=stage.lines.append)
    assert stage.netlify.published().id == published.id  # type: ignore[union-attr]
    missing = {**nowhere, "NETLIFY_SITE_ID": ""}
    with pytest.raises(OpsError, match="NETLIFY_SITE_ID is not set"):
        deploy.preview(stage.project, settings_mod.load(stage.project.root, environ=missing), say=stage.lines.append)


@pytest.fixture
def tcp_engine(engine: Any) -> Iterator[str]:
    """The same engine as ``tcp://GATEWAY:PORT`` through socat, on the Docker bridge's address:
    not a loopback address, so the tasks treat it as another machine (nothing they start is
    reached through a published port)."""
    socat = needed_tool("socat", "to offer the engine as a tcp:// DOCKER_HOST")
    ipam = engine.networks.get("bridge").attrs["IPAM"]["Config"][0]
    proxy_container = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))  # the host's side
    with socket.socket() as sock:
        sock.bind((proxy_container, 0))
        port = sock.getsockname()[1]
    relay = subprocess.Popen(
        [socat, f"TCP-LISTEN:{port},bind={proxy_container},fork,reuseaddr", f"UNIX-CONNECT:{engine_socket()}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    address = f"tcp://{proxy_container}:{port}"
    try:
        poll(lambda: _answers(address), timeout=60, interval=0.1)
        yield address
    finally:
        relay.terminate()
        relay.wait(10)


def _answers(address: str) -> None:
    try:
        connect(address, timeout=2)
    except EngineUnavailable as exc:
        raise NotReady(str(exc)) from None


def test_a_deploy_to_a_tcp_docker_host_gates_and_smokes_through_the_api(
    engine: Any, stage: Stage, tcp_engine: str
) -> None:
    settings = settings_mod.load(stage.project.root, environ={**stage.settings.values, "DOCKER_HOST": tcp_engine})
    assert not client_is_local(connect(tcp_engine))
    published: dict[str, Any] = {}  # every container the deploy started: its port bindings
    ours = (f"{stage.project.slug}-", settings["PROXY_NAME"])  # its names (another run may share the engine)
    stream = engine.events(decode=True, filters={"type": "container", "event": "start"})
    marker = f"deploytest-marker-{uuid.uuid4().hex[:6]}"
    watched = threading.Event()  # every start before the marker's has been looked at

    def watch() -> None:
        for event in stream:
            if (event.get("Actor") or {}).get("Attributes", {}).get("name") == marker:
                watched.set()
                return
            with contextlib.suppress(docker.errors.NotFound):
                found = engine.containers.get(event["id"])
                if str(found.name).startswith(ours):
                    published[str(found.name)] = found.attrs["HostConfig"]["PortBindings"]

    threading.Thread(target=watch, daemon=True).start()
    try:
        report = deploy.deploy(stage.project, settings, deploy.Options(allow_dirty=True), say=stage.lines.append)
        # Events come in order: once the watcher meets this container's start, it has seen the deploy's.
        engine.containers.run(report.image, ["python", "-c", "pass"], name=marker, remove=True)
        assert watched.wait(60), "the watcher did not reach the marker's start event"
    finally:
        stream.close()
    said = "\n".join(stage.lines)
    assert "reached through its API" in said, said  # the smoke suite ran, through docker exec
    assert report.phases["smoke"] > 0 and report.phases["health"] > 0
    assert httpx.get(f"{settings['BACKEND_URL']}/api/version").json()["revision"] == report.revision
    assert len(published) >= 3, published  # the smoke container, the release, the proxy
    for name, bindings in published.items():
        if name != settings["PROXY_NAME"]:
            assert not bindings, (name, bindings)  # nothing of the app reached through a published port


def test_a_backend_url_host_is_one_projects_and_moving_it_is_asked_for(engine: Any, proxy_image: str) -> None:
    """Preflight reads the host's site files: another project's host is refused, and so is a new
    host for this project (a staging target on production's Docker host) unless --new-host."""
    settings = proxy.ProxySettings(
        proxy_image, free_port(), free_port(), name=f"cnd-proxy-sites-{uuid.uuid4().hex[:6]}"
    )
    try:
        proxy_container = proxy.ensure(engine, settings, "sites-a")
        proxy.put_file(proxy_container, f"{caddy.SITES_DIR}/sites-a.caddy", caddy.render_site(
            caddy.Site("sites-a", "https://api.a.example.net", ("sites-a-blue:8080",))
        ))  # fmt: skip
        sites = proxy.read_sites(proxy_container)
        deploy.check_site(sites, "sites-a", "https://api.a.example.net")  # its own: fine
        deploy.check_site(sites, "sites-b", "https://api.b.example.net")  # a new project: fine
        with pytest.raises(deploy.PreflightFailed, match=r"served on this Docker host by the project sites-a"):
            deploy.check_site(sites, "sites-b", "https://API.A.example.net/")
        with pytest.raises(deploy.PreflightFailed, match=r"serves sites-a at api.a.example.net.*--new-host"):
            deploy.check_site(sites, "sites-a", "https://staging.a.example.net")
        deploy.check_site(sites, "sites-a", "https://staging.a.example.net", new_host=True)
    finally:
        proxy.remove(engine, settings)
        for network in engine.networks.list(names=[proxy.network_name("sites-a")]):
            network.remove()


def test_files_git_does_not_track_stop_a_deploy(tmp_path: Path) -> None:
    """They would reach the image or the site without a commit naming them."""
    for name in ("pyproject.toml", "netlify.toml"):
        (tmp_path / name).write_bytes((proj.ROOT / name).read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=tmp_path, check=True)
    here = dataclasses.replace(proj.load(), root=tmp_path)
    environ = {"BACKEND_URL": "http://127.0.0.1", "IMAGE": "registry.acme.dev/acme/x"}  # a host that resolves
    settings = settings_mod.load(tmp_path, environ=environ, defaults={})
    options = deploy.Options(netlify=False)
    assert deploy.preflight(here, settings, options)  # clean
    (tmp_path / "api").mkdir()
    for name in ("api/notes.txt", "public.txt", "x y.txt"):
        (tmp_path / name).write_text("not committed")
    with pytest.raises(deploy.PreflightFailed, match=r"files git does not track") as caught:
        deploy.preflight(here, settings, options)
    assert all(name in str(caught.value) for name in ("api/notes.txt", "public.txt", "x y.txt"))
    # Deployed anyway, the revision says that what ships is not what the commit holds.
    assert deploy.preflight(here, settings, dataclasses.replace(options, allow_dirty=True)).endswith("-dirty")
    (tmp_path / ".gitignore").write_text("*.txt\n")
    subprocess.run([*git, "add", ".gitignore"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "ignore"], cwd=tmp_path, check=True)
    assert deploy.preflight(here, settings, options)  # ignored files are not shipped by accident
    assert deploy.preflight(here, settings, dataclasses.replace(options, allow_dirty=True))

    # netlify.toml's placeholder host, and an IMAGE with a tag, are refused before anything runs.
    for name, value, expected in [
        ("BACKEND_URL", "https://api.example.com", "BACKEND_URL"),
        ("BACKEND_URL", "https://staging.example.org", "BACKEND_URL"),
        ("IMAGE", "registry.acme.dev/acme/x:v1", "IMAGE"),
    ]:
        wrong = settings_mod.load(tmp_path, environ={**environ, name: value}, defaults={})
        with pytest.raises(deploy.PreflightFailed, match=expected):
            deploy.preflight(here, wrong, options)


def test_an_engine_lost_mid_task_is_one_line_with_what_to_do() -> None:
    import requests

    error = engine_mod.lost(requests.exceptions.ConnectionError(ConnectionRefusedError(111, "Connection refused")))
    message = str(error)
    assert "stopped answering" in message and "connection refused" in message and "inv lock --release" in message
    assert "\n" not in message
    # An engine that answers, refusing what the task expected to find (removed by hand meanwhile):
    # its own reason, not an address problem.
    response = requests.Response()
    response.status_code = 404
    gone = docker.errors.NotFound("404 Client Error", response=response, explanation="No such container: abc123")
    message = str(engine_mod.lost(gone))
    assert "refused a request during the task: No such container: abc123 (HTTP 404;" in message, message
    assert "HTTP_PROXY" not in message and "inv lock --release" in message


@pytest.mark.docker
@pytest.mark.rollouts
def test_a_canary_deploy_gates_the_api_then_splits_the_site_and_records_it(engine: Any, stage: Stage) -> None:
    """`inv deploy --canary` end to end: the backend canary (no traffic here: each step waits its
    extra intervals, then goes on), then a Netlify branch deploy moved through a split test and
    published; and `inv deploy` refuses to start while a canary watched by hand runs."""
    first = deploy.deploy(stage.project, stage.settings, deploy.Options(allow_dirty=True), say=stage.lines.append)
    quick = stage.settings.override("CANARY_INTERVAL", "1", "test").override("CANARY_STEPS", "10,100", "test")
    options = deploy.Options(allow_dirty=True, canary=True)
    report = deploy.deploy(stage.project, quick, options, say=stage.lines.append)
    assert report.canary is not None and report.canary.promoted
    [(share, verdict)] = report.canary.verdicts
    assert share == 10 and verdict.outcome == "inconclusive"  # no requests came: said, not failed
    assert report.release is not None and report.release.name != first.release.name  # type: ignore[union-attr]
    test = next(iter(stage.netlify.sites["site-1"].split_tests.values()))
    assert [event for event, _ in test.history] == ["create", "publish", "unpublish"]
    assert test.history[0][1] == {"main": 90, "canary": 10} and not test.active
    published = stage.netlify.published()
    assert published is not None and published.branch == "canary" and published.id == report.netlify.deploy.id  # type: ignore[union-attr]
    proxy_container = proxy.get(engine, stage.settings["PROXY_NAME"])
    assert records.load(proxy_container, stage.project.slug)[0].container == report.release.name
    # Watched by hand: stops at 10 %, Netlify untouched; a plain deploy is refused meanwhile.
    manual = deploy.deploy(
        stage.project, quick, deploy.Options(allow_dirty=True, canary=True, manual=True), say=stage.lines.append
    )
    assert manual.canary is not None and not manual.canary.promoted and manual.netlify is None
    assert any("Netlify keeps its live deploy" in line for line in stage.lines)
    with pytest.raises(deploy.PreflightFailed, match=r"a canary of .* is in progress"):
        deploy.deploy(stage.project, quick, deploy.Options(allow_dirty=True, netlify=False), say=stage.lines.append)
    with pytest.raises(deploy.PreflightFailed, match=r"a canary of .* is in progress"):  # its front end waits too
        deploy.deploy(stage.project, quick, deploy.Options(allow_dirty=True, backend=False), say=stage.lines.append)
    state = deploy.status(stage.project, quick)
    assert state.live is not None and state.live.name == report.release.name  # the release taking the rest
    assert state.notes[0].startswith(f"Canary {manual.canary.release.name}") and "takes 10%" in state.notes[0]
    assert records.load(proxy_container, stage.project.slug)[0].container == report.release.name  # not recorded yet
    promoted = deploy.canary_promote(stage.project, quick, say=stage.lines.append)
    assert promoted.name == manual.canary.release.name and deploy.canary_state(stage.project, quick) is None
    assert records.load(proxy_container, stage.project.slug)[0].container == promoted.name
    # The site's split test fails midway (Netlify refuses a step): ended, nothing published, said.
    before = stage.netlify.published()
    steps = quick.override("CANARY_STEPS", "10,50,100", "test")
    stage.netlify.fail(422, method="PUT", path_prefix="/sites/site-1/traffic_splits")
    with pytest.raises(OpsError, match=r"the split test was ended and Netlify keeps its live deploy") as caught:
        deploy.deploy(stage.project, steps, options, say=stage.lines.append)
    assert "inv deploy --netlify-only" in str(caught.value)
    assert not test.active and test.history[-1][0] == "unpublish", test.history
    assert stage.netlify.published() == before  # the deploy the split test was for was never published
    assert "Netlify: the split test was ended; the live deploy is unchanged" in stage.lines
    latest = records.load(proxy_container, stage.project.slug)[0]  # the API's canary went live and is recorded
    assert latest.container != promoted.name and latest.netlify_deploy == ""
