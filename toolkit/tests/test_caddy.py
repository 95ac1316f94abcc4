"""cnd_toolkit.release.caddy: the proxy's Caddyfile, read back by Caddy's own parser (`caddy adapt`)."""

from __future__ import annotations

import json
import random
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cnd_toolkit import project
from cnd_toolkit.errors import OpsError
from cnd_toolkit.release import caddy, deploy
from cnd_toolkit.settings import SettingsError, load

from tests.conftest import needed_tool


@pytest.fixture(scope="module")
def caddy_bin() -> str:
    return needed_tool("caddy", "to check the proxy's Caddyfile")


@cache
def version_of(caddy_bin: str) -> str:
    return subprocess.run([caddy_bin, "version"], capture_output=True, text=True, timeout=30, check=True).stdout


def adapt(caddy_bin: str, tmp_path: Path, sites: list[caddy.Site]) -> dict[str, Any]:
    """What Caddy makes of the main Caddyfile and these sites' files (in this Caddy's syntax): its JSON config."""
    (tmp_path / "sites").mkdir(exist_ok=True)
    (tmp_path / "metrics").mkdir(exist_ok=True)
    (tmp_path / "Caddyfile").write_text(caddy.MAIN)
    for site in sites:
        site_text, metrics_text = caddy.render(site, version_of(caddy_bin))
        (tmp_path / "sites" / site.file_name).write_text(site_text)
        (tmp_path / "metrics" / caddy.metrics_file_name(site.slug)).write_text(metrics_text)
    result = subprocess.run(
        [caddy_bin, "adapt", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def routes_by_host(config: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    found = {}
    for server in config["apps"]["http"]["servers"].values():
        for route in server["routes"]:
            for host in route.get("match", [{}])[0].get("host", []):
                found[host] = (",".join(server["listen"]), route)
    return found


def handlers(route: dict[str, Any]) -> list[dict[str, Any]]:
    """Every handler under a route, subroutes flattened."""
    out = []
    for handler in route["handle"]:
        out.append(handler)
        for sub in handler.get("routes", []):
            out.extend(handlers(sub))
    return out


def test_projects_each_own_a_site_proxied_to_their_live_colour(caddy_bin: str, tmp_path: Path) -> None:
    sites = [
        caddy.Site(
            "orders",
            "https://api.orders.example.com",
            (caddy.upstream("orders-blue", 8080), caddy.upstream("orders-green", 8080)),
        ),
        caddy.Site("billing", "http://127.0.0.2:18080", (caddy.upstream("billing-blue", 9000),)),
    ]
    routes = routes_by_host(adapt(caddy_bin, tmp_path, sites))
    assert set(routes) == {"api.orders.example.com", "127.0.0.2"}
    listen, route = routes["api.orders.example.com"]
    assert listen == ":443"  # automatic HTTPS for an https:// BACKEND_URL
    # A handler per colour for a canary's split (see below), one per live colour, and one for a
    # site with no live file yet: every one the colours in order, the first tried first.
    *_, proxy = [h for h in handlers(route) if h["handler"] == "reverse_proxy"]
    assert proxy["upstreams"] == [{"dial": "orders-blue:8080"}, {"dial": "orders-green:8080"}]
    assert proxy["load_balancing"]["selection_policy"] == {"policy": "first"}
    assert proxy["load_balancing"]["try_duration"] == 10_000_000_000
    assert proxy["health_checks"] == {"passive": {"fail_duration": 5_000_000_000}}
    listen, route = routes["127.0.0.2"]
    assert listen == ":80"  # plain HTTP, published on the host's PROXY_HTTP_PORT
    proxies = [h["upstreams"] for h in handlers(route) if h["handler"] == "reverse_proxy"]
    assert proxies[-1] == [{"dial": "billing-blue:9000"}]


def test_caddy_probes_no_colour_and_the_live_file_picks_the_one_tried_first(caddy_bin: str, tmp_path: Path) -> None:
    """No active health check anywhere (it would probe the idle colour, which does not run, every
    second and log each failure). A file in live/<slug>/ named after a colour sends every request
    to that colour first, the other behind it; no file: blue first."""
    upstreams = ("orders-blue:8080", "orders-green:8080")
    site = caddy.Site("orders", "http://orders.internal", upstreams)
    config = adapt(caddy_bin, tmp_path, [site])
    assert '"active"' not in json.dumps(config) and "health_uri" not in "".join(caddy.render(site))
    _, route = routes_by_host(config)["orders.internal"]
    lived = [r for r in route["handle"][0]["routes"] if caddy.live_dir("orders") in json.dumps(r.get("match", ""))]
    firsts = {}
    for candidate in lived:
        [matcher] = candidate["match"]
        [file_name] = matcher["file"]["try_files"]
        [proxying] = [h for h in handlers(candidate) if h["handler"] == "reverse_proxy"]
        firsts[file_name] = [u["dial"] for u in proxying["upstreams"]]
    assert firsts == {
        "/" + caddy.live_file(upstreams[0]): ["orders-blue:8080", "orders-green:8080"],
        "/" + caddy.live_file(upstreams[1]): ["orders-green:8080", "orders-blue:8080"],
    }
    assert caddy.live_file("orders-green:8080") == "orders-green"
    for slug in ("../x", "a/b", "orders\n"):
        with pytest.raises(OpsError):
            caddy.live_dir(slug)


def test_a_swarm_site_follows_its_service_tasks_by_dns_with_passive_checks(caddy_bin: str, tmp_path: Path) -> None:
    site = caddy.Site("orders", "https://api.orders.example.com", ("8080",), dynamic="tasks.orders")
    _, route = routes_by_host(adapt(caddy_bin, tmp_path, [site]))["api.orders.example.com"]
    [proxy] = [h for h in handlers(route) if h["handler"] == "reverse_proxy"]
    dynamic = {"source": "a", "name": "tasks.orders", "port": "8080", "refresh": 1_000_000_000}
    assert proxy["dynamic_upstreams"] == dynamic
    assert "upstreams" not in proxy and "active" not in proxy.get("health_checks", {})
    assert proxy["health_checks"]["passive"]["fail_duration"] == 5_000_000_000
    assert proxy["transport"]["dial_timeout"] == 500_000_000
    assert proxy["load_balancing"]["try_duration"] == 10_000_000_000
    for name, port in [("tasks.orders;x", "8080"), ("tasks.orders", "80 80"), ("tasks.orders", "0")]:
        with pytest.raises(OpsError, match=r"is not an upstream address"):
            caddy.render_site(caddy.Site("orders", "https://api.orders.example.com", (port,), dynamic=name))


def test_slow_clients_stop_at_the_proxy_heads_in_10_s_requests_in_30_s_bodies_read_first(
    caddy_bin: str, tmp_path: Path
) -> None:
    """Every server has the read timeouts, and every handler that sends to the app (each colour's
    order, each canary bucket, a swarm's tasks) reads the body, up to 1 MiB, before it does."""
    sites = [
        caddy.Site("orders", "http://orders.internal", ("orders-blue:8080", "orders-green:8080"), sticky=True),
        caddy.Site("billing", "http://billing.internal", ("8080",), dynamic="tasks.billing"),
    ]
    config = adapt(caddy_bin, tmp_path, sites)
    servers = config["apps"]["http"]["servers"].values()
    assert {(s.get("read_header_timeout"), s.get("read_timeout")) for s in servers} == {(10 * 10**9, 30 * 10**9)}
    app_proxies = [
        h
        for listen, route in routes_by_host(config).values()
        for h in handlers(route)
        if h["handler"] == "reverse_proxy"
    ]
    assert len(app_proxies) == 1 + 2 + 2 + 1  # no live file, two live colours, two canary buckets, the swarm
    (shape,) = {(h.get("buffer_requests"), h.get("max_buffer_size"), h.get("request_buffers")) for h in app_proxies}
    size = caddy.DEFAULT_BODY_LIMIT + 1  # the app's default limit and a byte: a body over it is refused from the buffer
    assert shape in {(True, size, None), (None, None, size)}, shape


@pytest.mark.parametrize(
    ("version", "old"),
    [
        ("v2.6.2 h1:wKoF=", True),
        ("v2.6.3", True),
        ("2.5.0", True),
        ("v2.6.4 h1:x", False),
        ("v2.10.0 h1:x", False),
        ("v3.0.0", False),
        ("", False),
        ("(devel)", False),
        ("v2.6", False),
    ],
)
def test_the_buffering_is_written_in_the_syntax_of_the_proxys_caddy(version: str, old: bool) -> None:
    """Caddy 2.6.4 renamed it (buffer_requests, gone in 2.8, became request_buffers): an older
    proxy gets the old words, and anything newer or unknown the new ones."""
    lines = caddy.buffering(version, 2049)
    assert ("buffer_requests" in lines, "request_buffers" in lines) == (old, not old)
    assert " 2049\n" in lines


@pytest.mark.parametrize(
    ("limit", "size"), [(1024, 1025), (1024 * 1024, 1024 * 1024 + 1), (10**12, 16 * 1024 * 1024 + 1), (0, 1)]
)
def test_the_buffer_is_the_apps_body_limit_and_a_byte_up_to_16_mib(limit: int, size: int) -> None:
    assert caddy.request_buffer(limit) == size
    assert caddy.Site("x", "https://x", ("x:1",)).request_buffer == caddy.request_buffer(caddy.DEFAULT_BODY_LIMIT)


def test_the_buffer_follows_the_releases_limit_even_where_app_env_is_refused(tmp_path: Path) -> None:
    """Every task that opens the backend (`inv status`, `releases`, `remove`) builds the target: an
    APP_ENV that hands the app a deploy secret is the deploy's to refuse, and must not stop them."""
    (tmp_path / ".env").write_text("APP_MAX_REQUEST_BYTES=2048\nAPP_ENV=NETLIFY_AUTH_TOKEN\n")
    settings = load(tmp_path, environ={})
    with pytest.raises(SettingsError, match="NETLIFY_AUTH_TOKEN"):
        settings.runtime_environment()
    assert deploy.target(project.load(), settings).request_buffer == 2049
    (tmp_path / ".env").write_text("APP_MAX_REQUEST_BYTES=lots\n")  # the release's start-up refuses it
    assert deploy.target(project.load(), load(tmp_path, environ={})).request_buffer == caddy.DEFAULT_BODY_LIMIT + 1


def test_the_local_caddy_refuses_the_other_syntax(caddy_bin: str, tmp_path: Path) -> None:
    """The version choice matters: this machine's Caddy refuses the syntax of the other side of 2.6.4."""
    mine = version_of(caddy_bin)
    other = "v2.10.0" if caddy.buffering(mine, 1) != caddy.buffering("v2.10.0", 1) else "v2.6.2"
    site = caddy.Site("orders", "http://orders.internal", ("orders-blue:8080",))
    (tmp_path / "Caddyfile").write_text(caddy.render_site(site, other))
    result = subprocess.run(
        [caddy_bin, "adapt", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "unrecognized subdirective" in result.stderr, (mine, result.stderr)


def test_no_project_yet_is_a_valid_config(caddy_bin: str, tmp_path: Path) -> None:
    config = adapt(caddy_bin, tmp_path, [])
    assert config["admin"]["listen"] == "localhost:2019"


def test_maintenance_is_a_file_the_site_looks_up_on_each_request(caddy_bin: str, tmp_path: Path) -> None:
    """No reload turns maintenance on or off: the block matches when maintenance/<slug>.json exists
    and serves it as a 503 with Retry-After; otherwise the request goes to the app."""
    site = caddy.Site("orders", "https://api.orders.example.com", ("orders-green:8080",), retry_after=90)
    _, route = routes_by_host(adapt(caddy_bin, tmp_path, [site]))["api.orders.example.com"]
    [guarded] = [
        r for h in route["handle"] for r in h["routes"] if "maintenance" in json.dumps(r.get("match", ""))
    ]  # fmt: skip
    [matcher] = guarded["match"]
    assert matcher["file"] == {"root": caddy.MAINTENANCE_DIR, "try_files": ["orders.json"]}
    assert caddy.maintenance_file("orders") == f"{caddy.MAINTENANCE_DIR}/orders.json"
    inside = handlers(guarded)
    [served] = [h for h in inside if h["handler"] == "file_server"]
    assert served["status_code"] == 503
    [rewrite] = [h for h in inside if h["handler"] == "rewrite"]
    assert rewrite["uri"] == "/orders.json"
    headers = {k: v for h in inside if h["handler"] == "headers" for k, v in h["response"].get("set", {}).items()}
    assert headers["Retry-After"] == ["90"] and headers["Content-Type"] == ["application/json"]
    assert not [h for h in inside if h["handler"] == "reverse_proxy"]
    body = json.loads(caddy.maintenance_body(90))
    assert body["error"]["code"] == "maintenance" and "90 s" in body["error"]["message"]


HOSTILE_PIECES = [
    " ", "\t", "\n", "\r", "{", "}", "`", '"', "'", "#", "\\", "$", ";", "@", "*", "<", ">", "%0a", "\x00", "\x1b",
    "é", "ß", "/path", "?q=1", "#frag", "user@", "import ", "..", "_", "--",
]  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
def test_every_backend_url_renders_to_a_config_caddy_accepts_or_is_refused(
    caddy_bin: str, tmp_path: Path, seed: int
) -> None:
    """Seeded hostile origins: each is refused with a message naming BACKEND_URL, or is a site
    Caddy parses to exactly one route for exactly that host (no injected directive or site)."""
    rng = random.Random(seed)
    accepted: list[tuple[str, str]] = []
    for i in range(40):
        host = rng.choice(["api.example.com", "127.0.0.1", "x", "a-b.c", "[::1]", "API.Example.COM"])
        cut = rng.randrange(len(host) + 1)
        hostile = host[:cut] + rng.choice(HOSTILE_PIECES) + host[cut:] if rng.random() < 0.7 else host
        url = f"{rng.choice(['http', 'https'])}://{hostile}" + rng.choice(["", ":8443", ":0", "/"])
        try:
            site = caddy.Site(f"p{i}", url, ("app-blue:8080",))
            site.address  # noqa: B018 (validates)
        except OpsError as exc:
            assert "BACKEND_URL=" in str(exc)
            continue
        accepted.append((site.slug, site.address))
        case = tmp_path / f"{seed}-{i}"
        case.mkdir()
        routes = routes_by_host(adapt(caddy_bin, case, [site]))
        expected = site.address.removeprefix("http://").strip("[]")
        assert list(routes) == [expected], (url, routes)
    assert accepted, "the seed accepted nothing: it tests only refusals"


@pytest.mark.parametrize("slug", ["../x", "a b", "a\nb", "", "A", "x" * 200])
def test_a_site_file_name_is_always_a_plain_name(slug: str) -> None:
    with pytest.raises(OpsError):
        caddy.site_file_name(slug)


def test_every_projects_metrics_are_on_the_internal_port_under_its_name(caddy_bin: str, tmp_path: Path) -> None:
    sites = [
        caddy.Site("orders", "https://api.orders.example.com", ("orders-blue:8080", "orders-green:8080")),
        caddy.Site("order", "http://order.internal", ("order-blue:8000", "order-green:8000")),
        caddy.Site("shop", "https://shop.example.com", ("8080",), dynamic="tasks.shop"),
    ]
    config = adapt(caddy_bin, tmp_path, sites)
    servers = config["apps"]["http"]["servers"].values()
    (metrics,) = [s for s in servers if s["listen"] == [f":{caddy.METRICS_PORT}"]]
    by_path: dict[str, list[dict[str, Any]]] = {}
    for route in metrics["routes"]:
        expression = route.get("match", [{}])[0].get("expression", "(fallback)")
        by_path.setdefault(expression, []).append(route)
    # Exactly /<slug>/metrics as sent, case and all (Caddy's path matchers ignore case and clean the path).
    wanted = {caddy.BEGIN_BLOCK + 'http.request.orig_uri.path} == "/' + s.slug + '/metrics"': s for s in sites}
    assert set(by_path) == {*wanted, "(fallback)"}
    for expression, site in wanted.items():
        dials = []
        for route in by_path[expression]:
            found = handlers(route)
            assert {"handler": "rewrite", "uri": "/metrics"} in found
            (proxying,) = [h for h in found if h["handler"] == "reverse_proxy"]
            if site.dynamic:
                assert proxying["dynamic_upstreams"]["name"] == site.dynamic
                assert proxying["dynamic_upstreams"]["port"] == str(caddy.APP_METRICS_PORT)
            else:
                assert proxying["load_balancing"]["selection_policy"] == {"policy": "first"}
                dials.append([u["dial"] for u in proxying["upstreams"]])
        if not site.dynamic:  # the live colour's first (by its file), then blue first with no file
            blue, green = (f"{site.slug}-{c}:{caddy.APP_METRICS_PORT}" for c in ("blue", "green"))
            assert dials == [[blue, green], [green, blue], [blue, green]]
    [fallback_route] = by_path["(fallback)"]
    fallback = handlers(fallback_route)
    assert any(h.get("status_code") == 404 for h in fallback)
    # The public sites never reach the metrics listener.
    public = json.dumps([s for s in servers if s["listen"] != [f":{caddy.METRICS_PORT}"]])
    assert f":{caddy.APP_METRICS_PORT}" not in public and '"port": "9101"' not in public


@pytest.mark.parametrize("sticky", [False, True])
def test_a_canary_split_is_files_per_request_bucket_with_the_usual_rotation_behind(
    caddy_bin: str, tmp_path: Path, sticky: bool
) -> None:
    """No weights in the config (changing them would need a reload): a map gives each request a
    bucket, a file matcher per colour looks the bucket up in the split directory, and without a
    file the request goes to the live colour."""
    upstreams = ("orders-blue:8080", "orders-green:8080")
    site = caddy.Site("orders", "https://api.orders.example.com", upstreams, sticky=sticky)
    config = adapt(caddy_bin, tmp_path, [site])
    (server,) = [s for s in config["apps"]["http"]["servers"].values() if s["listen"] != [f":{caddy.METRICS_PORT}"]]
    text = json.dumps(server)
    for host in ("orders-blue", "orders-green"):
        assert '"/' + caddy.BUCKET + "." + host + '"' in text
    assert caddy.split_dir("orders") in text and '"{http.request.uuid}"' in text
    proxying = [h for r in server["routes"] for h in handlers(r) if h["handler"] == "reverse_proxy"]
    dials = [[u["dial"] for u in h["upstreams"]] for h in proxying]
    blue_first, green_first = ["orders-blue:8080", "orders-green:8080"], ["orders-green:8080", "orders-blue:8080"]
    # The split's handles (a bucket's colour first, the other behind it: a file naming a colour
    # that is down costs nothing), then the live colour's, then no live file's.
    assert dials == [blue_first, green_first, blue_first, green_first, blue_first]
    policies = [h.get("load_balancing", {}).get("selection_policy", {}).get("policy") for h in proxying]
    assert policies == ["first"] * 5
    assert ("Set-Cookie" in text) is sticky
    assert caddy.split_file("0a", "orders-green:8080") == "0a.orders-green"
    assert len(caddy.bucket_names()) == caddy.SPLIT_BUCKETS == len(set(caddy.bucket_names()))
    with pytest.raises(OpsError):
        caddy.split_dir("../x")
