"""The shared Caddy of a Docker host, through the Docker API only (works on any DOCKER_HOST).

Created on the first deploy of any project to the host: a container named
:data:`~cnd_toolkit.release.caddy.PROXY_NAME` from ``PROXY_IMAGE``, its configuration on one volume
(``/etc/caddy``) and its certificates and state on another (``/data``), published on
``PROXY_HTTP_PORT`` and ``PROXY_HTTPS_PORT``. Each project's network is connected to it, so it
reaches the project's containers by name. A project's site file is written into the container
with ``put_archive`` and applied with ``caddy reload``, which Caddy does gracefully: connections
in flight finish on the old configuration, and a configuration Caddy refuses changes nothing.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import time
from dataclasses import dataclass

import docker
import docker.errors
from docker.models.containers import Container

from cnd_toolkit import logs
from cnd_toolkit.docker import containers
from cnd_toolkit.errors import OpsError
from cnd_toolkit.release import caddy
from cnd_toolkit.wait import NotReady, TimedOut, poll


class ProxyError(OpsError):
    """The shared proxy could not be created, configured or reloaded; nothing was switched."""


@dataclass(frozen=True)
class ProxySettings:
    image: str
    http_port: int
    https_port: int
    name: str = caddy.PROXY_NAME  # one per host; tests use their own
    host_ip: str = ""  # where the ports are published: every address, or 127.0.0.1 for a deploy to this machine

    @property
    def network(self) -> str:
        """The proxy's own network, where its ports are published. Its name sorts before every
        project's network (slugs start with a letter): the engine routes a container's published
        ports through the network whose name sorts first, and connecting one that sorts earlier
        moves them, resetting every connection to the proxy (measured: 0.2 s of refused
        connections for every project on the host)."""
        return f"0-{self.name}"

    @property
    def volumes(self) -> tuple[str, str]:
        """Its configuration volume and its data (certificates) volume."""
        return f"{self.name}-config", f"{self.name}-data"


def network_name(slug: str) -> str:
    return f"{slug}-net"


def ensure_network(client: docker.DockerClient, slug: str) -> str:
    """The project's own bridge network (made once); its containers and the proxy meet there."""
    return _ensure_network(client, slug)[0]


def _ensure_network(client: docker.DockerClient, slug: str) -> tuple[str, bool]:
    """The project's network, and whether this call made it."""
    name = network_name(slug)
    found = client.networks.list(names=[name])
    if not [n for n in found if n.name == name]:
        client.networks.create(name, driver="bridge", labels={containers.MANAGED_LABEL: slug})
        return name, True
    return name, False


def _remove_network(client: docker.DockerClient, name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        client.networks.get(name).remove()


def get(client: docker.DockerClient, name: str = caddy.PROXY_NAME) -> Container | None:
    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def ensure(client: docker.DockerClient, settings: ProxySettings, slug: str) -> Container:
    """The running proxy, created (or started) if need be, connected to ``slug``'s network."""
    proxy = get(client, settings.name)
    if proxy is not None:
        check_matches(proxy, settings)
    network, made = _ensure_network(client, slug)
    if proxy is None:
        try:
            proxy = _create(client, settings)
        except BaseException:  # a first deploy that cannot start the proxy leaves no network behind
            if made:
                _remove_network(client, network)
            raise
    if proxy.status != "running":
        proxy.start()
        _wait_running(proxy)
    proxy.reload()
    upgrade_main(proxy)
    attached = proxy.attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
    if network not in attached:
        client.networks.get(network).connect(proxy)
    return proxy


def upgrade_main(proxy: Container) -> bool:
    """A proxy made by an older template gets this one's main Caddyfile (the metrics port), with
    one graceful reload; put back as it was if Caddy refuses it. Whether it changed."""
    path = f"{caddy.CONFIG_DIR}/Caddyfile"
    before = read_file(proxy, path)
    if before == caddy.MAIN:
        return False
    put_file(proxy, path, caddy.MAIN)
    try:
        reload(proxy)
    except ProxyError:
        if before is not None:
            put_file(proxy, path, before)
        raise
    return True


def published_ports(proxy: Container) -> dict[str, int]:
    """The host ports the proxy publishes, by container port ("80/tcp": 8080)."""
    bindings = proxy.attrs.get("HostConfig", {}).get("PortBindings") or {}
    return {port: int(found[0]["HostPort"]) for port, found in bindings.items() if found and found[0].get("HostPort")}


def check_matches(proxy: Container, settings: ProxySettings) -> None:
    """The host's proxy is shared: a project whose PROXY_* settings disagree with it is told so,
    before its site is served on a port nobody listens on."""
    if caddy.PROXY_LABEL not in (proxy.labels or {}):
        raise ProxyError(
            f"PROXY_NAME={settings.name} names a container on this Docker host that is not a proxy these tasks "
            "made; set PROXY_NAME to another name (the default is cnd-proxy)"
        )
    ports = published_ports(proxy)
    wanted = {"80/tcp": settings.http_port, "443/tcp": settings.https_port}
    names = {"80/tcp": "PROXY_HTTP_PORT", "443/tcp": "PROXY_HTTPS_PORT"}
    wrong = [
        f"{names[port]}={want} (it publishes {ports.get(port)})"
        for port, want in wanted.items()
        if ports.get(port) != want
    ]
    if wrong:
        raise ProxyError(
            f"this Docker host's shared proxy {proxy.name} was created by an earlier deploy with other ports than "
            f"this project's {', '.join(wrong)}: set them to what the proxy publishes, as every project on the host "
            "must (see the README: one proxy per host)"
        )


def _create(client: docker.DockerClient, settings: ProxySettings) -> Container:
    try:
        client.images.get(settings.image)
    except docker.errors.ImageNotFound:
        try:
            client.images.pull(settings.image)
        except docker.errors.APIError as exc:
            raise ProxyError(
                f"the proxy image {settings.image} is not on the Docker host and could not be pulled "
                f"({logs.clean_line(str(exc.explanation or exc))}); set PROXY_IMAGE to one the host has or can pull"
            ) from None
    existing = {volume.name for volume in client.volumes.list()}
    made_volumes = [volume for volume in settings.volumes if volume not in existing]
    for volume in made_volumes:
        with contextlib.suppress(docker.errors.APIError):
            client.volumes.create(volume, labels={caddy.PROXY_LABEL: "1"})
    made_network = not [n for n in client.networks.list(names=[settings.network]) if n.name == settings.network]
    if made_network:
        client.networks.create(settings.network, driver="bridge", labels={caddy.PROXY_LABEL: "1"})
    try:
        return _create_in(client, settings)
    except BaseException:  # what this call made goes with it (the container too: see _create_in)
        if made_network:
            _remove_network(client, settings.network)
        for volume in made_volumes:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                client.volumes.get(volume).remove()
        raise


def _create_in(client: docker.DockerClient, settings: ProxySettings) -> Container:
    """The proxy container on its network and volumes (which exist), started."""
    config_volume, data_volume = settings.volumes
    try:
        proxy = client.containers.create(
            settings.image,
            ["caddy", "run", "--config", f"{caddy.CONFIG_DIR}/Caddyfile", "--adapter", "caddyfile"],
            name=settings.name,
            detach=True,
            labels={caddy.PROXY_LABEL: "1"},
            network=settings.network,
            ports={
                "80/tcp": (settings.host_ip, settings.http_port) if settings.host_ip else settings.http_port,
                "443/tcp": (settings.host_ip, settings.https_port) if settings.host_ip else settings.https_port,
            },
            volumes={
                config_volume: {"bind": caddy.CONFIG_DIR, "mode": "rw"},
                data_volume: {"bind": "/data", "mode": "rw"},
            },
            # The engine takes unless-stopped; the SDK's stubs list only always and on-failure.
            restart_policy={"Name": "unless-stopped", "MaximumRetryCount": 0},  # type: ignore[arg-type]
            environment={"XDG_DATA_HOME": "/data", "XDG_CONFIG_HOME": "/data/config"},
        )
    except docker.errors.APIError as exc:
        raise ProxyError(f"could not create the proxy: {logs.clean_line(str(exc.explanation or exc))}") from None
    try:
        # The configuration is in place before Caddy first reads it.
        put_file(proxy, f"{caddy.CONFIG_DIR}/Caddyfile", caddy.MAIN)
        put_file(proxy, f"{caddy.SITES_DIR}/.keep", "")
        try:
            proxy.start()
        except docker.errors.APIError as exc:
            reason = logs.clean_line(str(exc.explanation or exc))
            hint = ""
            if "address already in use" in reason or "port is already allocated" in reason:
                ports = f"{settings.http_port} or {settings.https_port}"
                hint = f"; something else uses port {ports}: set PROXY_HTTP_PORT/PROXY_HTTPS_PORT"
            raise ProxyError(f"could not start the proxy: {reason}{hint}") from None
        _wait_running(proxy)
    except BaseException:
        containers.remove(proxy)
        raise
    return proxy


def _wait_running(proxy: Container, timeout: float = 20) -> None:
    def running() -> None:
        proxy.reload()
        if proxy.status in {"exited", "dead"}:
            raise ProxyError(f"the proxy exited at start: {containers.container_logs(proxy, tail=20)}")
        if proxy.status != "running":
            raise NotReady(f"it is {proxy.status}")
        code, _ = proxy.exec_run(["caddy", "version"])
        if code != 0:
            raise NotReady("caddy does not answer yet")

    try:
        poll(running, timeout=timeout, interval=0.2, max_interval=0.2)
    except TimedOut as exc:
        raise ProxyError(f"the proxy was not running after {timeout:.0f}s ({exc.reason})") from None


def put_file(container: Container, path: str, text: str) -> None:
    """Write ``text`` at ``path`` in ``container`` (running or not), through the Docker API."""
    directory, _, name = path.rpartition("/")
    data = text.encode("utf-8")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        parents = directory.strip("/").split("/")
        for depth in range(1, len(parents) + 1):  # the folders, so a new one (sites/) is made
            folder = tarfile.TarInfo("/".join(parents[:depth]))
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(folder)
        info = tarfile.TarInfo(f"{directory.strip('/')}/{name}")
        info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
        archive.addfile(info, io.BytesIO(data))
    if not container.put_archive("/", buffer.getvalue()):
        raise ProxyError(f"could not write {path} in {container.name}")


def read_sites(proxy: Container) -> dict[str, str]:
    """Every project's site file in the proxy: file name -> text."""
    try:
        stream, _ = proxy.get_archive(caddy.SITES_DIR)
    except docker.errors.NotFound:
        return {}
    found = {}
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        for member in archive.getmembers():
            name = member.name.rpartition("/")[2]
            extracted = archive.extractfile(member) if member.isfile() and name.endswith(".caddy") else None
            if extracted is not None:
                found[name] = extracted.read().decode("utf-8", "replace")
    return found


def read_file(container: Container, path: str) -> str | None:
    try:
        stream, _ = container.get_archive(path)
    except docker.errors.NotFound:
        return None
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        member = archive.next()
        if member is None:
            return None
        extracted = archive.extractfile(member)
        return extracted.read().decode("utf-8") if extracted else None


def read_site(proxy: Container, slug: str) -> tuple[str | None, str | None]:
    """The project's site file and metrics file as they are in the proxy (``None``: missing)."""
    name = caddy.site_file_name(slug)
    return read_file(proxy, f"{caddy.SITES_DIR}/{name}"), read_file(proxy, f"{caddy.METRICS_DIR}/{name}")


_versions: dict[str, str] = {}


def caddy_version(proxy: Container) -> str:
    """What ``caddy version`` prints in the proxy ("v2.10.0 h1:..."; "" if it cannot tell), once per container."""
    key = proxy.id or ""
    if key not in _versions:
        code, output = proxy.exec_run(["caddy", "version"])
        text = output.decode("utf-8", "replace") if code == 0 and isinstance(output, bytes) else ""
        _versions[key] = text.strip()
    return _versions[key]


def render(proxy: Container, site: caddy.Site) -> tuple[str, str]:
    """The project's site and metrics files, in the syntax of this proxy's Caddy."""
    return caddy.render(site, caddy_version(proxy))


def apply_site(proxy: Container, site: caddy.Site) -> None:
    """Write the project's site and metrics files and reload Caddy gracefully. A configuration
    Caddy refuses is put back as it was, and raises :class:`ProxyError` with Caddy's reason:
    nothing switched."""
    before = read_site(proxy, site.slug)
    _write_site(proxy, site.slug, render(proxy, site))
    try:
        reload(proxy)
    except ProxyError:
        _write_site(proxy, site.slug, before)
        raise


def _write_site(proxy: Container, slug: str, texts: tuple[str | None, str | None]) -> None:
    name = caddy.site_file_name(slug)
    for directory, text in zip((caddy.SITES_DIR, caddy.METRICS_DIR), texts, strict=True):
        if text is None:
            proxy.exec_run(["rm", "-f", f"{directory}/{name}"])
        else:
            put_file(proxy, f"{directory}/{name}", text)


def restore_site(proxy: Container, slug: str, texts: tuple[str | None, str | None]) -> None:
    """Put the project's site and metrics files back as they were (``None``: there was none) and reload."""
    _write_site(proxy, slug, texts)
    reload(proxy)


def remove_site(proxy: Container, slug: str) -> None:
    """Delete the project's site file (and maintenance file), without a reload: see :mod:`cnd_toolkit.release.caddy`."""
    name = caddy.site_file_name(slug)
    proxy.exec_run(
        ["rm", "-f", f"{caddy.SITES_DIR}/{name}", f"{caddy.METRICS_DIR}/{name}", caddy.maintenance_file(slug)]
    )
    proxy.exec_run(["rm", "-rf", caddy.split_dir(slug), caddy.live_dir(slug)])


def set_maintenance(proxy: Container, slug: str, on: bool, retry_after: int) -> None:
    """Put the project's site in maintenance (a JSON 503) or take it out: a file, no reload."""
    if on:
        put_file(proxy, caddy.maintenance_file(slug), caddy.maintenance_body(retry_after) + "\n")
    else:
        code, output = proxy.exec_run(["rm", "-f", caddy.maintenance_file(slug)])
        if code != 0:
            text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
            raise ProxyError(f"could not end maintenance: {logs.short_tail(text)}")


def set_split(proxy: Container, site: caddy.Site, shares: dict[str, int] | None) -> float:
    """Send each request bucket of the project to an upstream by the files in its split directory
    (no reload): ``shares`` maps upstreams to percentages adding up to 100, the buckets given out
    in order (so one that went to the canary at 10 % stays with it at 50 %); ``None`` removes
    every file (the live colour serves). Files are added before stale ones go, so no bucket is ever
    without one midway. Returns the canary's exact share (the last upstream's): buckets / 256."""
    names = caddy.bucket_names()
    wanted: set[str] = set()
    given = 0
    exact = 0.0
    if shares is not None:
        if sum(shares.values()) != 100 or any(not 0 <= s <= 100 for s in shares.values()):
            raise ProxyError(f"a split's shares add up to 100: {shares}")
        for index, (upstream, share) in enumerate(shares.items()):
            count = len(names) - given if index == len(shares) - 1 else round(share * len(names) / 100)
            wanted |= {caddy.split_file(bucket, upstream) for bucket in names[given : given + count]}
            given += count
            exact = 100 * count / len(names)
    every = {caddy.split_file(bucket, upstream) for bucket in names for upstream in site.upstreams}
    _flag_files(proxy, caddy.split_dir(site.slug), wanted, every, f"set the split of {site.slug}")
    return exact


def _flag_files(proxy: Container, directory: str, wanted: set[str], every: set[str], what: str) -> None:
    """Of the empty files ``every`` names in ``directory``, ``wanted`` exist afterwards and the rest
    do not; the wanted ones are made before the others go (one ``sh`` in the proxy, no reload)."""
    script = (
        f"set -e; mkdir -p {directory}; cd {directory}; "
        + (f"touch {' '.join(sorted(wanted))}; " if wanted else "")
        + f"rm -f {' '.join(sorted(every - wanted))}"
    )
    code, output = proxy.exec_run(["sh", "-c", script])
    if code != 0:
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        raise ProxyError(f"could not {what}: {logs.short_tail(text)}")


def set_live(proxy: Container, site: caddy.Site, upstream: str | None) -> None:
    """Make ``upstream`` the colour every request goes to first (``None``: no live file, blue first):
    the switch of a deploy or a rollback, a file and no reload. The new file is written before the
    old one goes, so no request finds none."""
    wanted = {caddy.live_file(upstream)} if upstream else set()
    every = {caddy.live_file(u) for u in site.upstreams}
    _flag_files(proxy, caddy.live_dir(site.slug), wanted, every, f"switch {site.slug} to {upstream}")


def live_now(proxy: Container, site: caddy.Site) -> list[str]:
    """The upstreams the project's live files name (one after a switch; none before the first)."""
    _, output = proxy.exec_run(["sh", "-c", f"ls {caddy.live_dir(site.slug)} 2>/dev/null || true"])
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
    names = set(text.split())
    return [upstream for upstream in site.upstreams if caddy.live_file(upstream) in names]


def split_now(proxy: Container, site: caddy.Site) -> dict[str, int]:
    """How many buckets each upstream has now (empty: the live colour serves)."""
    _, output = proxy.exec_run(["sh", "-c", f"ls {caddy.split_dir(site.slug)} 2>/dev/null || true"])
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
    counted: dict[str, int] = {}
    for upstream in site.upstreams:
        suffix = "." + upstream.rpartition(":")[0]
        found = sum(1 for name in text.split() if name.endswith(suffix))
        if found:
            counted[upstream] = found
    return counted


def in_maintenance(proxy: Container | None, slug: str) -> bool:
    return proxy is not None and read_file(proxy, caddy.maintenance_file(slug)) is not None


def reload(proxy: Container) -> None:
    code, output = proxy.exec_run(
        ["caddy", "reload", "--config", f"{caddy.CONFIG_DIR}/Caddyfile", "--adapter", "caddyfile"]
    )
    if code != 0:
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        raise ProxyError(f"Caddy refused the new configuration: {logs.short_tail(text)}")


def leave_network(client: docker.DockerClient, proxy: Container | None, slug: str) -> None:
    """Disconnect the proxy from ``slug``'s network and remove the network (its containers gone)."""
    for network in client.networks.list(names=[network_name(slug)]):
        if network.name != network_name(slug):
            continue
        if proxy is not None:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                network.disconnect(proxy, force=True)
        network.remove()


def remove(client: docker.DockerClient, settings: ProxySettings) -> None:
    """Remove the proxy container, its volumes (its configuration, its certificates) and its network."""
    found = get(client, settings.name)
    if found is not None:
        containers.remove(found)
    for volume in settings.volumes:
        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(volume).remove(force=True)
    for network in client.networks.list(names=[settings.network]):
        if network.name == settings.network:
            network.remove()
