"""The backend half of a deploy on Docker Swarm (``DEPLOY_TARGET=swarm``): the app as a service
with replicas and health-gated rolling updates that roll themselves back, behind the same Caddy.

``DOCKER_HOST`` names a manager of the swarm. Everything goes through its Docker API.

- **The app** is a service named after the project, with ``REPLICAS`` tasks spread over the
  nodes, the image pinned by digest (every node runs the same bytes), the image's health check
  run every second, and the hardening of the single-host containers: read-only root with an
  in-memory ``/tmp``, every capability dropped, the image's non-root user, memory and CPU
  limits. Its endpoint is ``dnsrr``: ``tasks.<service>`` resolves to the tasks Swarm counts as
  up, which is what Caddy follows.
- **Updates** are rolling, one task at a time, start-first (a new task is healthy before an old
  one stops), each watched for :data:`MONITOR` seconds. A task that fails or never turns
  healthy makes Swarm roll the whole update back by itself (``failure_action: rollback``), and
  the deploy fails saying so. Ctrl-C during an update asks Swarm to roll it back.
- **Caddy** is a service too, on an attachable overlay network that every project's service
  joins (:func:`edge_network`), so adding a project never changes Caddy's service (a change
  would restart it: its ports are published in host mode, since the ingress mesh needs IPVS,
  and two tasks cannot share them). Its main Caddyfile is a Docker config; the projects' site
  files, maintenance files and release records are on its configuration volume, and its
  certificates on its data volume, as on a single host, so :mod:`cnd_toolkit.release.proxy` writes and
  reloads them through its task's container. It is pinned to the manager ``DOCKER_HOST``
  names: that is the node the DNS of each ``BACKEND_URL`` points at, and the one whose API
  reaches its container.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.services import Service
from docker.types import (
    ConfigReference,
    EndpointSpec,
    Healthcheck,
    Mount,
    NetworkAttachmentConfig,
    PlacementPreference,
    Resources,
    RestartPolicy,
    RollbackConfig,
    ServiceMode,
    UpdateConfig,
)

from cnd_toolkit import hold, logs
from cnd_toolkit.docker import containers
from cnd_toolkit.errors import OpsError
from cnd_toolkit.logs import LineSink
from cnd_toolkit.release import caddy, proxy, rollout
from cnd_toolkit.wait import NotReady, TimedOut, poll

SECOND = 1_000_000_000  # the API's durations are in nanoseconds
MONITOR = 5  # seconds Swarm watches each updated task before it counts it (and the update) good
SERVICE_LABEL = "dev.copier-netlify-docker.service"
ENDED = {"complete", "shutdown", "failed", "rejected", "orphaned", "remove"}


@dataclass(frozen=True)
class Update:
    """An update of the project's service that Swarm has been asked to make."""

    service: Service
    before: str  # the StartedAt of the service's previous update status: this one's differs
    live: SwarmRelease  # the release being replaced
    deploy_id: str  # the new release's deploy label
    count: int  # tasks


Watch = Callable[[Update], bool]


class SwarmError(OpsError):
    """The engine is not a swarm manager, or Swarm could not do what was asked; nothing changed."""


@dataclass(frozen=True)
class SwarmRelease:
    """The project's service as it runs now, read back from its labels."""

    service: Service
    version: str
    revision: str
    image: str
    digest: str
    created: str
    desired: int
    running: int

    @property
    def name(self) -> str:
        return str(self.service.name)


@dataclass(frozen=True)
class Task:
    """One task of a service, for `inv status`."""

    slot: int
    node: str
    state: str
    health: str
    revision: str
    since: str
    error: str


# --- the swarm itself -------------------------------------------------------------------------


def manager_node(client: docker.DockerClient) -> str:
    """The node id of the manager ``client`` talks to; :class:`SwarmError` if it is not one."""
    swarm = client.info().get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active":
        raise SwarmError(
            "this Docker engine is not in swarm mode: run `inv swarm-init` to make it a one-node swarm, "
            "or point DOCKER_HOST at a manager of your swarm (DEPLOY_TARGET=swarm)"
        )
    if not swarm.get("ControlAvailable"):
        raise SwarmError(
            "this Docker engine is a swarm worker, not a manager: point DOCKER_HOST at a manager "
            "(`docker node ls` on a manager lists them)"
        )
    return str(swarm["NodeID"])


@dataclass(frozen=True)
class Initialised:
    created: bool  # False: the engine was already a manager
    node: str
    nodes: int
    advertise: str


def init(client: docker.DockerClient, advertise_addr: str = "") -> Initialised:
    """Make the engine a one-node swarm (its manager), unless it is in one already."""
    swarm = client.info().get("Swarm") or {}
    state = swarm.get("LocalNodeState")
    if state == "active":
        node = manager_node(client)
        nodes = len(client.nodes.list())
        return Initialised(False, node, nodes, str(swarm.get("NodeAddr", "")))
    if state not in {"inactive", None}:
        raise SwarmError(f"this engine's swarm state is {state!r}; finish or leave that first (`docker swarm leave`)")
    address = advertise_addr or "127.0.0.1"
    try:
        client.swarm.init(advertise_addr=address)
    except docker.errors.APIError as exc:
        raise SwarmError(f"docker swarm init failed: {logs.clean_line(str(exc.explanation or exc))}") from None
    return Initialised(True, manager_node(client), 1, address)


# --- the shared proxy as a service ------------------------------------------------------------


def edge_network(settings: proxy.ProxySettings) -> str:
    """The overlay network the proxy and every project's service share (attachable: a plain
    container can join it to reach the apps, e.g. to debug)."""
    return f"{settings.name}-edge"


def _find_service(client: docker.DockerClient, name: str) -> Service | None:
    for service in client.services.list(filters={"name": name}):
        if service.name == name:
            return service
    return None


def proxy_service(client: docker.DockerClient, name: str) -> Service | None:
    return _find_service(client, name)


def task_container(client: docker.DockerClient, service: Service) -> Container | None:
    """The container of the service's running task on the node ``client`` talks to, or None."""
    for task in _tasks(service, {"desired-state": "running"}):
        if task.get("Status", {}).get("State") != "running":
            continue
        container_id = task["Status"].get("ContainerStatus", {}).get("ContainerID")
        if not container_id:
            continue
        with contextlib.suppress(docker.errors.NotFound):
            return client.containers.get(container_id)
    return None


def proxy_container(client: docker.DockerClient, name: str) -> Container | None:
    """The swarm proxy's running container, where the site files and records are kept."""
    service = proxy_service(client, name)
    return task_container(client, service) if service is not None else None


def check_proxy_matches(service: Service, settings: proxy.ProxySettings) -> None:
    """Like :func:`cnd_toolkit.release.proxy.check_matches`, for the proxy service of a swarm."""
    labels = service.attrs.get("Spec", {}).get("Labels") or {}
    if caddy.PROXY_LABEL not in labels:
        raise proxy.ProxyError(
            f"PROXY_NAME={settings.name} names a service on this swarm that is not a proxy these tasks made; "
            "set PROXY_NAME to another name"
        )
    ports = {
        f"{port['TargetPort']}/tcp": int(port.get("PublishedPort") or 0)
        for port in service.attrs.get("Spec", {}).get("EndpointSpec", {}).get("Ports") or []
    }
    wanted = {"80/tcp": settings.http_port, "443/tcp": settings.https_port}
    names = {"80/tcp": "PROXY_HTTP_PORT", "443/tcp": "PROXY_HTTPS_PORT"}
    wrong = [f"{names[p]}={want} (it publishes {ports.get(p)})" for p, want in wanted.items() if ports.get(p) != want]
    if wrong:
        raise proxy.ProxyError(
            f"this swarm's shared proxy {settings.name} was created by an earlier deploy with other ports than "
            f"this project's {', '.join(wrong)}: set them to what the proxy publishes, as every project must"
        )


def refuse_single_host_proxy(client: docker.DockerClient, settings: proxy.ProxySettings) -> None:
    """A single-host proxy container of the same name holds the ports: one target per Docker host."""
    found = proxy.get(client, settings.name)
    if found is None or "com.docker.swarm.service.id" in (found.labels or {}):
        return
    sites = sorted(name.removesuffix(".caddy") for name in proxy.read_sites(found))
    left = f" (projects still on it: {', '.join(sites)})" if sites else " (no project is on it any more)"
    raise SwarmError(
        f"this Docker host runs the single-host proxy container {settings.name}{left}, and a host serves one "
        "deploy target. Deploy with DEPLOY_TARGET=host, or move the host to Swarm: remove each project from it "
        f"(`inv remove --yes` with DEPLOY_TARGET=host), then the proxy (`docker rm -f {settings.name} && "
        f"docker network rm 0-{settings.name}`; its volumes {settings.volumes[0]} and {settings.volumes[1]} keep its "
        "certificates and release records until you remove them). Or give the swarm's proxy another PROXY_NAME "
        "and other ports"
    )


def refuse_swarm_proxy(client: docker.DockerClient, settings: proxy.ProxySettings) -> None:
    """The other way round: a swarm proxy service of the same name holds the ports."""
    if not (client.info().get("Swarm") or {}).get("ControlAvailable"):
        return
    if proxy_service(client, settings.name) is None:
        return
    raise SwarmError(
        f"this Docker host runs the swarm proxy service {settings.name}, and a host serves one deploy target. "
        "Deploy with DEPLOY_TARGET=swarm, or move the host back: remove each project from the swarm "
        f"(`inv remove --yes` with DEPLOY_TARGET=swarm), then the proxy (`docker service rm {settings.name}`). "
        "Or give the single-host proxy another PROXY_NAME and other ports"
    )


def ensure_proxy(client: docker.DockerClient, settings: proxy.ProxySettings, node: str) -> Container:
    """The running proxy service's container, the service created on first use; the edge network."""
    _ensure_network(client, edge_network(settings), {caddy.PROXY_LABEL: "1"})
    service = proxy_service(client, settings.name)
    if service is None:
        refuse_single_host_proxy(client, settings)
        service = _create_proxy(client, settings, node)
    else:
        check_proxy_matches(service, settings)
        elsewhere = [
            t.get("NodeID", "")
            for t in _tasks(service, {"desired-state": "running"})
            if t.get("NodeID") and t.get("NodeID") != node
        ]
        if elsewhere:
            raise proxy.ProxyError(
                f"this swarm's proxy {settings.name} runs on the node {_hostname(client, elsewhere[0])}, not on the "
                "manager DOCKER_HOST names: point DOCKER_HOST at that node (its sites, records and lock are there)"
            )
    return _wait_proxy(client, service)


def _hostname(client: docker.DockerClient, node_id: str) -> str:
    try:
        return str(client.nodes.get(node_id).attrs.get("Description", {}).get("Hostname") or node_id[:12])
    except docker.errors.APIError:
        return node_id[:12]


def _ensure_network(client: docker.DockerClient, name: str, labels: Mapping[str, str]) -> None:
    if not [n for n in client.networks.list(names=[name]) if n.name == name]:
        client.networks.create(name, driver="overlay", attachable=True, labels=dict(labels))


def _create_proxy(client: docker.DockerClient, settings: proxy.ProxySettings, node: str) -> Service:
    digest = hashlib.sha256(caddy.MAIN.encode()).hexdigest()[:12]
    config_name = f"{settings.name}-caddyfile-{digest}"  # configs are immutable: a new text, a new name
    found = [c for c in client.configs.list(filters={"name": config_name}) if c.name == config_name]
    config = found[0] if found else client.configs.create(
        name=config_name, data=caddy.MAIN.encode(), labels={caddy.PROXY_LABEL: "1"}
    )  # fmt: skip
    config_volume, data_volume = settings.volumes
    for volume in settings.volumes:
        with contextlib.suppress(docker.errors.APIError):
            client.volumes.create(volume, labels={caddy.PROXY_LABEL: "1"})
    # The SDK takes {published: (target, protocol, mode)}; its stubs know only the short forms.
    ports: Any = {settings.http_port: (80, "tcp", "host"), settings.https_port: (443, "tcp", "host")}
    try:
        made: Service = client.services.create(  # type: ignore[no-untyped-call]
            settings.image,
            command=["caddy", "run", "--config", f"{caddy.CONFIG_DIR}/Caddyfile", "--adapter", "caddyfile"],
            name=settings.name,
            labels={caddy.PROXY_LABEL: "1"},
            container_labels={caddy.PROXY_LABEL: "1"},
            env=["XDG_DATA_HOME=/data", "XDG_CONFIG_HOME=/data/config"],
            networks=[edge_network(settings)],
            # Host mode: the ingress routing mesh needs IPVS, and a proxy sees clients' addresses.
            endpoint_spec=EndpointSpec(ports=ports),
            mounts=[Mount(caddy.CONFIG_DIR, config_volume), Mount("/data", data_volume)],
            configs=[ConfigReference(str(config.id), config_name, filename=f"{caddy.CONFIG_DIR}/Caddyfile")],
            constraints=[f"node.id=={node}"],
            restart_policy=RestartPolicy(condition="any", delay=SECOND),
            mode=ServiceMode("replicated", 1),
        )
        return made
    except docker.errors.APIError as exc:
        reason = logs.clean_line(str(exc.explanation or exc))
        raise proxy.ProxyError(f"could not create the proxy service: {reason}") from None


def _wait_proxy(client: docker.DockerClient, service: Service, timeout: float = 60) -> Container:
    errors: list[str] = []

    def probe() -> Container:
        found = task_container(client, service)
        if found is not None and found.exec_run(["caddy", "version"])[0] == 0:
            if proxy.read_file(found, f"{caddy.SITES_DIR}/.keep") is None:
                proxy.put_file(found, f"{caddy.SITES_DIR}/.keep", "")
            return found
        error = _why(client, _ended_badly(_tasks(service)))[0]
        if "port" in error and ("in use" in error or "allocated" in error):
            raise proxy.ProxyError(
                f"the proxy service cannot start: {error}; something else uses PROXY_HTTP_PORT/PROXY_HTTPS_PORT "
                f"on this node (`docker service rm {service.name}`, then set other ports)"
            )
        errors[:] = [error] if error else errors
        raise NotReady(error or "its task is not running yet")

    try:
        return poll(probe, timeout=timeout, interval=0.1)
    except TimedOut as exc:
        raise proxy.ProxyError(
            f"the proxy service {service.name} was not running after {timeout:.0f}s ({exc.reason})"
        ) from None


def remove_proxy(client: docker.DockerClient, settings: proxy.ProxySettings) -> None:
    """Remove the proxy service, its configs, volumes and the edge network (tests, a full teardown)."""
    service = proxy_service(client, settings.name)
    if service is not None:
        service.remove()  # type: ignore[no-untyped-call]
        _wait_gone(client, settings.name)
    for config in client.configs.list(filters={"name": f"{settings.name}-caddyfile-"}):
        with contextlib.suppress(docker.errors.APIError):
            config.remove()
    for volume in settings.volumes:
        _remove_volume(client, volume)
    _remove_network(client, edge_network(settings))


def _remove_volume(client: docker.DockerClient, name: str) -> None:
    def remove() -> None:
        client.volumes.get(name).remove(force=True)

    _until_removed(remove)


def _remove_network(client: docker.DockerClient, name: str) -> None:
    for network in client.networks.list(names=[name]):
        if network.name == name:
            _until_removed(network.remove)


def _until_removed(remove: Callable[[], Any], timeout: float = 20) -> None:
    """Call ``remove`` until the engine lets it go: a removed task's container lets go of its
    volume and network a moment after the service is gone."""

    def probe() -> None:
        try:
            remove()
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            raise NotReady(logs.clean_line(str(exc.explanation or exc))) from None

    try:
        poll(probe, timeout=timeout, interval=0.1)
    except TimedOut as exc:
        raise SwarmError(f"could not remove it after {timeout:.0f}s: {exc.reason}") from None


# --- the app service --------------------------------------------------------------------------


def service_name(slug: str) -> str:
    return slug


def site(target: rollout.Target) -> caddy.Site:
    """The project's site block on a swarm: its service's tasks, by DNS."""
    return caddy.Site(
        target.slug,
        target.backend_url,
        (str(target.container_port),),
        dynamic=f"tasks.{service_name(target.slug)}",
        request_buffer=target.request_buffer,
    )


def current(client: docker.DockerClient, slug: str) -> SwarmRelease | None:
    """The project's service, or None before its first deploy."""
    service = _find_service(client, service_name(slug))
    if service is None:
        return None
    labels = service.attrs.get("Spec", {}).get("Labels") or {}
    prefix = rollout.PREFIX
    mode = service.attrs.get("Spec", {}).get("Mode", {}).get("Replicated") or {}
    running = len([t for t in _tasks(service, {"desired-state": "running"}) if _state(t) == "running"])
    return SwarmRelease(
        service=service,
        version=labels.get(f"{prefix}.version", ""),
        revision=labels.get(f"{prefix}.revision", ""),
        image=labels.get(f"{prefix}.image", ""),
        digest=labels.get(f"{prefix}.digest", ""),
        created=labels.get(f"{prefix}.created", ""),
        desired=int(mode.get("Replicas") or 0),
        running=running,
    )


def _image_environment(client: docker.DockerClient, image: str) -> dict[str, str]:
    try:
        entries = client.images.get(image).attrs.get("Config", {}).get("Env") or []
    except docker.errors.ImageNotFound:
        entries = []
    return {name: value for name, _, value in (entry.partition("=") for entry in entries)}


def update_config(pause: float = 0.0) -> UpdateConfig:
    """One task at a time, start-first, each watched for :data:`MONITOR` seconds, rolled back
    by Swarm when one fails; ``pause`` seconds after each."""
    return UpdateConfig(
        parallelism=1,
        delay=int(pause * SECOND),
        failure_action="rollback",
        monitor=MONITOR * SECOND,
        max_failure_ratio=0,
        order="start-first",
    )


def service_options(
    target: rollout.Target,
    reference: str,
    *,
    labels: Mapping[str, str],
    environment: Mapping[str, str],
    image_environment: Mapping[str, str],
    pause: float = 0.0,
) -> dict[str, Any]:
    """The service's spec, as keyword arguments of the SDK's ``services.create``/``update``.
    ``pause``: seconds Swarm waits after each updated task (a canary's gate runs in them)."""
    env = {
        "PORT": str(target.container_port),
        **environment,
        "FORWARDED_ALLOW_IPS": environment.get("FORWARDED_ALLOW_IPS", "*"),
    }
    grace = containers.graceful_timeout({**image_environment, **env}) + containers.STOP_MARGIN
    return {
        "image": reference,
        "env": [f"{name}={value}" for name, value in env.items()],
        "labels": dict(labels),
        "container_labels": dict(labels),
        "networks": [NetworkAttachmentConfig(edge_network(target.proxy))],
        "endpoint_spec": EndpointSpec(mode="dnsrr"),
        # The image's own check, run every second, so a task is up (and in DNS) soon after it is ready.
        "healthcheck": Healthcheck(interval=SECOND),
        "stop_grace_period": grace * SECOND,
        "read_only": True,
        "cap_drop": ["ALL"],
        "mounts": [Mount("/tmp", None, type="tmpfs", tmpfs_size=64 * 1024 * 1024)],
        "resources": Resources(cpu_limit=int(target.cpus * SECOND), mem_limit=target.memory_mb * 1024 * 1024),
        "restart_policy": RestartPolicy(condition="any", delay=SECOND, max_attempts=0),
        # One task per node where the nodes allow, the rest spread evenly.
        "preferences": [PlacementPreference("spread", "node.id")],
        "update_config": update_config(pause),
        "rollback_config": RollbackConfig(
            parallelism=1, delay=0, failure_action="pause", monitor=MONITOR * SECOND, order="start-first"
        ),
    }


def roll_out(
    client: docker.DockerClient,
    target: rollout.Target,
    image: str,
    *,
    reference: str,
    version: str,
    revision: str,
    environment: Mapping[str, str] | None = None,
    replicas: int | None = None,
    node: str = "",
    on_line: LineSink | None = None,
    confirm_through: Callable[[str, str], None] | None = rollout.confirm,
    timings: rollout.Timings | None = None,
    pause: float = 0.0,
    watch: Watch | None = None,
    labels: Mapping[str, str] | None = None,
    before_switch: Callable[[str], None] | None = None,
) -> SwarmRelease:
    """Create the project's service, or roll it to ``reference`` (``repository@sha256:...``),
    and wait for Swarm to finish; the proxy's site is added or changed once the tasks are up.

    A canary (:mod:`cnd_toolkit.release.swarm_canary`) sets ``pause`` (Swarm waits that long after each
    updated task) and ``watch``, which follows the update from its start and gates it between
    tasks; when ``watch`` returns True the update is left midway (a canary watched by hand) and
    this returns at once, the tasks of both releases serving. ``labels`` go on the service too.

    ``image`` is the same image on this engine (its environment sets the stop grace period).
    ``replicas``: the task count (None: the current one; 2 for a new service). A first service
    that never turns healthy is removed with a task's logs; an update Swarm rolls back (or that
    is interrupted, which asks Swarm to roll it back) raises :class:`rollout.RolloutFailed`.
    """
    say = on_line or (lambda line: None)
    timings = timings or rollout.Timings()
    node = node or manager_node(client)
    with timings.phase("proxy"):
        proxy_container = ensure_proxy(client, target.proxy, node)
        wanted = site(target)
        before = proxy.read_site(proxy_container, wanted.slug)
        changed = before != proxy.render(proxy_container, wanted)
    live = current(client, target.slug)
    own = {
        SERVICE_LABEL: target.slug,
        f"{rollout.PREFIX}.version": version,
        f"{rollout.PREFIX}.revision": revision,
        f"{rollout.PREFIX}.image": image,
        f"{rollout.PREFIX}.digest": reference,
        f"{rollout.PREFIX}.created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        # Every deploy rolls the tasks, also of a revision that is already live (as a host deploy starts a colour).
        f"{rollout.PREFIX}.deploy": uuid.uuid4().hex[:12],
    }
    options = service_options(
        target,
        reference,
        labels=own,
        environment=environment or {},
        image_environment=_image_environment(client, image),
        pause=pause,
    )
    options["labels"] = {**options["labels"], **(labels or {})}
    if before_switch is not None:  # the pre-switch hook: before Swarm starts a task of the new release
        before_switch(service_name(target.slug))
    with timings.phase("rolling update"):
        if live is None:
            count = replicas or 2
            say(f"Creating the service {service_name(target.slug)} ({version}, {revision[:12]}), {count} tasks")
            service = _create(client, target, options, count)
            _wait_first(client, service, count, target.health_timeout, say)
        else:
            count = replicas or live.desired or 2
            say(
                f"Rolling {live.name} from {live.revision[:12]} to {revision[:12]}: {count} tasks, one at a time, "
                "each healthy before an old one stops"
            )
            midway = _update(
                client,
                live.service,
                options,
                count,
                target.health_timeout + pause,
                live,
                say,
                own[f"{rollout.PREFIX}.deploy"],
                watch,
            )
            if midway:
                done = current(client, target.slug)
                assert done is not None
                return done
    with timings.phase("switch"):
        try:
            if changed:
                verb = "Adding" if before[0] is None else "Updating"
                say(f"{verb} {target.backend_url} in the shared proxy (a reload)")
                proxy.apply_site(proxy_container, wanted)
            rollout.confirm_switch(proxy_container, target, revision, confirm_through, say)
        except BaseException as exc:
            if changed:
                proxy.restore_site(proxy_container, wanted.slug, before)
            still = "nothing serves" if live is None else f"Swarm was asked to roll back to {live.revision[:12]}"
            if live is None:
                remove_service(client, target.slug)
            else:
                request_rollback(client, _find_service(client, service_name(target.slug)) or live.service)
            if isinstance(exc, OpsError):
                raise rollout.RolloutFailed(f"{exc}; {still}", detail=exc.detail) from None
            raise
    done = current(client, target.slug)
    assert done is not None
    return done


def _create(client: docker.DockerClient, target: rollout.Target, options: dict[str, Any], count: int) -> Service:
    try:
        made: Service = client.services.create(  # type: ignore[no-untyped-call]
            name=service_name(target.slug), mode=ServiceMode("replicated", count), **options
        )
        return made
    except docker.errors.APIError as exc:
        raise SwarmError(f"Swarm refused the service: {logs.clean_line(str(exc.explanation or exc))}") from None


def _wait_first(client: docker.DockerClient, service: Service, count: int, timeout: float, say: LineSink) -> None:
    """Until ``count`` tasks are up; a service that does not get there is removed with a task's logs."""

    def probe() -> int:
        tasks = _tasks(service)
        up = [t for t in tasks if _state(t) == "running" and t.get("DesiredState") == "running"]
        if len(up) >= count:
            return len(up)
        rejected = [t for t in tasks if _state(t) == "rejected"]
        failed = _ended_badly(tasks)
        if rejected or len(failed) >= 2 * count:  # an image that cannot be pulled; tasks that keep failing
            reason, detail = _why(client, rejected or failed)
            raise rollout.RolloutFailed(
                f"the new service never turned healthy ({reason or 'its tasks kept failing'}); "
                "it was removed and nothing serves",
                detail=detail,
            )
        raise NotReady(f"{len(up)} of {count} tasks up")

    try:
        up = poll(probe, timeout=timeout, interval=0.1)
    except TimedOut as exc:
        reason, detail = _why(client, _tasks(service))
        remove_service(client, service.name)
        raise rollout.RolloutFailed(
            f"the new service never turned healthy ({exc.reason} after {timeout:.0f}s"
            + (f"; {reason}" if reason else "")
            + "); it was removed and nothing serves",
            detail=detail,
        ) from None
    except BaseException:
        remove_service(client, service.name)
        raise
    say(f"{up} of {count} tasks are up")


def _update(
    client: docker.DockerClient,
    service: Service,
    options: dict[str, Any],
    count: int,
    timeout: float,
    live: SwarmRelease,
    say: LineSink,
    deploy_id: str,
    watch: Watch | None = None,
) -> bool:
    """Start the update and follow it to its end (False), or until ``watch`` leaves it midway (True)."""
    service.reload()
    before = (service.attrs.get("UpdateStatus") or {}).get("StartedAt", "")
    try:
        service.update(mode=ServiceMode("replicated", count), **options)  # type: ignore[no-untyped-call]
    except docker.errors.APIError as exc:
        raise SwarmError(f"Swarm refused the update: {logs.clean_line(str(exc.explanation or exc))}") from None
    # Each task: start, turn healthy, be watched; then the next. Past that, Swarm is stuck.
    limit = (timeout + MONITOR + 5) * max(count, 1) + 30
    try:
        if watch is not None and watch(Update(service, before, live, deploy_id, count)):
            return True
        wait_update(client, service, before, limit, live, say, deploy_id)
    except KeyboardInterrupt:
        if request_rollback(client, service):  # not when a canary's gate has asked already
            say(
                f"Interrupted: asking Swarm to roll {service.name} back to {live.revision[:12]} "
                "(it goes on after this exits; `inv status` shows it)"
            )
        raise
    return False


def wait_update(
    client: docker.DockerClient,
    service: Service,
    before: str,
    limit: float,
    live: SwarmRelease,
    say: LineSink,
    deploy_id: str = "",
) -> None:
    """Follow Swarm's update status (the one started after ``before``) to its end; say each state.
    ``deploy_id``: the new release's deploy label, whose tasks say why an update was rolled back."""
    seen: list[str] = []

    def probe() -> None:
        service.reload()
        status = service.attrs.get("UpdateStatus") or {}
        state = str(status.get("State", "")) if status.get("StartedAt", "") != before else ""
        message = str(status.get("Message", ""))
        if state and state not in seen[-1:]:
            seen.append(state)
            say(f"Swarm: {state.replace('_', ' ')} ({message})")
            if state == "updating":
                hold.reached("swarm.updating")
        if state == "completed":
            return
        if state in {"rollback_completed", "rollback_paused", "paused"}:
            # The new release's tasks (this deploy's label): how they ended, whatever their state.
            mine = [t for t in _tasks(service) if _deploy_of(t) == deploy_id] if deploy_id else _tasks(service)
            reason, detail = _why(client, mine)
            because = f": {reason}" if reason else ""
            if state == "rollback_completed":
                what = f"Swarm rolled the update back{because}; {live.revision[:12]} serves"
            else:
                what = f"Swarm {state.replace('_', ' ')} the update ({message}){because}; see `inv status`"
            raise rollout.RolloutFailed(f"the new release did not take: {what}", detail=detail)
        raise NotReady(state or "not started")

    try:
        poll(probe, timeout=limit, interval=0.1)
    except TimedOut as exc:
        if exc.reason != "rollback_started":
            request_rollback(client, service)
        raise rollout.RolloutFailed(
            f"Swarm's update of {service.name} did not finish in {limit:.0f}s ({exc.reason}); "
            f"Swarm was asked to roll it back to {live.revision[:12]}: see `inv status`"
        ) from None


def request_rollback(client: docker.DockerClient, service: Service) -> bool:
    """`docker service rollback`: Swarm goes back to the service's previous spec, rolling as set.
    Not again while Swarm rolls back or has rolled back (False): a rollback swaps the spec and the
    previous one, so a second would roll forward again."""
    service.reload()
    if service_update_state(service).startswith("rollback"):
        return False
    api: Any = client.api  # the SDK has no call for it: the CLI's request, through the SDK's own session
    url = api._url("/services/{0}/update", service.id)
    spec = service.attrs["Spec"]
    params = {"version": service.attrs["Version"]["Index"], "rollback": "previous"}
    with contextlib.suppress(docker.errors.APIError):
        api._raise_for_status(api._post_json(url, data=spec, params=params))
    return True


def scale(client: docker.DockerClient, slug: str, count: int, timeout: float, say: LineSink) -> SwarmRelease:
    """Set the task count and wait until exactly ``count`` tasks are up and the others have stopped."""
    live = current(client, slug)
    if live is None:
        raise SwarmError(f"{slug} is not deployed on this swarm yet; run `inv deploy`")
    say(f"Scaling {live.name} from {live.desired} to {count} tasks")
    live.service.scale(count)

    def probe() -> None:
        tasks = _tasks(live.service)
        up = [t for t in tasks if _state(t) == "running" and t.get("DesiredState") == "running"]
        stopping = [t for t in tasks if t.get("DesiredState") != "running" and _state(t) not in ENDED]
        if len(up) != count or stopping:
            raise NotReady(f"{len(up)} of {count} tasks up, {len(stopping)} stopping")

    limit = timeout * max(count, 1) + 30
    try:
        poll(probe, timeout=limit, interval=0.1)
    except TimedOut as exc:
        raise SwarmError(
            f"{live.name} did not reach {count} tasks in {limit:.0f}s ({exc.reason}): see `inv status`",
            detail=_why(client, _ended_badly(_tasks(live.service)))[1],
        ) from None
    done = current(client, slug)
    assert done is not None
    return done


def tasks(client: docker.DockerClient, slug: str) -> list[Task]:
    """The service's tasks that should run, with their node and health, by slot."""
    live = current(client, slug)
    if live is None:
        return []
    nodes = {
        str(n.id): str(n.attrs.get("Description", {}).get("Hostname", str(n.id)[:12])) for n in client.nodes.list()
    }
    found = []
    for task in _tasks(live.service, {"desired-state": "running"}):
        status = task.get("Status", {})
        health = "healthy" if status.get("State") == "running" else status.get("State", "")
        container_id = status.get("ContainerStatus", {}).get("ContainerID")
        if container_id:
            with contextlib.suppress(docker.errors.NotFound):
                health = containers.health(client.containers.get(container_id))[0]
        labels = task.get("Spec", {}).get("ContainerSpec", {}).get("Labels") or {}
        found.append(
            Task(
                slot=int(task.get("Slot") or 0),
                node=nodes.get(task.get("NodeID", ""), task.get("NodeID", "")[:12]),
                state=str(status.get("State", "")),
                health=health,
                revision=labels.get(f"{rollout.PREFIX}.revision", ""),
                since=str(status.get("Timestamp", ""))[:19].replace("T", " "),
                error=str(status.get("Err", "")),
            )
        )
    return sorted(found, key=lambda t: t.slot)


def remove_service(client: docker.DockerClient, slug: str) -> bool:
    """Remove the project's service; its tasks stop with their grace period. True if there was one."""
    name = service_name(slug)
    service = _find_service(client, name)
    if service is None:
        return False
    with contextlib.suppress(docker.errors.NotFound):
        service.remove()  # type: ignore[no-untyped-call]
    _wait_gone(client, name)
    return True


def _wait_gone(client: docker.DockerClient, name: str, timeout: float = 120) -> None:
    """Until the removed service's task containers on this node are gone (drained)."""

    def probe() -> None:
        # sparse: no inspect of each, which fails for one removed meanwhile
        left = client.containers.list(all=True, sparse=True, filters={"label": f"com.docker.swarm.service.name={name}"})
        if left:
            raise NotReady(f"{len(left)} task container(s) still stopping")

    try:
        poll(probe, timeout=timeout, interval=0.1)
    except TimedOut as exc:
        raise SwarmError(f"the service {name} was removed, but {exc.reason} after {timeout:.0f}s") from None


def update_state(release: SwarmRelease) -> str:
    """The state of the service's last update (``completed``, ``rollback_started`` ...), "" if none."""
    return service_update_state(release.service)


def service_update_state(service: Service) -> str:
    """The state of the service's last update as last read (``completed``, ``rollback_started`` ...), or ""."""
    return str((service.attrs.get("UpdateStatus") or {}).get("State", ""))


def _tasks(service: Service, filters: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    found = service.tasks(filters=dict(filters or {}))  # type: ignore[no-untyped-call]
    return list(found)


def _deploy_of(task: Mapping[str, Any]) -> str:
    """The deploy label of a task: which deploy's spec it runs."""
    labels = task.get("Spec", {}).get("ContainerSpec", {}).get("Labels") or {}
    return str(labels.get(f"{rollout.PREFIX}.deploy", ""))


def _state(task: Mapping[str, Any]) -> str:
    return str(task.get("Status", {}).get("State", ""))


def _why(client: docker.DockerClient, tasks: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """Why the newest of ``tasks`` did not stay up: a reason for the message (Swarm's error, the
    last failed health check, the app's first error) and its log tail ("", "" if nothing says)."""
    for task in sorted(tasks, key=lambda t: str(t.get("UpdatedAt", "")), reverse=True):
        status = task.get("Status", {})
        reasons = [logs.clean_line(str(status.get("Err", "")))]
        detail = ""
        container_id = status.get("ContainerStatus", {}).get("ContainerID")
        container = None
        if container_id:
            with contextlib.suppress(docker.errors.NotFound):
                container = client.containers.get(container_id)
        if container is not None:
            detail = containers.container_logs(container, tail=40)
            checks = (container.attrs.get("State", {}).get("Health") or {}).get("Log") or []
            if checks and checks[-1].get("ExitCode"):
                output = logs.clean_line(" ".join(str(checks[-1].get("Output", "")).split()))[:200]
                reasons.append(f"its health check failed: {output or 'exit code ' + str(checks[-1]['ExitCode'])}")
            reasons.append(logs.first_error(detail, fallback=False))  # an error line, not the last line
        reason = "; ".join(r for r in reasons if r)
        if reason or detail:
            return reason, detail
    return "", ""


def _ended_badly(tasks: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [t for t in tasks if _state(t) in {"failed", "rejected"}]
