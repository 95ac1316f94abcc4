"""Our deploy against netlify-cli's own ``netlify deploy``, both into the generated project's local Netlify.

netlify-cli is Netlify's reference client: it uploads its resolved config as the deploy's
``netlify.toml`` (``hashConfig``) with the rules of ``_redirects`` and ``_headers`` merged into it.
A generated project's ``inv deploy`` uploads ``_redirects`` as it is and only the served part of
its netlify.toml. Both ways must serve the same site: the rendered project, with redirects added
to its netlify.toml and its ``/api/*`` rule pointing at a local origin, is deployed once by each
(``cnd_toolkit.netlify.publish`` from the render, and the real ``netlify deploy --no-build``) into one
``tests/netlify_api.py`` server, and every path of :data:`PATHS` must answer the same status,
``Location``, custom headers and body from both drafts.

The one difference kept: netlify-cli does not upload ``_redirects`` and ``_headers`` (its deploy
filter: "headers and redirects are bundled in the config"), ours uploads ``_redirects``, so
``/_redirects`` is a file of our deploy only. What netlify-cli uploads as ``netlify.toml`` also
holds the build settings (the build environment too); ours holds the served part alone.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import httpx
import pytest

from tools.generated import TOOLKIT, render

TOKEN = "nfp_cli_compare_token_0123456789abcdef"
ADDED = """
[[redirects]]
  from = "/old-page"
  to = "/"
  status = 301

[[redirects]]
  from = "/first"
  to = "/first-wins"
  status = 302

[[redirects]]
  from = "/first"
  to = "/second-loses"
  status = 302

[[redirects]]
  from = "/app/*"
  to = "/index.html"
  status = 200

[[redirects]]
  from = "/closed"
  to = "/404.html"
  status = 404
"""
PATHS = [
    "/", "/index.html", "/styles.css", "/app.js", "/favicon.svg", "/404.html", "/missing", "/assets/none.css",
    "/old-page", "/old-page?from=mail", "/first", "/app/deep/link", "/closed", "/api/version?x=1", "/api/a/b",
    "/_headers",
]  # fmt: skip
# Headers each answer carries of its own, not the site's.
OWN = {"date", "server", "content-length"}


class Origin(BaseHTTPRequestHandler):
    """A local origin for the /api/* proxy rule: answers with what it received."""

    def do_GET(self) -> None:
        body = json.dumps({"method": self.command, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


def generated_modules() -> SimpleNamespace:
    """The toolkit's cnd_toolkit.netlify modules and its tests/netlify_api.py (loaded under another
    name: the toolkit's ``tests`` package cannot be imported beside this repository's)."""
    publish = importlib.import_module("cnd_toolkit.netlify.publish")
    redirects = importlib.import_module("cnd_toolkit.netlify.redirects")
    api = importlib.import_module("cnd_toolkit.netlify.api")
    spec = importlib.util.spec_from_file_location("generated_netlify_api", TOOLKIT / "tests/netlify_api.py")
    assert spec and spec.loader
    fake: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = fake  # dataclasses look their module up while it loads
    spec.loader.exec_module(fake)
    return SimpleNamespace(publish=publish, redirects=redirects, api=api, fake=fake)


def answer(response: httpx.Response) -> tuple[int, str | None, dict[str, str], bytes]:
    headers = {k.lower(): v for k, v in response.headers.items() if k.lower() not in OWN}
    return response.status_code, response.headers.get("Location"), headers, response.content


def test_our_deploy_serves_what_netlify_clis_deploy_serves(tmp_path: Path, netlify_cli: str, origin: str) -> None:
    project = render(tmp_path / "svc", git=False)
    with (project / "netlify.toml").open("a") as toml:
        toml.write(ADDED)
    modules = generated_modules()
    # Netlify's build step, as each deploy context runs it: the /api/* rule for this BACKEND_URL.
    rules = project / "public" / "_redirects"
    rules.write_text(modules.redirects.render(rules.read_text(), origin))
    env = {**os.environ, "NETLIFY_AUTH_TOKEN": TOKEN, "NETLIFY_NO_UPDATE_NOTIFIER": "1", "BROWSER": "none"}
    with modules.fake.LocalNetlify(TOKEN) as netlify:
        with modules.api.NetlifyClient(TOKEN, netlify.api_url, sleep=lambda s: None) as client:
            files = modules.publish.site_files(project, origin)
            ours = modules.publish.deploy_draft(client, "site-1", files, poll_interval=0, sleep=lambda s: None)
        command = [netlify_cli, "deploy", "--no-build", "--dir", "public", "--site", "my-site", "--json"]
        done = subprocess.run(
            command, cwd=project, env={**env, "NETLIFY_API_URL": netlify.api_url},
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        theirs = json.loads(done.stdout)["deploy_url"].rstrip("/")
        [cli_deploy] = [d for d in netlify.deploys.values() if d.id != ours.deploy.id]
        uploaded = tomllib.loads(netlify.site_body(cli_deploy.id, "netlify.toml").decode())
        assert "_redirects" not in cli_deploy.files and "_redirects" in files.bodies
        mine_url = ours.deploy.url.rstrip("/")
        with httpx.Client(timeout=60) as http:
            differ = {}
            for path in PATHS:
                mine, cli = answer(http.get(mine_url + path)), answer(http.get(theirs + path))
                if mine != cli:
                    differ[path] = [
                        f"{what}: ours {a!r}, netlify-cli's {b!r}"
                        for what, a, b in zip(("status", "Location", "headers", "body"), mine, cli, strict=True)
                        if a != b
                    ]
            assert not differ, json.dumps(differ, indent=1)
            # The kept difference: /_redirects is a file of our deploy only.
            assert http.get(mine_url + "/_redirects").status_code == 200
            assert http.get(theirs + "/_redirects").status_code == 404
            served = http.get(mine_url + "/")
            assert served.headers["X-Frame-Options"] == "DENY"  # the comparison saw the headers
    # What netlify-cli uploads holds the build settings too; ours, the served part alone.
    assert "build" in uploaded and set(tomllib.loads(files.bodies["netlify.toml"].decode())) == {"headers", "redirects"}
