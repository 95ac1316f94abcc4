"""Differential test: the generated edge's conformance table, run against the real `netlify dev`.

Where Netlify's documentation leaves a behaviour open, the edge follows Netlify's own tools; this
runs the very table the generated project tests its edge with against netlify-cli, so the two
cannot drift apart. The few rows where netlify dev differs from production Netlify on purpose
are listed with the reason.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.helpers import unavailable
from tools.generated import REPO, TOOLKIT, free_port, render

# path -> why netlify dev differs from production Netlify there (the edge follows production)
DOCUMENTED_DIVERGENCES = {
    "/assets/site.css": "netlify dev sends Cache-Control: max-age=0 for every file; production applies [[headers]]",
    "/.secret": "netlify dev serves dotfiles from disk; a deploy never uploads them",
}


def load_table() -> ModuleType:
    """The toolkit's tests/test_edge.py, by path (its ``tests`` package is not this repository's)."""
    spec = importlib.util.spec_from_file_location("generated_test_edge", TOOLKIT / "tests" / "test_edge.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def agrees(response: httpx.Response, status: int, expected: str, headers: dict[str, str]) -> bool:
    """Whether a response is what a row of the edge's table expects."""
    redirect = 300 <= status < 400
    content_ok = response.headers.get("Location") == expected if redirect else expected in response.text
    headers_ok = all(response.headers.get(name) == value for name, value in headers.items())
    return response.status_code == status and content_ok and headers_ok


REDIRECT_PARSER = REPO / ".cache/netlify-tools/node_modules/@netlify/redirect-parser/lib/index.js"
PARSE_SCRIPT = """
import { parseAllRedirects } from %s;
const result = await parseAllRedirects({redirectsFiles: [process.argv[1]], netlifyConfigPath: process.argv[2]});
console.log(JSON.stringify({errors: result.errors.map(String), redirects: result.redirects}));
"""


def netlify_parse(site: Path) -> dict[str, Any]:
    """Netlify's own parser (@netlify/redirect-parser, shipped with netlify-cli) on a site's rules."""
    if not REDIRECT_PARSER.exists() or shutil.which("node") is None:
        unavailable("@netlify/redirect-parser is not installed (it comes with netlify-cli in .cache/netlify-tools)")
    script = PARSE_SCRIPT % json.dumps(str(REDIRECT_PARSER))
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script, str(site / "public" / "_redirects"), str(site / "netlify.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_the_edge_parses_rules_as_netlify_does(netlify_dev: tuple[str, ModuleType, Path]) -> None:
    _, table, site = netlify_dev
    theirs = netlify_parse(site)
    assert theirs["errors"] == []
    ours = table.load_site(site).redirects
    assert [(r.source, r.to, r.status, r.force, r.query, r.conditions) for r in ours] == [
        (r["from"], r["to"], r["status"], r["force"], r["query"], r["conditions"]) for r in theirs["redirects"]
    ]


def test_generated_rules_are_valid_for_netlifys_parser(tmp_path: Path) -> None:
    project = render(tmp_path / "svc", git=False)
    parsed = netlify_parse(project)
    assert parsed["errors"] == []
    first = parsed["redirects"][0]  # _redirects comes first: the block the build writes
    assert (first["from"], first["to"], first["status"], first["force"], first["proxy"]) == (
        "/api/*",
        "https://api.example.com/api/:splat",
        200,
        True,
        True,
    )


@pytest.fixture(scope="module")
def netlify_dev(tmp_path_factory: pytest.TempPathFactory, netlify_cli: str) -> Iterator[tuple[str, ModuleType, Path]]:
    cli = netlify_cli
    table = load_table()
    site = tmp_path_factory.mktemp("site")
    for name, body in table.FILES.items():
        (site / "public" / name).parent.mkdir(parents=True, exist_ok=True)
        (site / "public" / name).write_text(body)
    (site / "public" / "_redirects").write_text(table.REDIRECTS)
    (site / "public" / "_headers").write_text(table.HEADERS)
    (site / "netlify.toml").write_text(table.NETLIFY_TOML.replace("BACKEND", "http://127.0.0.1:9"))
    port = free_port()
    command = table.dev_ops.netlify_dev_command(cli, site / "public", port)
    env = {**os.environ, "BROWSER": "none", "NETLIFY_NO_UPDATE_NOTIFIER": "1"}
    log_path = tmp_path_factory.mktemp("netlify-dev") / "netlify-dev.log"
    with log_path.open("wb") as log:  # a file, not a pipe nobody reads (a full pipe would block it)
        proc = subprocess.Popen(
            command, cwd=site, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: teardown reaches whatever it started
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(url + "/", timeout=30)
                break
            except httpx.TransportError:
                if proc.poll() is not None:
                    pytest.fail(f"netlify dev exited:\n{log_path.read_text(errors='replace')[-4000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"netlify dev did not answer within 120 s:\n{log_path.read_text(errors='replace')[-4000:]}"
                    )
                time.sleep(0.2)
        yield url, table, site
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # children left in its group


def test_edge_table_matches_netlify_dev(netlify_dev: tuple[str, ModuleType, Path]) -> None:
    url, table, _ = netlify_dev
    mismatches = []
    with httpx.Client(base_url=url, follow_redirects=False, timeout=60) as http:
        for path, status, expected, headers in table.TABLE:
            if path in DOCUMENTED_DIVERGENCES:
                continue
            response = http.get(path)
            if not agrees(response, status, expected, headers):
                mismatches.append(
                    f"{path}: netlify dev {response.status_code} {response.headers.get('Location')!r} "
                    f"{response.text[:40]!r}; edge table says {status} {expected!r} {headers}"
                )
    assert not mismatches, "\n".join(mismatches)


def test_documented_divergences_are_still_real(netlify_dev: tuple[str, ModuleType, Path]) -> None:
    """If netlify dev changes to match production, the exception list must shrink."""
    url, table, _ = netlify_dev
    rows = {row[0]: row for row in table.TABLE}
    with httpx.Client(base_url=url, follow_redirects=False, timeout=60) as http:
        for path in DOCUMENTED_DIVERGENCES:
            _, status, expected, headers = rows[path]
            same = agrees(http.get(path), status, expected, headers)
            assert not same, f"{path} now behaves the same in netlify dev; drop it from DOCUMENTED_DIVERGENCES"
