"""Where the API's releases run, chosen once from DEPLOY_TARGET.

Two backends: :class:`HostBackend`, one Docker host with blue/green releases behind the shared
Caddy (``rollout``, ``canary_rollout``), and :class:`SwarmBackend`, a Docker Swarm service with
rolling updates that roll themselves back (``swarm``, ``swarm_canary``). Each owns its roll out,
roll back, live release, status, canary, scale, removal and proxy. The pipeline (``deploy``) is
written once against :class:`Backend`: nothing outside :func:`choose` asks which one it is.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

import docker
from docker.models.containers import Container

from cnd_toolkit import project as proj
from cnd_toolkit import smoke
from cnd_toolkit.docker import containers, engine, images
from cnd_toolkit.errors import OpsError
from cnd_toolkit.logs import LineSink, Progress
from cnd_toolkit.monitor import Watched
from cnd_toolkit.release import canary_rollout, lock, proxy, records, rollout, swarm, swarm_canary
from cnd_toolkit.release import preflight as host_checks
from cnd_toolkit.release import traffic as traffic_mod

Live = rollout.Release | swarm.SwarmRelease  # what serves: a release container, or a swarm service
CanaryOutcome = canary_rollout.Outcome | swarm_canary.Outcome


@dataclass(frozen=True)
class CanaryNow:
    """A canary in progress, on one host or a swarm, as `inv canary status` shows it."""

    canary: str  # the canary release's name
    canary_revision: str
    live: str
    live_revision: str
    share: float  # percent of the API's requests
    host: canary_rollout.State | None = None
    swarm: swarm_canary.State | None = None

    def describe(self) -> str:
        if self.swarm is not None:
            return (
                f"Canary {self.canary_revision[:12]} runs {self.swarm.canary_tasks} of {self.swarm.tasks} tasks of "
                f"{self.canary} ({self.share:.0f}% of the API's requests); {self.live_revision[:12]} the rest"
            )
        return (
            f"Canary {self.canary} ({self.canary_revision[:12]}) takes {self.share:.0f}% of the API's requests; "
            f"{self.live} ({self.live_revision[:12]}) the rest"
        )


@dataclass(frozen=True)
class Health:
    """What `inv status` says of the live release: its health, and on a swarm each task and the last update."""

    health: str
    tasks: list[swarm.Task] = dataclasses.field(default_factory=list)
    update: str = ""


@dataclass(frozen=True)
class Release:
    """What a roll out starts: the image, how it is named where it runs, and the facts it carries."""

    image: str  # the local tag the build made
    reference: str  # what the release runs: the pushed digest, or the image id when not pushed
    version: str
    revision: str
    environment: dict[str, str]
    replicas: int | None = None  # on a swarm, REPLICAS when set; None keeps the current count
    # Called with the new release's name before it takes a request (the pre-switch hook); what it
    # raises stops the roll out, the live release serving on. Every backend calls it.
    before_switch: Callable[[str], None] | None = dataclasses.field(default=None, compare=False, repr=False)


class Backend(ABC):
    """The releases of one project on one target; ``login`` passes the registry credentials on
    (a swarm's nodes pull the image themselves)."""

    kind: str = ""

    def __init__(self, client: docker.DockerClient, target: rollout.Target, login: Callable[[], None]) -> None:
        self.client = client
        self.target = target
        self.login = login

    @property
    def slug(self) -> str:
        return self.target.slug

    # ------------------------------------------------------------------ the engine's, on either target

    def is_local(self) -> bool:
        """Whether the engine runs on this machine (a smoke test reaches its container directly)."""
        return engine.client_is_local(self.client)

    def registry_problems(self, repository: str, username: str, password: str) -> list[str]:
        """The registry of ``repository`` answers the engine and takes the login, or what is wrong."""
        return host_checks.registry(self.client, repository, username, password)

    def hold_lock(self, *, revision: str = "", action: str = "deploy") -> AbstractContextManager[lock.Holder]:
        """The project's deploy lock on this engine, held for the block."""
        return lock.held(self.client, self.slug, revision=revision, action=action)

    def lock_holder(self) -> lock.Holder | None:
        return lock.holder(self.client, self.slug)

    def history(self) -> list[records.Record]:
        """The project's release records, newest first (kept in the proxy)."""
        return records.load(self.proxy(), self.slug)

    def record(self, record: records.Record) -> None:
        found = self.proxy()
        if found is not None:
            records.add(found, self.slug, record)

    def in_maintenance(self) -> bool:
        return proxy.in_maintenance(self.proxy(), self.slug)

    def sites(self) -> dict[str, str]:
        """The site files of the shared proxy, by name (none before the first deploy)."""
        found = self.proxy()
        return proxy.read_sites(found) if found is not None else {}

    def build(
        self,
        project: proj.Project,
        *,
        tag: str,
        base_image: str,
        revision: str,
        on_line: LineSink | None,
        say: LineSink,
    ) -> images.BuildResult:
        return images.build_project(
            self.client, project, tag=tag, base_image=base_image, revision=revision, on_line=on_line, say=say
        )

    def smoke(
        self,
        project: proj.Project,
        image: str,
        *,
        environment: Mapping[str, str],
        on_line: LineSink | None,
        docker_host: str,
    ) -> None:
        smoke.smoke_image(
            project, self.client, image, environment=environment, on_line=on_line, docker_host=docker_host
        )

    def push(
        self,
        image: str,
        repository: str,
        tag: str,
        *,
        username: str,
        password: str,
        on_line: LineSink | None,
        on_progress: Progress | None,
    ) -> str:
        return images.push(
            self.client, image, repository, tag, username=username, password=password, on_line=on_line,
            on_progress=on_progress,
        )  # fmt: skip

    # ------------------------------------------------------------------ the target's own

    @abstractmethod
    def proxy(self) -> Container | None:
        """The shared proxy's container (on a swarm, its task's), where sites and records are kept."""

    @abstractmethod
    def live(self) -> Live | None:
        """What serves the project's API now."""

    @abstractmethod
    def check_host(self, say: LineSink) -> list[str]:
        """What a deploy needs of the engine, each problem with its fix: its mode, and the shared
        proxy matching this project's settings (or, for a first one, its image and its ports)."""

    def check_canary(self, replicas: int | None) -> None:
        """Refuse a canary this target cannot run, before anything is built."""
        del replicas

    @abstractmethod
    def roll_out(self, release: Release, *, say: LineSink, timings: rollout.Timings) -> Live:
        """Start ``release`` and make it the live one, gated on its health; the old one drained."""

    @abstractmethod
    def canary(
        self, release: Release, plan: canary_rollout.Plan, *, say: LineSink, timings: rollout.Timings
    ) -> CanaryOutcome:
        """Start ``release`` beside the live one and give it a growing share, gated on ``plan``."""

    @abstractmethod
    def roll_back(
        self, history: list[records.Record], revision: str, environment: dict[str, str], *, say: LineSink
    ) -> Live:
        """Back to the release of ``revision`` (else the previous one)."""

    @abstractmethod
    def canary_now(self) -> CanaryNow | None:
        """The canary in progress, if one is."""

    @abstractmethod
    def canary_figures(self, found: CanaryNow, plan: canary_rollout.Plan, window: float) -> str:
        """The gate's comparison over the last ``window`` seconds."""

    @abstractmethod
    def promote(self, *, say: LineSink) -> Live:
        """The canary takes all the requests; the release it shared them with is drained."""

    @abstractmethod
    def abort(self, *, say: LineSink) -> Live:
        """The canary is removed; the release it shared the requests with takes them all again."""

    def scale(self, count: int, timeout: float, *, say: LineSink) -> swarm.SwarmRelease:
        del count, timeout, say
        raise OpsError(
            "inv scale is for DEPLOY_TARGET=swarm: on one host the app runs as one release container "
            "(raise WEB_CONCURRENCY for more workers)"
        )

    @abstractmethod
    def health(self, live: Live | None) -> Health:
        """The live release's health, as `inv status` shows it."""

    @abstractmethod
    def idle_notes(self, history: list[records.Record]) -> list[str]:
        """When nothing serves: why, as far as the engine tells."""

    @abstractmethod
    def watched(self) -> Watched:
        """What `inv monitor` watches of the project here."""

    @abstractmethod
    def log_containers(self) -> list[Container]:
        """The live and the previous release's containers on this engine, for `inv logs`."""

    @abstractmethod
    def serving_containers(self) -> tuple[list[Container], str]:
        """The running containers of the live release on this engine, and a note of which they are."""

    def interrupted(self, live: Live) -> str:
        """What serves after a deploy was interrupted, in a few words ("" to say the usual)."""
        del live
        return ""

    @abstractmethod
    def release_names(self) -> list[str]:
        """The project's releases here, as `inv remove --dry-run` lists them."""

    @abstractmethod
    def remove_releases(self, *, say: LineSink) -> list[str]:
        """Stop and remove the project's releases (the live one drained first); what was removed."""

    def check_remove(self, with_proxy: bool) -> None:
        """Refuse what `inv remove` cannot do on this target."""
        del with_proxy

    def after_remove(self, proxy_container: Container | None) -> bool:
        """Take what is left of the project once its releases are gone; whether its network went."""
        del proxy_container
        return False


class HostBackend(Backend):
    """One Docker host: blue/green release containers behind the shared Caddy."""

    kind = "host"

    def proxy(self) -> Container | None:
        return proxy.get(self.client, self.target.proxy.name)

    def live(self) -> Live | None:
        return rollout.live_release(self.client, self.slug)

    def check_host(self, say: LineSink) -> list[str]:
        wanted = self.target.proxy
        swarm.refuse_swarm_proxy(self.client, wanted)
        existing = proxy.get(self.client, wanted.name)
        if existing is not None:
            proxy.check_matches(existing, wanted)
            return []
        return host_checks.proxy_image(self.client, wanted.image, say) + host_checks.proxy_ports(self.client, wanted)

    def roll_out(self, release: Release, *, say: LineSink, timings: rollout.Timings) -> Live:
        return rollout.roll_out(
            self.client, self.target, release.image, version=release.version, revision=release.revision,
            digest=release.reference, environment=release.environment, on_line=say, timings=timings,
            before_switch=release.before_switch,
        )  # fmt: skip

    def canary(
        self, release: Release, plan: canary_rollout.Plan, *, say: LineSink, timings: rollout.Timings
    ) -> CanaryOutcome:
        with timings.phase("canary"):
            return canary_rollout.roll_out(
                self.client, self.target, release.image, plan, version=release.version, revision=release.revision,
                digest=release.reference, environment=release.environment, on_line=say,
                before_switch=release.before_switch,
            )  # fmt: skip

    def roll_back(
        self, history: list[records.Record], revision: str, environment: dict[str, str], *, say: LineSink
    ) -> Live:
        del environment  # a kept release starts with the environment it was deployed with
        if not revision:  # the previous release: the newest recorded one of another revision still kept here
            live = rollout.live_release(self.client, self.slug)
            kept = {r.revision for r in rollout.releases(self.client, self.slug) if live is None or r.name != live.name}
            others = (
                r.revision for r in history if r.revision in kept and (live is None or r.revision != live.revision)
            )
            revision = next(others, "")
        return rollout.roll_back(self.client, self.target, revision, on_line=say)

    def canary_now(self) -> CanaryNow | None:
        here = canary_rollout.state(self.client, self.target)
        if here is None:
            return None
        return CanaryNow(
            here.canary.name, here.canary.revision, here.live.name, here.live.revision, here.share, host=here
        )  # fmt: skip

    def canary_figures(self, found: CanaryNow, plan: canary_rollout.Plan, window: float) -> str:
        host = found.host
        if host is None:
            raise OpsError("the canary in progress is not a single host's")
        verdict = canary_rollout.observe(
            lambda: traffic_mod.scrape(host.live.container),
            lambda: traffic_mod.scrape(host.canary.container),
            dataclasses.replace(plan, interval=window, extend=0),
        )
        return verdict.describe()

    def promote(self, *, say: LineSink) -> Live:
        return canary_rollout.promote(self.client, self.target, on_line=say)

    def abort(self, *, say: LineSink) -> Live:
        return canary_rollout.abort(self.client, self.target, on_line=say)

    def health(self, live: Live | None) -> Health:
        if isinstance(live, rollout.Release):
            return Health(containers.health(live.container)[0])
        return Health("not deployed")

    def idle_notes(self, history: list[records.Record]) -> list[str]:
        kept = rollout.releases(self.client, self.slug)
        paused = [r for r in kept if r.container.status == "paused"]
        if paused:
            return [
                f"{paused[0].name} is paused (docker pause), so it answers nothing: `docker unpause {paused[0].name}`"
            ]
        swarm_on = (self.client.info().get("Swarm") or {}).get("ControlAvailable")
        if swarm_on and swarm.current(self.client, self.slug) is not None:
            return [f"a swarm service of {self.slug} runs on this engine: DEPLOY_TARGET=swarm's"]
        if not history:
            return []
        last = history[0].revision
        stopped = next((r for r in kept if r.revision == last), None)
        if stopped is not None:
            return [
                f"the last release {last[:12]} is stopped ({stopped.name}, {stopped.container.status}), "
                f"stopped outside these tasks: `inv deploy` (or `inv rollback`) starts it again"
            ]
        return [_removed_outside(last)]

    def watched(self) -> Watched:
        return Watched.host(self.slug)

    def log_containers(self) -> list[Container]:
        return [release.container for release in rollout.releases(self.client, self.slug)[:2]]

    def serving_containers(self) -> tuple[list[Container], str]:
        live = rollout.live_release(self.client, self.slug)
        return ([live.container] if live is not None else []), ""

    def release_names(self) -> list[str]:
        return [release.name for release in rollout.releases(self.client, self.slug)]

    def remove_releases(self, *, say: LineSink) -> list[str]:
        removed = []
        for release in rollout.releases(self.client, self.slug):
            if release.running:
                say(f"Draining {release.name}")
                containers.stop(release.container, timeout=containers.stop_timeout_of(release.container))
            containers.remove(release.container)
            removed.append(release.name)
        return removed

    def after_remove(self, proxy_container: Container | None) -> bool:
        proxy.leave_network(self.client, proxy_container, self.slug)
        return True


class SwarmBackend(Backend):
    """A Docker Swarm service with rolling updates, behind the shared Caddy as a swarm service."""

    kind = "swarm"

    def __init__(self, client: docker.DockerClient, target: rollout.Target, login: Callable[[], None]) -> None:
        super().__init__(client, target, login)
        self.node = swarm.manager_node(client)  # a clear error when the engine is no swarm's manager

    def proxy(self) -> Container | None:
        return swarm.proxy_container(self.client, self.target.proxy.name)

    def live(self) -> Live | None:
        return swarm.current(self.client, self.slug)

    def check_host(self, say: LineSink) -> list[str]:
        wanted = self.target.proxy
        service = swarm.proxy_service(self.client, wanted.name)
        if service is not None:
            swarm.check_proxy_matches(service, wanted)
            return []
        swarm.refuse_single_host_proxy(self.client, wanted)
        return host_checks.proxy_image(self.client, wanted.image, say)

    def check_canary(self, replicas: int | None) -> None:
        running = swarm.current(self.client, self.slug)
        if running is not None:
            swarm_canary.check_tasks(running.name, replicas or running.desired or 2)

    def roll_out(self, release: Release, *, say: LineSink, timings: rollout.Timings) -> Live:
        self.login()
        return swarm.roll_out(
            self.client, self.target, release.image, reference=release.reference, version=release.version,
            revision=release.revision, environment=release.environment, replicas=release.replicas, node=self.node,
            on_line=say, timings=timings, before_switch=release.before_switch,
        )  # fmt: skip

    def canary(
        self, release: Release, plan: canary_rollout.Plan, *, say: LineSink, timings: rollout.Timings
    ) -> CanaryOutcome:
        self.login()
        return swarm_canary.roll_out(
            self.client, self.target, release.image, plan, reference=release.reference, version=release.version,
            revision=release.revision, environment=release.environment, replicas=release.replicas, node=self.node,
            on_line=say, timings=timings, before_switch=release.before_switch,
        )  # fmt: skip

    def roll_back(
        self, history: list[records.Record], revision: str, environment: dict[str, str], *, say: LineSink
    ) -> Live:
        """Roll the service to a recorded release's image (by digest, from the registry), with the same
        rolling update and automatic rollback as a deploy; the task count stays as it is.

        Not Swarm's own `docker service rollback`: its "previous spec" is whatever changed last, which
        after `inv scale` is the old task count, not the previous release."""
        live = swarm.current(self.client, self.slug)
        if live is None:
            raise OpsError(f"{self.slug} does not run on this swarm: nothing to roll back (run `inv deploy`)")
        pushed = [r for r in history if "@sha256:" in r.image]
        if revision:
            pick = next((r for r in pushed if r.revision.startswith(revision)), None)
        else:  # the previous release: the newest recorded one of another revision
            pick = next((r for r in pushed if r.revision != live.revision), None)
        if pick is None:
            known = ", ".join(dict.fromkeys(r.revision[:12] for r in pushed)) or "none"
            wanted = f"of revision {revision}" if revision else "to roll back to"
            raise rollout.RolloutFailed(f"no other release {wanted} is recorded for this swarm (recorded: {known})")
        say(f"Rolling back to {pick.revision[:12]} ({pick.version}): {pick.image}")
        self.login()
        return swarm.roll_out(
            self.client, self.target, pick.image, reference=pick.image, version=pick.version, revision=pick.revision,
            environment=environment, on_line=say,
        )  # fmt: skip

    def canary_now(self) -> CanaryNow | None:
        found = swarm_canary.state(self.client, self.slug)
        if found is None:
            return None
        name = str(found.service.name)
        return CanaryNow(name, found.canary_revision, name, found.live_revision, found.share, swarm=found)

    def canary_figures(self, found: CanaryNow, plan: canary_rollout.Plan, window: float) -> str:
        if found.swarm is None:
            raise OpsError("the canary in progress is not a swarm's")
        return swarm_canary.figures(self.client, found.swarm, plan, window)

    def promote(self, *, say: LineSink) -> Live:
        return swarm_canary.promote(self.client, self.target, on_line=say)

    def abort(self, *, say: LineSink) -> Live:
        return swarm_canary.abort(self.client, self.target, on_line=say)

    def scale(self, count: int, timeout: float, *, say: LineSink) -> swarm.SwarmRelease:
        return swarm.scale(self.client, self.slug, count, timeout, say)

    def health(self, live: Live | None) -> Health:
        if isinstance(live, swarm.SwarmRelease):
            return Health(
                f"{live.running} of {live.desired} tasks up",
                swarm.tasks(self.client, self.slug),
                swarm.update_state(live),
            )
        return Health("not deployed")

    def idle_notes(self, history: list[records.Record]) -> list[str]:
        other = rollout.live_release(self.client, self.slug)
        if other is not None:
            return [f"a single-host release of {self.slug} runs on this engine ({other.name}): DEPLOY_TARGET=host's"]
        return [_removed_outside(history[0].revision)] if history else []

    def watched(self) -> Watched:
        return Watched.swarm(self.slug)

    def log_containers(self) -> list[Container]:
        found = self.client.containers.list(all=True, filters={"label": f"{swarm.SERVICE_LABEL}={self.slug}"})
        created, deploy = f"{rollout.PREFIX}.created", f"{rollout.PREFIX}.deploy"
        deploys = sorted({(c.labels.get(created, ""), c.labels.get(deploy, "")) for c in found}, reverse=True)[:2]
        wanted = {name for _, name in deploys}
        return [c for c in found if c.labels.get(deploy, "") in wanted]

    def serving_containers(self) -> tuple[list[Container], str]:
        label = f"{swarm.SERVICE_LABEL}={self.slug}"
        running = self.client.containers.list(filters={"label": label, "status": "running"})
        return running, f" (the {len(running)} task(s) on this node)"

    def interrupted(self, live: Live) -> str:
        if isinstance(live, swarm.SwarmRelease) and swarm.update_state(live).startswith("rollback"):
            return f"Swarm is rolling {live.name} back to {live.revision[:12]} (`inv status` shows when it is done)"
        return ""

    def release_names(self) -> list[str]:
        service = swarm.current(self.client, self.slug)
        return [f"service {service.name} ({service.desired} tasks)"] if service else []

    def remove_releases(self, *, say: LineSink) -> list[str]:
        service = swarm.current(self.client, self.slug)
        if service is None:
            return []
        say(f"Removing the service {service.name} (its tasks drain)")
        swarm.remove_service(self.client, self.slug)
        return [f"service {service.name} ({service.desired} tasks)"]

    def check_remove(self, with_proxy: bool) -> None:
        if with_proxy:
            raise OpsError(
                "--proxy takes a single host's proxy container; on a swarm the proxy is the service "
                f"{self.target.proxy.name}: `docker service rm {self.target.proxy.name}` on a manager, once no "
                "project uses it"
            )


BACKENDS: dict[str, type[Backend]] = {"host": HostBackend, "swarm": SwarmBackend}


def choose(kind: str, client: docker.DockerClient, target: rollout.Target, login: Callable[[], None]) -> Backend:
    """The backend of DEPLOY_TARGET ``kind``: the one place that tells the targets apart."""
    try:
        return BACKENDS[kind](client, target, login)
    except KeyError:
        raise OpsError(f"DEPLOY_TARGET={kind!r} is not one of {', '.join(BACKENDS)}") from None


def _removed_outside(revision: str) -> str:
    return (
        f"the records name {revision[:12]} as the last release, but it does not run: it was "
        "removed outside these tasks; `inv deploy` (or `inv rollback`) starts it again"
    )
