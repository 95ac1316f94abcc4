"""The backend half of a deploy on one Docker host: a new colour beside the live one, a health
gate, the switch, and the old colour drained and kept for rollback.

The switch needs no change to Caddy: the project's site proxies to both colours' network
aliases (``<slug>-blue``, ``<slug>-green``), the live one first, and which one is live is a file
in the proxy (:func:`cnd_toolkit.release.proxy.set_live`). So the new colour starts beside the live one
and gets no request until it has passed its health check and been warmed; then the file names
it (the switch), and the old colour is stopped (SIGTERM: gunicorn finishes its in-flight
requests; a request that finds it gone is retried on the new one). Caddy probes no colour: an
idle colour is not running and is never asked for anything.

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

from cnd_toolkit import hold
from cnd_toolkit.docker import containers
from cnd_toolkit.docker.engine import client_is_local
from cnd_toolkit.docker.images import RELEASE_LABEL
from cnd_toolkit.errors import NeverHealthy, OpsError
from cnd_toolkit.logs import LineSink
from cnd_toolkit.release import caddy, preflight, proxy
from cnd_toolkit.wait import NotReady, TimedOut, poll

APP_LABEL = RELEASE_LABEL
PREFIX = "dev.copier-netlify-docker.release"
COLOURS = ("blue", "green")
# A container of a release: limits and hardening (docker run --read-only --tmpfs /tmp ...).
HARDENING: dict[str, Any] = {**containers.HARDENED, "restart_policy": {"Name": "unless-stopped"}}
WARM_SCRIPT = (
    "import os, sys, urllib.error, urllib.request\n"
    "port = os.environ.get('PORT', '8080')\n"
    "for path in ['/readyz', '/healthz', '/api/version', '/api/greeting'] * 3:\n"
    "    try:\n"
    "        urllib.request.urlopen(f'http://127.0.0.1:{port}{path}', timeout=5).read()\n"
    "    except urllib.error.HTTPError as exc:\n"
    "        sys.exit(f'GET {path} answered {exc.code}: {exc.read(300).decode(errors=\"replace\")}')\n"
    "    except OSError as exc:\n"
    "        sys.exit(f'GET {path} failed: {exc}')\n"
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
    memory_mb: int = 512  # RELEASE_MEMORY_MB
    cpus: float = 1.0  # RELEASE_CPU_PERCENT / 100
    sticky: bool = False  # CANARY_STICKY=cookie: a canary keeps each client on one colour
    request_buffer: int = caddy.DEFAULT_REQUEST_BUFFER  # caddy.request_buffer(the release's APP_MAX_REQUEST_BYTES)


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


def serving_release(client: docker.DockerClient, target: Target, proxy_container: Container | None) -> Release | None:
    """The release every request goes to: the running one of the colour the proxy's live file names
    (the newest, should two have it), else the newest running one. A deploy killed after it
    started a colour, or before it drained the old one, leaves two running; the file says which
    one serves."""
    running = [release for release in releases(client, target.slug) if release.running]
    named = proxy.live_now(proxy_container, site(target)) if proxy_container is not None else []
    if len(named) == 1:
        for release in running:
            if upstream_of(target, release.colour) == named[0]:
                return release
    return running[0] if running else None


def next_colour(client: docker.DockerClient, target: Target, live: Release | None, say: LineSink) -> str:
    """The colour a new release takes beside ``live``: the other one. A release of that colour still
    running (a killed deploy's) is stopped first, so the colour's name means the new release alone."""
    colour = COLOURS[1] if live is not None and live.colour == COLOURS[0] else COLOURS[0]
    for left in releases(client, target.slug):
        if left.running and left.colour == colour and (live is None or left.name != live.name):
            say(f"Stopping {left.name}: a deploy that was killed left it running as {colour}, and {colour} is next")
            containers.stop(left.container, timeout=containers.stop_timeout_of(left.container))
    return colour


def alias(slug: str, colour: str) -> str:
    return f"{slug}-{colour}"


def upstream_of(target: Target, colour: str) -> str:
    return caddy.upstream(alias(target.slug, colour), target.container_port)


def site(target: Target) -> caddy.Site:
    """The project's site block: both colours, whichever runs."""
    upstreams = tuple(upstream_of(target, colour) for colour in COLOURS)
    return caddy.Site(
        target.slug, target.backend_url, upstreams, sticky=target.sticky, request_buffer=target.request_buffer
    )


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
        "mem_limit": f"{target.memory_mb}m",
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


def never_started(release: Release) -> bool:
    """A release container the engine made but never started (a deploy killed in between)."""
    return str(release.container.attrs.get("State", {}).get("StartedAt", "")).startswith("0001-")


def gate(running: containers.Running, timeout: float) -> float:
    """What a release passes before it may take requests: its health check, every worker loaded
    with none killed, a warm-up, and still none killed after it. Its seconds to healthy."""
    seconds = containers.wait_healthy(running, timeout=timeout)
    containers.wait_settled(running, timeout=timeout)
    warm(running)
    containers.wait_settled(running, timeout=timeout)  # nothing was killed as it warmed
    return seconds


def warm(running: containers.Running) -> None:
    """A few requests to the new release's routes from inside it, so its workers are loaded."""
    code, output = running.container.exec_run(["python", "-c", WARM_SCRIPT])
    if code != 0:
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        running.container.reload()
        written = containers.container_logs(running.container, tail=1000)
        if code == 137 or containers.out_of_memory(running.container, written):  # 137: SIGKILL, the OOM killer
            raise NeverHealthy(f"the new release failed while warming up: {containers.OUT_OF_MEMORY}")
        said = " ".join(text.split())[-300:] or f"exit code {code}"
        raise NeverHealthy(f"the new release failed while warming up: {said}")


def confirm(backend_url: str, revision: str, timeout: float = 20) -> None:
    """Ask ``/api/version`` through the proxy until it names ``revision``."""
    with httpx.Client(timeout=3, verify=True) as http:

        def shows_it() -> None:
            try:
                answer = http.get(f"{backend_url}/api/version")
                body = answer.json() if answer.status_code == 200 else None
            except httpx.HTTPError as exc:
                raise NotReady(preflight.connection_problem(exc, backend_url)) from None
            except ValueError:
                raise NotReady(
                    "HTTP 200 with an answer that is not JSON: is BACKEND_URL's host another site's?"
                ) from None
            if isinstance(body, dict) and body.get("revision") == revision:
                return
            raise NotReady(
                f"HTTP {answer.status_code}, revision {body.get('revision')!r}"
                if isinstance(body, dict)
                else f"HTTP {answer.status_code}"
            )

        try:
            poll(shows_it, timeout=timeout, interval=0.2, max_interval=0.2)
        except TimedOut as exc:
            raise RolloutFailed(
                f"{backend_url}/api/version did not show revision {revision[:12]} ({exc.reason})"
            ) from None


def confirm_switch(
    proxy_container: Container,
    target: Target,
    revision: str,
    confirm_through: Callable[[str, str], None] | None,
    say: LineSink,
) -> None:
    """Ask the proxy for ``revision`` through BACKEND_URL, unless the project is in maintenance
    (the proxy answers 503 then: the health gate and the warm-up stand for it)."""
    if confirm_through is None:
        return
    if proxy.in_maintenance(proxy_container, target.slug):
        say(f"Maintenance is on, so {target.backend_url} answers 503: not confirmed through the proxy")
        return
    confirm_through(target.backend_url, revision)
    say(f"{target.backend_url} answers with {revision[:12]}")


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
    before_switch: Callable[[str], None] | None = None,
) -> Release:
    """Start ``image`` beside the live release, gate it on health, switch the proxy, drain the old one.

    ``before_switch`` gets the new release's name once it is healthy, before it takes a request
    (the pre-switch hook); if it raises, the new release is removed and the live one serves on."""
    say = on_line or (lambda line: None)
    timings = timings or Timings()
    with timings.phase("proxy"):
        proxy_container = proxy.ensure(client, target.proxy, target.slug)
        wanted = site(target)
        settle(client, target, proxy_container, say)
        before = proxy.read_site(proxy_container, wanted.slug)
        # A new or changed site (a first deploy, a new BACKEND_URL, a template update) is applied
        # at the switch, once the new release is healthy: until then the live one serves as it did.
        changed = before != proxy.render(proxy_container, wanted)
        live = serving_release(client, target, proxy_container)
        colour = next_colour(client, target, live, say)

    with timings.phase("health"):
        say(f"Starting {colour} ({version}, {revision[:12]}) beside {live.name if live else 'nothing yet'}")
        new, seconds = start_gated(
            client, target, image, colour=colour, live=live, version=version, revision=revision, digest=digest,
            environment=environment, say=say,
        )  # fmt: skip
    say(f"{new.container.name} is healthy after {seconds:.1f}s")

    with timings.phase("switch"):
        try:
            if before_switch is not None:
                before_switch(str(new.container.name))
            hold.reached("rollout.switch")
            say(f"Switching {target.backend_url} to {colour}")
            proxy.set_live(proxy_container, wanted, upstream_of(target, colour))
            if changed:
                verb = "Adding" if before[0] is None else "Updating"
                say(f"{verb} {target.backend_url} in the shared proxy (a reload)")
                proxy.apply_site(proxy_container, wanted)
            confirm_switch(proxy_container, target, revision, confirm_through, say)
        except BaseException as exc:
            if changed:  # first: the old site serves again at once
                proxy.restore_site(proxy_container, wanted.slug, before)
            proxy.set_live(proxy_container, wanted, upstream_of(target, live.colour) if live else None)
            containers.stop(new.container, timeout=new.stop_timeout)
            containers.remove(new.container)
            if isinstance(exc, OpsError):
                still = f"{live.name} keeps serving" if live else "nothing was serving before"
                put_back = " the proxy's site was put back as it was," if changed and before[0] is not None else ""
                message = f"{exc}; the new release was removed,{put_back} and {still}"
                raise RolloutFailed(message, detail=exc.detail) from None
            raise

    with timings.phase("drain"):
        drain(client, target.slug, keep=str(new.container.name), on_line=say)
        prune(client, target.slug, keep=target.keep_releases, on_line=say)
    return releases(client, target.slug)[0]


def settle(client: docker.DockerClient, target: Target, proxy_container: Container, say: LineSink) -> None:
    """The proxy's files as one running release needs them, before a deploy or a rollback changes
    anything. Split files that a canary left while no canary runs (a Ctrl-C in a canary's last
    drain, a rollback in its middle) would send requests by their buckets to colours that may come
    back, so they go. A live file that does not name the one release running (none yet: a site an
    earlier version wrote; or a killed switch) is made to name it."""
    wanted = site(target)
    running = [r for r in releases(client, target.slug) if r.running]
    if len(running) >= 2:
        return
    if proxy.split_now(proxy_container, wanted):
        say("Removing the split files a canary left behind (the live colour serves)")
        proxy.set_split(proxy_container, wanted, None)
    if running and proxy.live_now(proxy_container, wanted) != [upstream_of(target, running[0].colour)]:
        proxy.set_live(proxy_container, wanted, upstream_of(target, running[0].colour))


def start_gated(
    client: docker.DockerClient,
    target: Target,
    image: str,
    *,
    colour: str,
    live: Release | None,
    version: str,
    revision: str,
    digest: str = "",
    environment: Mapping[str, str] | None = None,
    say: LineSink,
) -> tuple[containers.Running, float]:
    """Start a release of ``colour`` beside ``live``, wait for its health check, warm it; the
    container and its seconds to healthy. On any failure or Ctrl-C the container is removed
    (with containers a killed deploy made and never started) and :class:`RolloutFailed` says
    what keeps serving."""
    for leftover in [r for r in releases(client, target.slug) if never_started(r)]:
        say(f"Removing {leftover.name}: a deploy that was killed made it and never started it")
        containers.remove(leftover.container)
    name = f"{target.slug}-{colour}-{revision[:12] or 'unknown'}-{uuid.uuid4().hex[:6]}"
    new: containers.Running | None = None
    try:
        new = start_release(
            client, target, image, version=version, revision=revision, digest=digest,
            environment=environment or {}, colour=colour, name=name,
        )  # fmt: skip
        hold.reached("rollout.health")
        seconds = gate(new, target.health_timeout)
    except BaseException as exc:
        # By name: a signal may land after the engine made the container and before it was returned.
        logs = containers.container_logs(new.container, tail=40) if new is not None else ""
        containers.remove_named(client, name)
        still = f"{live.name} keeps serving" if live else "nothing was serving before"
        if isinstance(exc, OpsError):
            raise RolloutFailed(f"{exc}; the new release was removed and {still}", detail=exc.detail or logs) from None
        raise
    return new, seconds


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
            hold.reached("rollout.drain")
            containers.stop(old.container, timeout=containers.stop_timeout_of(old.container))


def prune(client: docker.DockerClient, slug: str, *, keep: int, on_line: LineSink | None = None) -> list[str]:
    """Keep the newest stopped release of each of the newest ``keep`` revisions other than the
    live one; remove the rest (older copies of a re-deployed revision too). Running releases are
    never counted or removed."""
    everything = releases(client, slug)
    running = {r.revision for r in everything if r.running}
    kept_revisions: list[str] = []
    removed = []
    for old in [r for r in everything if not r.running]:
        wanted = old.revision not in running and old.revision not in kept_revisions and len(kept_revisions) < keep
        if wanted:
            kept_revisions.append(old.revision)
            continue
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
    health, confirm it through the proxy, then drain the live one. The live one serves throughout.

    A release still running beside the live one (a deploy killed after it started the new colour)
    is a candidate too: it is gated, kept running, and the live one drained."""
    say = on_line or (lambda line: None)
    proxy_container = proxy.get(client, target.proxy.name)
    # Back from the newest running release: in a canary's middle, the canary; after a killed deploy,
    # what it started. The live file goes back as it was if the rollback fails.
    live = live_release(client, target.slug)
    live_before = proxy.live_now(proxy_container, site(target)) if proxy_container is not None else []
    kept = [r for r in releases(client, target.slug) if not never_started(r)]
    kept = [r for r in kept if live is None or r.name != live.name]
    if revision:
        kept = [r for r in kept if r.revision.startswith(revision)]
    elif live is not None:  # the previous release is the newest of another revision (a re-deploy keeps one)
        kept = [r for r in kept if r.revision != live.revision]
    if not kept:
        known = ", ".join(sorted({r.revision[:12] for r in releases(client, target.slug)})) or "none"
        wanted = f"of revision {revision}" if revision else "to roll back to"
        raise RolloutFailed(f"no other release {wanted} is kept on this host (releases here: {known})")
    back = kept[0]
    was_running = back.running
    back_colour = back.colour
    if proxy_container is not None and not was_running:
        settle(client, target, proxy_container, say)
    if not was_running:
        if live is not None and back.colour == live.colour:  # both were started as the same colour
            back_colour = COLOURS[1] if live.colour == COLOURS[0] else COLOURS[0]
            recolour(client, back, target.slug, back_colour)
        say(f"Starting {back.name} ({back.version}, {back.revision[:12]}) beside {live.name if live else 'nothing'}")
    else:
        say(f"{back.name} ({back.version}, {back.revision[:12]}) still runs beside {live.name if live else 'nothing'}")
    running = containers.Running(back.container, target.container_port, None, client_is_local(client))
    running.stop_timeout = containers.stop_timeout_of(back.container)
    try:
        if not was_running:  # in the try: a Ctrl-C just as it starts stops it again
            back.container.start()
        hold.reached("rollback.health")
        gate(running, target.health_timeout)
        if proxy_container is not None:
            proxy.set_live(proxy_container, site(target), upstream_of(target, back_colour))
            confirm_switch(proxy_container, target, back.revision, confirm_through, say)
    except BaseException as exc:
        if proxy_container is not None:
            proxy.set_live(proxy_container, site(target), live_before[0] if live_before else None)
        if not was_running:
            containers.stop(back.container, timeout=running.stop_timeout)
        still = f"{live.name} keeps serving" if live else "nothing serves"
        if isinstance(exc, OpsError):
            what = "was left running as it was" if was_running else "was stopped again"
            raise RolloutFailed(f"{exc}; {back.name} {what} and {still}", detail=exc.detail) from None
        raise
    try:
        drain(client, target.slug, keep=back.name, on_line=say)
    except KeyboardInterrupt:
        raise SwitchedThenInterrupted(back) from None
    finally:
        if proxy_container is not None:  # a rollback in the middle of a canary: its split files go with it
            proxy.set_split(proxy_container, site(target), None)
    return next(r for r in releases(client, target.slug) if r.name == back.name)


class SwitchedThenInterrupted(KeyboardInterrupt):
    """Ctrl-C after a rollback's switch: ``release`` serves (the drain was finished first)."""

    def __init__(self, release: Release) -> None:
        super().__init__(release.name)
        self.release = release


def remove_releases(client: docker.DockerClient, slug: str) -> None:
    """Remove every release container of ``slug`` and its network (after the proxy left it)."""
    for release in releases(client, slug):
        containers.remove(release.container)
    for network in client.networks.list(names=[proxy.network_name(slug)]):
        network.remove()
