"""The Caddyfile of the shared proxy, as text: pure functions, no Docker.

One Caddy runs per Docker host, shared by every project made from this template. Its main
Caddyfile only imports one file per project (``sites/<slug>.caddy``); each project owns that
file alone: a site block keyed by its ``BACKEND_URL`` host, proxying to both colours of its app
(``<slug>-blue`` and ``<slug>-green``, network aliases of the release containers). Which colour
serves is a file, looked up on each request: ``live/<slug>/<slug>-green`` sends every request to
green first, with blue behind it should green refuse. A deploy starts the new colour, gates it on
its own health check, writes that file (the switch), and stops the old colour: Caddy's
configuration does not change and Caddy is not reloaded.

Caddy runs no active health checks: they would probe the idle colour, which does not run and so
does not resolve, every second, and log each failure. The colour that serves is the one the
deploy checked; a request that finds it refusing (a restart) is retried on the other colour and
the colour left out for a few seconds (passive checks).

A reload is graceful, but it closes idle keep-alive connections of *every* site, which a client
may be reusing at that instant (a request lost on another project's connection). So Caddy is
reloaded only when a project's site file appears or changes: its first deploy, a new
``BACKEND_URL``, a template update that changes the block. Deploys, rollbacks and maintenance
never reload: maintenance is a file (``maintenance/<slug>.json``) that the site block looks up
on each request. Removing a project does not reload either: its block stays in Caddy's running
configuration, answering an error for its host, until the next reload.

Slow clients are the proxy's to bear, so the app's stock gunicorn workers only ever get whole
requests: a client has ``READ_HEADER`` to send a request head and ``READ_BODY`` for the whole
request (the main Caddyfile's server timeouts), and each body, up to the app's limit and a byte
more (:func:`request_buffer`), is read before Caddy connects to the app (request buffering, in the
syntax of the proxy's Caddy: :func:`buffering`). A larger body streams on after that, to an app that
has refused it already. The buffers are Caddy's memory: each connection sending a body holds up to
that much until its request is answered or ``READ_BODY`` passes.

An ``https://`` BACKEND_URL gets Caddy's automatic HTTPS (certificates kept on the proxy's data
volume); an ``http://`` one (tests, a private network) is served on plain HTTP.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from cnd_toolkit.errors import OpsError
from cnd_toolkit.settings import whole_number

PROXY_NAME = "cnd-proxy"  # the one proxy container of a Docker host
PROXY_LABEL = "dev.copier-netlify-docker.proxy"
CONFIG_DIR = "/etc/caddy"
SITES_DIR = f"{CONFIG_DIR}/sites"
MAINTENANCE_DIR = f"{CONFIG_DIR}/maintenance"
SPLIT_DIR = f"{CONFIG_DIR}/split"
LIVE_DIR = f"{CONFIG_DIR}/live"
METRICS_DIR = f"{CONFIG_DIR}/metrics"
# Where Prometheus reads every project's /metrics through the proxy, as /<project>/metrics: on the
# proxy's Docker networks only (nothing publishes it). The app's own metrics listener (METRICS_PORT
# in the image) is what it forwards to.
METRICS_PORT = 9180
APP_METRICS_PORT = 9101
READ_HEADER = "10s"  # half-sent heads (slowloris) are dropped after this
READ_BODY = "30s"  # the whole request, body included: about 35 KB/s for a 1 MiB body
DEFAULT_BODY_LIMIT = 1024 * 1024  # the app's APP_MAX_REQUEST_BYTES, unless the release sets it
DEFAULT_REQUEST_BUFFER = DEFAULT_BODY_LIMIT + 1  # request_buffer(DEFAULT_BODY_LIMIT)
# A body is read up to its app's limit and one byte more: a body over the limit is then wholly in
# the buffer, so the app refuses it (413) without waiting on the rest. At most this much a request:
MAX_REQUEST_BUFFER = 16 * 1024 * 1024
MAIN = (
    "# The shared proxy of this Docker host, written by copier-netlify-docker. Each project owns one\n"
    "# file in sites/ and one in metrics/, and nothing else; edit those through `inv deploy`,\n"
    "# `inv rollback`, `inv maintenance`.\n"
    "{\n"
    "\tadmin localhost:2019\n"
    "\tservers " + "{\n"
    "\t\ttimeouts " + "{\n"
    f"\t\t\tread_header {READ_HEADER}\n"
    f"\t\t\tread_body {READ_BODY}\n"
    "\t\t}\n"
    "\t}\n"
    "}\n"
    "\n"
    "import sites/*.caddy\n"
    "\n"
    f"# Prometheus scrapes http://<this proxy>:{METRICS_PORT}/<project>/metrics from a container on one of\n"
    "# the proxy's networks; the port is not published on the host.\n"
    f":{METRICS_PORT} " + "{\n"
    "\timport metrics/*.caddy\n"
    "\thandle {\n"
    "\t\trespond 404\n"
    "\t}\n"
    "}\n"
)
# Hostnames and IP addresses, as they may appear in a site address: nothing Caddyfile syntax means.
_HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*)\Z")
BEGIN_BLOCK = "{"  # (not a doubled brace in an f-string: generated files carry no template syntax)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}\Z")


@dataclass(frozen=True)
class Site:
    """A project's site block: where it answers, and where it sends the requests."""

    slug: str
    backend_url: str
    upstreams: tuple[str, ...]  # host:port of each colour on the project's network, e.g. "orders-green:8080"
    retry_after: int = 120  # the Retry-After of the maintenance 503
    # On a swarm: the DNS name whose A records are the app's tasks (``tasks.<service>``); Caddy
    # looks it up every second, so tasks that start, stop or move are followed with no reload.
    # ``upstreams`` then holds the one port ("8080").
    dynamic: str = ""
    # A canary (one host) keeps each client on the colour it first got, by a cookie.
    sticky: bool = False
    request_buffer: int = DEFAULT_REQUEST_BUFFER  # request_buffer(the app's APP_MAX_REQUEST_BYTES)

    @property
    def address(self) -> str:
        return site_address(self.backend_url)

    @property
    def file_name(self) -> str:
        return site_file_name(self.slug)


def site_file_name(slug: str) -> str:
    if not _NAME.fullmatch(slug):
        raise OpsError(f"project name {slug!r} cannot name a proxy site file")
    return f"{slug}.caddy"


def site_address(backend_url: str) -> str:
    """The Caddy site address for ``backend_url``: the host alone for https (automatic HTTPS),
    ``http://host`` for plain HTTP. The URL's port is the host side of the proxy's published
    port (PROXY_HTTP_PORT / PROXY_HTTPS_PORT), not Caddy's."""
    try:
        parts = urlsplit(backend_url)
        host = (parts.hostname or "").lower()
        _ = parts.port  # a port that is not a number is refused here
    except ValueError:
        raise OpsError(f"BACKEND_URL={backend_url!r} is not a plain origin (scheme, host, optional port)") from None
    if parts.scheme not in {"http", "https"} or not host:
        raise OpsError(f"BACKEND_URL={backend_url!r} is not an http(s) origin, for example https://api.example.com")
    shown = f"[{host}]" if ":" in host else host
    if not _HOST.fullmatch(shown) or parts.path not in {"", "/"} or parts.query or parts.fragment or parts.username:
        raise OpsError(f"BACKEND_URL={backend_url!r} is not a plain origin (scheme, host, optional port)")
    return shown if parts.scheme == "https" else f"http://{shown}"


def metrics_file_name(slug: str) -> str:
    return site_file_name(slug)


def render_metrics(site: Site) -> str:
    """The text of the project's file in metrics/: ``/<slug>/metrics`` on the proxy's metrics port,
    forwarded to the app's metrics listener: the live colour's (the one its file in live/ names,
    as the site does; without a file, blue first), or on a swarm any task's."""
    head = f"# {site.slug}: /{site.slug}/metrics for Prometheus; written by copier-netlify-docker (inv deploy).\n"
    # Exactly /<slug>/metrics, compared with the path as the client sent it (decoded): Caddy's
    # path matchers ignore case and match the cleaned path, where //, /./ and /../ have gone.
    # (A slug is letters, digits, '-', '_' and '.': nothing to quote in the expression.)
    expression = "`" + BEGIN_BLOCK + 'http.request.orig_uri.path} == "/' + site.slug + '/metrics"`'
    if site.dynamic:
        dynamic = (
            "\t\tdynamic a " + BEGIN_BLOCK + "\n"
            f"\t\t\tname {site.dynamic}\n"
            f"\t\t\tport {APP_METRICS_PORT}\n"
            "\t\t\trefresh 1s\n"
            "\t\t}\n"
        )
        return head + _metrics_handle(site.slug, expression, "", dynamic)
    out = head
    for index, ordered in enumerate(_live_orders(site)):
        live = (
            "\tfile " + BEGIN_BLOCK + "\n"
            f"\t\troot {live_dir(site.slug)}\n"
            f"\t\ttry_files /{live_file(ordered[0])}\n"
            "\t}\n"
        )
        out += _metrics_handle(f"{site.slug}_live{index}", expression, live, _metrics_hosts(ordered))
    return out + _metrics_handle(site.slug, expression, "", _metrics_hosts(site.upstreams))


def _metrics_hosts(upstreams: tuple[str, ...]) -> str:
    return " ".join(f"{u.rpartition(':')[0]}:{APP_METRICS_PORT}" for u in upstreams)


def _metrics_handle(name: str, expression: str, live: str, upstreams: str) -> str:
    """A route of the metrics port: its matcher (the path, and the live file if any) and its proxy."""
    if live:
        matcher = f"@metrics_{name} " + BEGIN_BLOCK + f"\n\texpression {expression}\n{live}" + "}\n"
    else:
        matcher = f"@metrics_{name} expression {expression}\n"
    if upstreams.startswith("\t"):  # a swarm's: a dynamic block
        proxying = "\treverse_proxy " + BEGIN_BLOCK + "\n" + upstreams
    else:
        proxying = f"\treverse_proxy {upstreams} " + BEGIN_BLOCK + "\n\t\tlb_policy first\n"
    return (
        matcher + f"handle @metrics_{name} " + BEGIN_BLOCK + "\n"
        "\trewrite * /metrics\n" + proxying + _METRICS_RETRIES + "\t}\n}\n"
    )


# A stopped colour does not resolve: the scrape goes to the one that runs.
_METRICS_RETRIES = "\t\tlb_try_duration 2s\n\t\tfail_duration 5s\n"


def _live_orders(site: Site) -> list[tuple[str, ...]]:
    """Each colour first with the others behind it, in the site's order."""
    return [(upstream, *[u for u in site.upstreams if u != upstream]) for upstream in site.upstreams]


def live_dir(slug: str) -> str:
    """The directory whose one file names the project's live colour (``<slug>-blue``)."""
    site_file_name(slug)  # refuses a name that could leave the directory
    return f"{LIVE_DIR}/{slug}"


def live_file(upstream: str) -> str:
    """The name of the file that makes ``upstream`` (host:port) the live colour: its host."""
    return upstream.rpartition(":")[0]


def request_buffer(body_limit: int) -> int:
    """How much of a request's body the proxy reads before the app gets it, for an app whose limit
    (APP_MAX_REQUEST_BYTES) is ``body_limit``."""
    return min(max(body_limit, 0), MAX_REQUEST_BUFFER) + 1


def buffering(version: str, size: int) -> str:
    """The reverse_proxy lines that read a request's body, up to ``size`` bytes, before the app
    gets it, for the proxy's Caddy (``version`` as ``caddy version`` prints it, "" when unknown).
    Caddy 2.6.4 renamed them: ``buffer_requests`` with ``max_buffer_size`` before (gone in 2.8),
    ``request_buffers <size>`` since, which is also what an unknown version gets."""
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version.strip())
    if found and tuple(int(part) for part in found.groups()) < (2, 6, 4):
        return f"\t\t\tbuffer_requests\n\t\t\tmax_buffer_size {int(size)}\n"
    return f"\t\t\trequest_buffers {int(size)}\n"


def render(site: Site, version: str = "") -> tuple[str, str]:
    """The project's two files in the proxy: its site, and its metrics route."""
    return render_site(site, version), render_metrics(site)


def upstream(name: str, port: int) -> str:
    if not _NAME.fullmatch(name) or not 1 <= port <= 65535:
        raise OpsError(f"{name}:{port} is not an upstream address")
    return f"{name}:{port}"


def maintenance_file(slug: str) -> str:
    """The file whose presence puts ``slug``'s site in maintenance (its body is the 503's)."""
    return f"{MAINTENANCE_DIR}/{site_file_name(slug).removesuffix('.caddy')}.json"


def maintenance_body(retry_after: int) -> str:
    body = {
        "error": {
            "status": 503,
            "code": "maintenance",
            "message": f"The service is under maintenance; retry in {retry_after} s.",
        }
    }
    return json.dumps(body, separators=(",", ":"))


def served_address(text: str) -> str:
    """The site address a file :func:`render_site` wrote serves ("" if it is not one of ours)."""
    for line in text.splitlines():
        if line and not line.startswith(("#", "\t", " ")) and line.endswith(" " + BEGIN_BLOCK):
            return line.removesuffix(" " + BEGIN_BLOCK)
    return ""


def render_site(site: Site, version: str = "") -> str:
    """The text of the project's file in sites/, for the proxy's Caddy ``version`` (:func:`buffering`)."""
    head = (
        f"# {site.slug}: written by copier-netlify-docker (inv deploy, rollback, maintenance); "
        "edits here are replaced.\n"
    )
    marker = maintenance_file(site.slug)
    directory, _, name = marker.rpartition("/")
    buffer = buffering(version, site.request_buffer)
    split_matchers, split_handles = ("", "") if site.dynamic else _split_routes(site, buffer)
    live_routes = "" if site.dynamic else _live_routes(site, buffer)
    return (
        f"{head}{site.address} "
        + BEGIN_BLOCK
        + "\n"
        + split_matchers
        +
        # Maintenance is a file, looked up on each request: switching it on or off needs no reload.
        "\t@maintenance file "
        + BEGIN_BLOCK
        + "\n"
        f"\t\troot {directory}\n"
        f"\t\ttry_files {name}\n"
        "\t}\n"
        "\thandle @maintenance " + BEGIN_BLOCK + "\n"
        f"\t\theader Content-Type application/json\n"
        f"\t\theader Retry-After {int(site.retry_after)}\n"
        "\t\theader Cache-Control no-store\n"
        "\t\theader -Etag\n"
        "\t\theader -Last-Modified\n"
        "\t\theader -Accept-Ranges\n"
        f"\t\troot * {directory}\n"
        f"\t\trewrite * /{name}\n"
        "\t\tfile_server " + BEGIN_BLOCK + "\n"
        "\t\t\tstatus 503\n"
        "\t\t}\n"
        "\t}\n"
        + split_handles
        + live_routes
        + "\thandle "
        + BEGIN_BLOCK
        + "\n"
        + (_dynamic_upstreams(site) if site.dynamic else _colour_upstreams(site.upstreams))
        + buffer
        + _RETRIES
        + "\t\t}\n"
        "\t}\n"
        "}\n"
    )


def _colour_upstreams(upstreams: tuple[str, ...]) -> str:
    """The colours in order, the first tried first (no active checks: see the module's docstring)."""
    return f"\t\treverse_proxy {' '.join(upstreams)} " + BEGIN_BLOCK + "\n\t\t\tlb_policy first\n"


def _live_routes(site: Site, buffer: str) -> str:
    """A file matcher per colour on the project's live directory, and a handle sending to that
    colour first. Without a live file (a site an earlier version wrote, until its next deploy), the
    last handle sends to blue first."""
    out = ""
    for index, ordered in enumerate(_live_orders(site)):
        out += (
            f"\t@live{index} file " + BEGIN_BLOCK + "\n"
            f"\t\troot {live_dir(site.slug)}\n"
            f"\t\ttry_files /{live_file(ordered[0])}\n"
            "\t}\n"
            f"\thandle @live{index} "
            + BEGIN_BLOCK
            + "\n"
            + _colour_upstreams(ordered)
            + buffer
            + _RETRIES
            + "\t\t}\n\t}\n"
        )
    return out


# A request that finds an upstream down (stopping, not yet checked) is tried on another.
_RETRIES = "\t\t\tlb_try_duration 10s\n\t\t\tlb_try_interval 50ms\n\t\t\tfail_duration 5s\n"

# A canary's split, with no reload: each request falls in one of 256 buckets (the first two hex
# digits of its random UUID; with a sticky canary, kept in a cookie), and a file
# ``<bucket>.<upstream host>`` in the project's split directory sends that bucket to that colour
# (or, while that colour is down, to the other). No file: the live colour. Changing the split
# is writing files, like maintenance. A reload would close Caddy's idle keep-alive connections,
# and a client that sent a request on one just then gets no answer: measured, 4 of 17,000
# requests failed over a canary's three reloads.
SPLIT_BUCKETS = 256
STICKY_COOKIE = "cnd_bucket"
BUCKET = BEGIN_BLOCK + "cnd_bucket}"  # the placeholder the map sets


def split_dir(slug: str) -> str:
    site_file_name(slug)  # refuses a name that could leave the directory
    return f"{SPLIT_DIR}/{slug}"


def bucket_names() -> list[str]:
    return [f"{n:02x}" for n in range(SPLIT_BUCKETS)]


def split_file(bucket: str, upstream: str) -> str:
    """The name of the file that sends ``bucket`` to ``upstream`` (its host, without the port)."""
    return f"{bucket}.{upstream.rpartition(':')[0]}"


def _split_routes(site: Site, buffer: str) -> tuple[str, str]:
    """The map that gives each request its bucket with a file matcher per colour, and a handle per colour."""
    if site.sticky:
        bucket = (
            "\tmap {http.request.uuid} {cnd_fresh} " + BEGIN_BLOCK + "\n"
            '\t\t~^(..) "${1}"\n'
            "\t}\n"
            "\tmap {http.request.cookie." + STICKY_COOKIE + "} {cnd_bucket} " + BEGIN_BLOCK + "\n"
            '\t\t~^([0-9a-f]{2})$ "${1}"\n'
            "\t\tdefault {cnd_fresh}\n"
            "\t}\n"
            f'\theader Set-Cookie "{STICKY_COOKIE}=' + BUCKET + '; Path=/; Max-Age=86400; SameSite=Lax; HttpOnly"\n'
        )
    else:
        bucket = "\tmap {http.request.uuid} {cnd_bucket} " + BEGIN_BLOCK + "\n" + '\t\t~^(..) "${1}"\n' + "\t}\n"
    matchers = handles = ""
    for index, upstream in enumerate(site.upstreams):
        matchers += (
            f"\t@split{index} file " + BEGIN_BLOCK + "\n"
            f"\t\troot {split_dir(site.slug)}\n"
            f"\t\ttry_files /{BUCKET}.{upstream.rpartition(':')[0]}\n"
            "\t}\n"
        )
        # The bucket's colour first, the other behind it (lb_policy first): a split file that names
        # a colour that is down (a canary that died, files a killed deploy left) costs no request:
        # its dial fails and the request goes to the other.
        ordered = (upstream, *[u for u in site.upstreams if u != upstream])
        handles += f"\thandle @split{index} " + BEGIN_BLOCK + "\n" + _colour_upstreams(ordered) + buffer + _RETRIES
        handles += "\t\t}\n\t}\n"
    return bucket + matchers, handles


def _dynamic_upstreams(site: Site) -> str:
    """A swarm service's tasks, found by DNS. Swarm puts a task in the name's answers once its
    health check passes and takes it out before it stops it, so the name is the health gate;
    Caddy's passive checks (a task that refuses or resets a connection is left out for 5 s) and
    retries cover the second between a change and the next lookup."""
    (port,) = site.upstreams
    if not _NAME.fullmatch(site.dynamic) or whole_number(port, 1, 65535) is None:
        raise OpsError(f"{site.dynamic}:{port} is not an upstream address")
    return (
        "\t\treverse_proxy " + BEGIN_BLOCK + "\n"
        "\t\t\tdynamic a " + BEGIN_BLOCK + "\n"
        f"\t\t\t\tname {site.dynamic}\n"
        f"\t\t\t\tport {port}\n"
        "\t\t\t\trefresh 1s\n"
        "\t\t\t}\n"
        "\t\t\ttransport http " + BEGIN_BLOCK + "\n"
        # A killed task's address answers nothing at all: give up on it quickly and try another.
        "\t\t\t\tdial_timeout 500ms\n"
        "\t\t\t}\n"
    )
