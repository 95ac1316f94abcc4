"""What a deploy needs from the Docker host and the network, checked before anything is built.

Each check returns the problems it found as lines (empty: fine), so the preflight can list them
all at once with their fixes. Nothing here changes the host, except pulling the proxy image when
the proxy does not exist yet: the first deploy needs it anyway, and a pull that fails is a
problem found before the build rather than after the push.
"""

from __future__ import annotations

import errno
import socket
import ssl
from urllib.parse import urlsplit

import docker
import docker.errors
import httpx
import requests.exceptions

from cnd_toolkit import logs
from cnd_toolkit.docker import images
from cnd_toolkit.docker.engine import client_is_local
from cnd_toolkit.release import proxy
from cnd_toolkit.settings import Settings, is_loopback

# Where a deploy to this machine goes: `.env.local`, made by the template.
LOCAL_HINT = "to deploy to this machine, use `inv deploy --env local` (the API on http://127.0.0.1:8480)"


def proxy_image(client: docker.DockerClient, image: str, say: logs.LineSink) -> list[str]:
    """The proxy's image is on the engine, or is pulled now (the first deploy to a host needs it)."""
    try:
        client.images.get(image)
        return []
    except docker.errors.ImageNotFound:
        pass
    say(f"Pulling the proxy image {image} (the first deploy to this Docker host)")
    try:
        client.images.pull(image)
    except docker.errors.APIError as exc:
        said = logs.clean_line(str(exc.explanation or exc))
        return [
            f"the proxy image PROXY_IMAGE={image} is not on the Docker host and could not be pulled ({said}): "
            "set PROXY_IMAGE to an image the host has or can pull (a mirror's copy of caddy:2), or load it there"
        ]
    return []


def _publisher(client: docker.DockerClient, port: int) -> str:
    """The container publishing host ``port``, by name, or ``""``."""
    for container in client.containers.list(filters={"publish": str(port)}):
        return str(container.name)
    return ""


def _taken_here(port: int) -> bool:
    """Whether another program holds ``port`` on this machine (only meaningful for a local engine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the engine binds: a port whose last connection is in TIME_WAIT is free, a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))  # where the engine publishes the proxy
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def proxy_ports(client: docker.DockerClient, settings: proxy.ProxySettings) -> list[str]:
    """For a proxy yet to be made: PROXY_HTTP_PORT and PROXY_HTTPS_PORT are free on the host."""
    problems = []
    local = client_is_local(client)
    for name, port in (("PROXY_HTTP_PORT", settings.http_port), ("PROXY_HTTPS_PORT", settings.https_port)):
        holder = _publisher(client, port)
        if holder:
            problems.append(
                f"{name}={port}: the container {holder} publishes that port on the Docker host, and the proxy "
                f"{settings.name} needs it: set {name} to a free port, or stop {holder}"
            )
        elif local and _taken_here(port):
            problems.append(
                f"{name}={port}: another program on this machine listens on that port, and the proxy "
                f"{settings.name} needs it: set {name} to a free port, or stop that program"
            )
    return problems


def registry_host(repository: str) -> str:
    """The registry a repository path names (Docker's rule: a first part with a dot, a colon, or
    ``localhost``; else Docker Hub)."""
    first, slash, _ = repository.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def registry(client: docker.DockerClient, repository: str, username: str, password: str) -> list[str]:
    """The registry of ``repository`` answers the engine, and accepts the login when there is one.

    With REGISTRY_USERNAME, the engine checks the login with the registry (``docker login``): a
    refusal is a problem. Without one, the engine asks the registry for a tag that need not exist
    (the SDK sends what `docker login` stored): only a registry that does not answer is a problem,
    since one that wants a login may get it from the engine's own stored credentials at the push.
    What the engine or the registry said is scrubbed of the password in every form first.
    """
    host = registry_host(repository)
    try:
        if username:
            client.login(username=username, password=password, registry=host, reauth=True)
        else:
            client.api.inspect_distribution(f"{repository}:preflight-check")  # type: ignore[no-untyped-call]
        return []
    except docker.errors.APIError as exc:
        said = images.registry_message(exc, password)
        status = getattr(exc, "status_code", None)
    except requests.exceptions.RequestException as exc:  # the engine itself did not answer in time
        said, status = images.registry_message(str(exc), password), None
    lowered = said.lower()
    if not username and any(word in lowered for word in ("manifest unknown", "name unknown", "manifest_unknown")):
        return []  # it answered, and let us ask: the tag does not exist
    refused_words = ("unauthorized", "denied", "authentication required", "incorrect username")
    refused = status in {401, 403} or any(word in lowered for word in refused_words)
    if refused and not username:
        return []  # perhaps a login the engine has stored: the push says, if not
    fix = "check REGISTRY_USERNAME and REGISTRY_PASSWORD (a token that may push to IMAGE)"
    if refused:
        return [f"the registry {host} refused the login for IMAGE={repository} ({said}): {fix}"]
    return [
        f"the registry {host} of IMAGE={repository} did not answer the Docker host as a registry ({said}): check "
        "the host name and that the Docker host reaches it; for a deploy without a registry, REGISTRY_PUSH=off "
        "(DEPLOY_TARGET=host), as `.env.local` does"
    ]


# Names Caddy does not ask a public CA for: it signs them with its own local CA (and IP addresses too).
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")


def _internal_name(host: str) -> bool:
    host = host.lower().removesuffix(".")
    return host == "localhost" or host.endswith(_INTERNAL_SUFFIXES)


def on_this_machine(url: str) -> bool:
    """Whether ``url``'s host is this machine (127.0.0.0/8, ::1, localhost)."""
    try:
        return is_loopback(urlsplit(url).hostname or "")
    except ValueError:
        return False


def loopback_port(settings: Settings) -> list[str]:
    """A BACKEND_URL on this machine reaches the proxy only on the port the proxy publishes."""
    try:
        parts = urlsplit(settings["BACKEND_URL"])
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return []
    if not on_this_machine(settings["BACKEND_URL"]):
        return []
    name = "PROXY_HTTPS_PORT" if parts.scheme == "https" else "PROXY_HTTP_PORT"
    if port == settings.number(name):
        return []
    where = f".env.{settings.env_name}" if settings.env_name else ".env"
    return [
        f"BACKEND_URL={settings['BACKEND_URL']} ({settings.sources.get('BACKEND_URL', 'default')}) is this machine "
        f"on port {port}, but the proxy answers on {name}={settings[name]} ({settings.sources.get(name, 'default')}): "
        f"change both together, exported for one deploy or in {where} (commit it if git tracks it)"
    ]


def backend_url(url: str, *, local_target: bool = False) -> list[str]:
    """BACKEND_URL can be confirmed from this machine once the release serves: its host resolves
    here, and an https one is not a name Caddy can only sign with its own local CA. With
    ``local_target`` (``--env local``), the fixes do not point back at it."""
    hint = "use http://127.0.0.1:PORT, as .env.local has it" if local_target else LOCAL_HINT
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return []  # not a URL: the settings say so
    if not host:
        return []
    literal = host.startswith("[") or host.replace(".", "").isdigit() or ":" in host
    if parts.scheme == "https" and (_internal_name(host) or is_loopback(host) or literal):
        return [
            f"BACKEND_URL={url}: Caddy cannot get a public certificate for {host}; it would sign one with its "
            "own local CA, which this machine does not trust, so the deploy could not confirm the release "
            f"through it. Use a public DNS name for https, or http:// for this machine: {hint}"
        ]
    if literal:
        return []
    try:
        socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        if host.lower().endswith(".localhost"):
            return [
                f"BACKEND_URL={url}: {host} does not resolve on this machine (browsers and curl treat names "
                "under .localhost as this machine, but the system resolver here does not), so the deploy could "
                f"not confirm the release through it: use http://127.0.0.1:PORT or http://localhost:PORT"
                + ("" if local_target else f"; {LOCAL_HINT}")
            ]
        return [
            f"BACKEND_URL={url}: {host} does not resolve on this machine, so the deploy could not confirm the "
            "release through it: point the name's DNS at the Docker host first (an A or AAAA record), or "
            f"{hint}"
        ]
    return []


def connection_problem(exc: BaseException, url: str) -> str:
    """What failed when ``url`` could not be fetched, in words, with what to try: not a class name."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        host, port = url, 0
    if ":" in host:  # an IPv6 address, as a URL writes it: [::1]:8480
        host = f"[{host}]"
    causes: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(causes) < 10:
        causes.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(c, ssl.SSLCertVerificationError) for c in causes) or any(
        "CERTIFICATE_VERIFY_FAILED" in str(c) for c in causes
    ):
        return (
            f"TLS verification failed for {host}: its certificate is not one this machine trusts (a proxy still "
            "getting its certificate, or one signed by a private CA); check the name's DNS points at the Docker "
            "host and that ports 80 and 443 reach the proxy, so Caddy can get a public certificate"
        )
    if any(isinstance(c, socket.gaierror) for c in causes) or any(
        "Name or service not known" in str(c) or "nodename nor servname" in str(c) for c in causes
    ):
        return f"{host} does not resolve: check the name, and its DNS record (an A or AAAA record for the Docker host)"
    if any(isinstance(c, ConnectionRefusedError) for c in causes) or any(
        "Connection refused" in str(c) for c in causes
    ):
        return (
            f"the connection to {host}:{port} was refused: nothing listens there; check that the port is the "
            "proxy's (PROXY_HTTP_PORT / PROXY_HTTPS_PORT) and that a firewall lets it through"
        )
    if isinstance(exc, httpx.TimeoutException) or any(isinstance(c, TimeoutError) for c in causes):
        return f"{host}:{port} did not answer in time: check that a firewall lets the port through"
    return f"{host}:{port} could not be reached ({logs.clean_line(str(exc)) or type(exc).__name__})"
