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

from ops import logs
from ops.docker import images
from ops.docker.engine import client_is_local
from ops.release import proxy
from ops.settings import is_loopback

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
    """The registry of ``repository`` answers the engine and accepts the login (when there is one).

    With a login, the engine checks it with the registry (``docker login``). Without one, the
    engine asks the registry for a tag that need not exist, with the credentials `docker login`
    stored (the SDK sends them): "not found" means it answered and let us ask. What the engine or
    the registry said is scrubbed of the password in every form before it is shown.
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
    lowered = said.lower()
    if any(word in lowered for word in ("manifest unknown", "not found", "name unknown", "no such manifest")):
        return []
    fix = (
        "check REGISTRY_USERNAME and REGISTRY_PASSWORD (a token that may push to IMAGE)"
        if username
        else "set REGISTRY_USERNAME and REGISTRY_PASSWORD (a token that may push to IMAGE), or `docker login` there"
    )
    refused_words = ("unauthorized", "denied", "authentication required", "incorrect", "401")
    if status in {401, 403} or any(word in lowered for word in refused_words):
        return [f"the registry {host} refused IMAGE={repository} ({said}): {fix}"]
    return [
        f"the registry {host} of IMAGE={repository} did not answer the Docker host as expected ({said}): check the "
        f"host name and that the Docker host reaches it, and {fix}; for a deploy without a registry, "
        "REGISTRY_PUSH=off (DEPLOY_TARGET=host), as `.env.local` does"
    ]


# Names Caddy does not ask a public CA for: it signs them with its own local CA (and IP addresses too).
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")


def _internal_name(host: str) -> bool:
    host = host.lower().removesuffix(".")
    return host == "localhost" or host.endswith(_INTERNAL_SUFFIXES)


def backend_url(url: str) -> list[str]:
    """BACKEND_URL can be confirmed from this machine once the release serves: its host resolves
    here, and an https one is not a name Caddy can only sign with its own local CA."""
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
            f"through it. Use a public DNS name for https, or http:// for this machine: {LOCAL_HINT}"
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
                f"not confirm the release through it: use http://127.0.0.1:PORT or http://localhost:PORT; {LOCAL_HINT}"
            ]
        return [
            f"BACKEND_URL={url}: {host} does not resolve on this machine, so the deploy could not confirm the "
            "release through it: point the name's DNS at the Docker host first (an A or AAAA record), or "
            f"{LOCAL_HINT}"
        ]
    return []


def connection_problem(exc: BaseException, url: str) -> str:
    """What failed when ``url`` could not be fetched, in words, with what to try: not a class name."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        host, port = url, 0
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
