"""The backend half of a deploy on one Docker host: a new colour beside the live one, a health
gate, the switch, and the old colour drained and kept for rollback.

The switch needs no change to Caddy: the project's site proxies to both colours' network
aliases (``<slug>-blue``, ``<slug>-green``) with health checks, so the new colour enters the
rotation once Caddy finds it ready, and the old one leaves it when it stops (SIGTERM: gunicorn
finishes its in-flight requests; a request that finds it gone is retried on the new one). For a
moment both answer, as in any start-first rollout.

Everything goes through the Docker API (no shell on the host, no port of the app published), so
the same code works on a local engine, ``tcp://`` and ``ssh://``. Until the switch, the live
release is untouched: a release that never turns healthy is removed with its logs shown, and
the old one keeps serving. After the switch, the proxy is asked for ``/api/version`` through
``BACKEND_URL``; a release that does not answer there is switched back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import httpx
from docker.models.containers import Container

from ops.docker import containers
from ops.docker.engine import client_is_local
from ops.docker.images import RELEASE_LABEL
from ops.errors import NeverHealthy, OpsError
from ops.logs import LineSink
from ops.release import caddy, proxy

APP_LABEL = RELEASE_LABEL
PREFIX = "dev.copier-netlify-docker.release"
COLOURS = ("blue", "green")
# A container of a release: limits and hardening (docker run --read-only --tmpfs /tmp ...).
HARDENING: dict[str, Any] = {
    "read_only": True,
    "tmpfs": {"/tmp": "rw,noexec,nosuid,size=64m"},
    "security_opt": ["no-new-privileges:true"],
    "cap_drop": ["ALL"],
    "restart_policy": {"Name": "unless-stopped"},
}
WARM_SCRIPT = (
    "import os, urllib.request\n"
    "port = os.environ.get('PORT', '8080')\n"
    "for path in ['/readyz', '/healthz', '/api/version', '/api/greeting'] * 3:\n"
    "    urllib.request.urlopen(f'http://127.0.0.1:{port}{path}', timeout=5).read()\n"
)


class RolloutFailed(OpsError):
    """The new release did not take; the message says what still serves."""


@dataclass(frozen=True)
class Target:
    """What a rollout needs of the project and its settings."""

    slug: str
    backend_url: str
    container_port: int
    proxy: proxy.ProxySettings
    health_timeout: float = 60
    keep_releases: int = 3
    memory: str = "512m"
    cpus: float = 1.0


@dataclass(frozen=True)
class Release:
    """A release container, read back from its labels."""

    container: Container
    colour: str
    version: str
    revision: str
    image: str
    digest: str
    created: str

    @property
    def name(self) -> str:
        return str(self.container.name)

    @property
    def running(self) -> bool:
        return self.container.status == "running"


@dataclass
class Timings:
    phases: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the block's seconds to ``name`` when it completes (a failed phase is not timed)."""
        started = time.perf_counter()
        yield
        self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - started


def releases(client: docker.DockerClient, slug: str) -> list[Release]:
    """The project's release containers on the host, newest first."""
    found = client.containers.list(all=True, filters={"label": f"{APP_LABEL}={slug}"})
    out = []
    for container in found:
        labels = container.labels
        out.append(
            Release(
                container=container,
                colour=colour_of(container, slug),
                version=labels.get(f"{PREFIX}.version", ""),
                revision=labels.get(f"{PREFIX}.revision", ""),
                image=labels.get(f"{PREFIX}.image", ""),
                digest=labels.get(f"{PREFIX}.digest", ""),
                created=labels.get(f"{PREFIX}.created", ""),
            )
        )
    return sorted(out, key=lambda r: r.created, reverse=True)


def colour_of(container: Container, slug: str) -> str:
    """The colour a release answers as: its alias on the project's network (a rollback may have
    moved it from the colour it was started as, which its label keeps)."""
    networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
    aliases = (networks.get(proxy.network_name(slug)) or {}).get("Aliases") or []
    found = [colour for colour in COLOURS if alias(slug, colour) in aliases]
    return found[0] if found else str(container.labels.get(f"{PREFIX}.colour", ""))


def recolour(client: docker.DockerClient, release: Release, slug: str, colour: str) -> None:
    """Give a stopped release the other colour's alias, so it can start beside the live one."""
    network = client.networks.get(proxy.network_name(slug))
    network.disconnect(release.container, force=True)
    network.connect(release.container, aliases=[alias(slug, colour)])


def live_release(client: docker.DockerClient, slug: str) -> Release | None:
    """The running release (the newest, should a deploy be under way), or None."""
    running = [release for release in releases(client, slug) if release.running]
    return running[0] if running else None


def alias(slug: str, colour: str) -> str:
    return f"{slug}-{colour}"


def site(target: Target) -> caddy.Site:
    """The project's site block: both colours, whichever runs."""
    upstreams = tuple(caddy.upstream(alias(target.slug, colour), target.container_port) for colour in COLOURS)
    return caddy.Site(target.slug, target.backend_url, upstreams)


def start_release(
    client: docker.DockerClient,
    target: Target,
    image: str,
    *,
    version: str,
    revision: str,
    digest: str,
    environment: Mapping[str, str],
    colour: str,
    name: str,
) -> containers.Running:
    network = proxy.ensure_network(client, target.slug)
    labels = {
        APP_LABEL: target.slug,
        f"{PREFIX}.colour": colour,
        f"{PREFIX}.version": version,
        f"{PREFIX}.revision": revision,
        f"{PREFIX}.image": image,
        f"{PREFIX}.digest": digest,
        f"{PREFIX}.created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    host_options = {
        **HARDENING,
        "network_mode": network,
        "mem_limit": target.memory,
        "nano_cpus": int(target.cpus * 1e9),
    }
    endpoint = client.api.create_endpoint_config(aliases=[alias(target.slug, colour)])
    return containers.start(
        client,
        image,
        container_port=target.container_port,
        publish=False,
        # The SDK takes {network: endpoint}; its type stubs say one endpoint.
        networking=client.api.create_networking_config({network: endpoint}),  # type: ignore[arg-type]
        environment={**environment, "FORWARDED_ALLOW_IPS": environment.get("FORWARDED_ALLOW_IPS", "*")},
        name=name,
        labels=labels,
        health_interval=1.0,
        host_options=host_options,
    )


def remove_named(client: docker.DockerClient, name: str, settle: float = 2.0) -> None:
    """Remove the container called ``name``, made or started. Interrupted while the engine was
    creating it, we may ask before it exists: look again for ``settle`` seconds."""
    deadline = time.monotonic() + settle
    while True:
        try:
            containers.remove(client.containers.get(name))
            return
        except docker.errors.NotFound:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.2)


def never_started(release: Release) -> bool:
    """A release container the engine made but never started (a deploy killed in between)."""
    return str(release.container.attrs.get("State", {}).get("StartedAt", "")).startswith("0001-")


def warm(running: containers.Running) -> None:
    """A few requests to the new release's routes from inside it, so its workers are loaded."""
    code, output = running.container.exec_run(["python", "-c", WARM_SCRIPT])
    if code != 0:
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        raise NeverHealthy(f"the new release failed while warming up: {' '.join(text.split())[-300:]}")


def confirm(backend_url: str, revision: str, timeout: float = 20) -> None:
    """Ask ``/api/version`` through the proxy until it names ``revision``."""
    deadline = time.monotonic() + timeout
    seen = "no answer"
    with httpx.Client(timeout=3, verify=True) as http:
        while time.monotonic() < deadline:
            try:
                answer = http.get(f"{backend_url}/api/version")
                if answer.status_code == 200 and answer.json().get("revision") == revision:
                    return
                seen = f"HTTP {answer.status_code}, revision {answer.json().get('revision')!r}"
            except (httpx.HTTPError, ValueError) as exc:
                seen = type(exc).__name__
            time.sleep(0.2)
    raise RolloutFailed(f"{backend_url}/api/version did not show revision {revision[:12]} ({seen})")


def roll_out(
    client: docker.DockerClient,
    target: Target,
    image: str,
    *,
    version: str,
    revision: str,
    digest: str = "",
    environment: Mapping[str, str] | None = None,
    on_line: LineSink | None = None,
    confirm_through: Callable[[str, str], None] | None = confirm,
    timings: Timings | None = None,
) -> Release:
    """Start ``image`` beside the live release, gate it on health, switch the proxy, drain the old one."""
    say = on_line or (lambda line: None)
    timings = timings or Timings()
    for leftover in [r for r in releases(client, target.slug) if never_started(r)]:
        say(f"Removing {leftover.name}: a deploy that was killed made it and never started it")
        containers.remove(leftover.container)
    with timings.phase("proxy"):
        gateway = proxy.ensure(client, target.proxy, target.slug)
        wanted = caddy.render_site(site(target))
        if proxy.read_file(gateway, f"{caddy.SITES_DIR}/{caddy.site_file_name(target.slug)}") != wanted:
            proxy.apply_site(gateway, site(target))  # the first deploy (or a template update): one reload
        live = live_release(client, target.slug)
        colour = COLOURS[1] if live is not None and live.colour == COLOURS[0] else COLOURS[0]

    with timings.phase("health"):
        say(f"Starting {colour} ({version}, {revision[:12]}) beside {live.name if live else 'nothing yet'}")
        name = f"{target.slug}-{colour}-{revision[:12] or 'unknown'}-{uuid.uuid4().hex[:6]}"
        new: containers.Running | None = None
        try:
            new = start_release(
                client, target, image, version=version, revision=revision, digest=digest,
                environment=environment or {}, colour=colour, name=name,
            )  # fmt: skip
            seconds = containers.wait_healthy(new, timeout=target.health_timeout)
            warm(new)
        except BaseException as exc:
            # By name: a signal may land after the engine made the container and before it was returned.
            logs = containers.container_logs(new.container, tail=40) if new is not None else ""
            remove_named(client, name)
            still = f"{live.name} keeps serving" if live else "nothing was serving before"
            if isinstance(exc, OpsError):
                message = f"{exc}; the new release was removed and {still}"
                raise RolloutFailed(message, detail=exc.detail or logs) from None
            raise
    say(f"{new.container.name} is healthy after {seconds:.1f}s")

    with timings.phase("switch"):
        try:
            if confirm_through is not None:
                confirm_through(target.backend_url, revision)  # Caddy has it in rotation
        except BaseException:
            containers.stop(new.container, timeout=new.stop_timeout)
            containers.remove(new.container)
            raise
    say(f"{target.backend_url} answers with {revision[:12]}")

    with timings.phase("drain"):
        drain(client, target.slug, keep=str(new.container.name), on_line=say)
        prune(client, target.slug, keep=target.keep_releases, on_line=say)
    return releases(client, target.slug)[0]


def drain(client: docker.DockerClient, slug: str, *, keep: str, on_line: LineSink) -> None:
    """Stop every running release but ``keep`` (SIGTERM, then its graceful timeout).

    Past the switch, an interrupt (Ctrl-C) does not leave two releases serving: the drain is
    finished first (a second interrupt leaves it), then the interrupt goes on.
    """
    try:
        _stop_others(client, slug, keep, on_line)
    except KeyboardInterrupt:
        on_line(f"Interrupted: {keep} serves; draining the old release first (interrupt again to leave it running)")
        _stop_others(client, slug, keep, on_line)
        raise


def _stop_others(client: docker.DockerClient, slug: str, keep: str, on_line: LineSink) -> None:
    for old in releases(client, slug):
        if old.name != keep and old.running:
            on_line(f"Draining {old.name} (in-flight requests get its graceful timeout)")
            containers.stop(old.container, timeout=containers.stop_timeout_of(old.container))


def prune(client: docker.DockerClient, slug: str, *, keep: int, on_line: LineSink | None = None) -> list[str]:
    """Remove stopped releases beyond the newest ``keep``; the running one is never counted or removed."""
    stopped = [r for r in releases(client, slug) if not r.running]
    removed = []
    for old in stopped[keep:]:
        containers.remove(old.container)
        removed.append(old.name)
        if on_line:
            on_line(f"Removed old release {old.name}")
    return removed


def roll_back(
    client: docker.DockerClient,
    target: Target,
    revision: str = "",
    *,
    on_line: LineSink | None = None,
    confirm_through: Callable[[str, str], None] | None = confirm,
) -> Release:
    """Start a kept release again (the newest stopped one, or the one of ``revision``), gate it on
    health, confirm it through the proxy, then drain the live one. The live one serves throughout."""
    say = on_line or (lambda line: None)
    live = live_release(client, target.slug)
    kept = [r for r in releases(client, target.slug) if not r.running and not never_started(r)]
    if revision:
        kept = [r for r in kept if r.revision.startswith(revision)]
    elif live is not None:  # the previous release is the newest of another revision (a re-deploy keeps one)
        kept = [r for r in kept if r.revision != live.revision]
    if not kept:
        known = ", ".join(sorted({r.revision[:12] for r in releases(client, target.slug)})) or "none"
        wanted = f"of revision {revision}" if revision else "to roll back to"
        raise RolloutFailed(f"no stopped release {wanted} is kept on this host (releases here: {known})")
    back = kept[0]
    if live is not None and back.colour == live.colour:  # both were started as the same colour
        recolour(client, back, target.slug, COLOURS[1] if live.colour == COLOURS[0] else COLOURS[0])
    say(f"Starting {back.name} ({back.version}, {back.revision[:12]}) beside {live.name if live else 'nothing'}")
    back.container.start()
    running = containers.Running(back.container, target.container_port, None, client_is_local(client))
    running.stop_timeout = containers.stop_timeout_of(back.container)
    try:
        containers.wait_healthy(running, timeout=target.health_timeout)
        warm(running)
        if confirm_through is not None:
            confirm_through(target.backend_url, back.revision)
    except BaseException as exc:
        containers.stop(back.container, timeout=running.stop_timeout)
        still = f"{live.name} keeps serving" if live else "nothing serves"
        if isinstance(exc, OpsError):
            raise RolloutFailed(f"{exc}; {back.name} was stopped again and {still}", detail=exc.detail) from None
        raise
    drain(client, target.slug, keep=back.name, on_line=say)
    return next(r for r in releases(client, target.slug) if r.name == back.name)


def remove_releases(client: docker.DockerClient, slug: str) -> None:
    """Remove every release container of ``slug`` and its network (after the proxy left it)."""
    for release in releases(client, slug):
        containers.remove(release.container)
    for network in client.networks.list(names=[proxy.network_name(slug)]):
        network.remove()
