"""The deploy's figures for ``nox -s bench``: time by phase, failed requests during a switch under
load, and the Netlify half on a 1,000-file site beside netlify-cli's ``netlify deploy``.

All of it runs the generated project's own code (its cnd_toolkit/ and its strict local Netlify API,
tests/netlify_api.py) against real parts: the engine, Debian's docker-registry, Caddy.
``python -m tools.bench_deploy`` runs it alone.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tools.generated import REPO, free_port, netlify_cli, project_ops, run_alone

SLUG = "bench-deploy"
TOKEN = "nfp_bench_token_0123456789abcdef"
SITE_FILES = 1000


def generated(module: str) -> Any:
    """A module of the toolkit's tests (toolkit/tests: the strict local Netlify API, the registry,
    the fixtures' Dockerfile), imported as those tests import each other (``tests.*``), with the
    generated project on sys.path for its ``api`` (project_ops), as `nox -s toolkit` runs them.
    toolkit/ goes first: this repository and the generated project have tests/ packages of their own."""
    import importlib

    toolkit = str(REPO / "toolkit")
    if toolkit in sys.path:
        sys.path.remove(toolkit)
    sys.path.insert(0, toolkit)
    loaded = sys.modules.get("tests")
    if loaded is not None and Path(str(loaded.__file__)).parent != REPO / "toolkit" / "tests":
        raise RuntimeError(f"`tests` is {loaded.__file__} here, not the toolkit's tests")
    return importlib.import_module(module)


def proxy_image(client: Any, base: str) -> str:
    from cnd_toolkit.docker import images

    caddy_from_debian = generated("tests.conftest").CADDY_FROM_DEBIAN

    for candidate in (os.environ.get("PROXY_IMAGE", ""), "caddy:2", "local/caddy:2"):
        if candidate and images.tagged_id(client, candidate):
            return candidate
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "Dockerfile").write_text(caddy_from_debian.format(base=base))
        images.build_image(client, Path(tmp), ["local/caddy:2"])
    return "local/caddy:2"


def wrk_counts(output: str) -> dict[str, int]:
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    socket_errors = sum(int(n) for n in errors.groups()) if errors else 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"requests": total, "failed": socket_errors + (int(non_2xx.group(1)) if non_2xx else 0)}


def bench_pipeline(project_root: Path, base: str, client: Any) -> dict[str, Any]:
    """Two full deploys: the phases of the first, and failed requests while the second switches."""
    from cnd_toolkit import project as proj
    from cnd_toolkit import settings as settings_mod
    from cnd_toolkit.release import deploy, lock, proxy, rollout

    LocalNetlify = generated("tests.netlify_api").LocalNetlify

    project = proj.load(project_root)
    port = free_port()
    name = f"cnd-proxy-bench-{uuid.uuid4().hex[:6]}"
    figures: dict[str, Any] = {}
    with generated("tests.local_registry").serve() as address, LocalNetlify(TOKEN) as netlify:
        environ = {
            "IMAGE": f"{address}/bench/{project.slug}", "BASE_IMAGE": base, "BACKEND_URL": f"http://127.0.0.1:{port}",
            "PROXY_IMAGE": proxy_image(client, base), "PROXY_NAME": name, "PROXY_HTTP_PORT": str(port),
            "PROXY_HTTPS_PORT": str(free_port()), "KEEP_RELEASES": "1", "NETLIFY_AUTH_TOKEN": TOKEN,
            "NETLIFY_SITE_ID": "site-1", "NETLIFY_API_URL": netlify.api_url,
        }  # fmt: skip
        settings = settings_mod.load(project_root, environ=environ)
        try:
            first = deploy.deploy(project, settings, deploy.Options(allow_dirty=True), say=lambda line: None)
            figures["first_deploy_phases_s"] = {k: round(v, 3) for k, v in first.phases.items()}
            figures["first_deploy_total_s"] = round(sum(first.phases.values()), 3)
            said: list[tuple[float, str]] = []
            load_started = time.monotonic()
            load = subprocess.Popen(
                ["wrk", "-t2", "-c8", "-d30s", f"http://127.0.0.1:{port}/api/version"],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(2)
            second = deploy.deploy(
                project,
                settings,
                deploy.Options(allow_dirty=True),
                say=lambda line: said.append((time.monotonic(), line)),
            )
            output, _ = load.communicate(timeout=120)
            load_ended = time.monotonic()
            figures["second_deploy_phases_s"] = {k: round(v, 3) for k, v in second.phases.items()}
            # When the proxy switched, from the start of the load (wrk ran for 30 s of it).
            switched = [at for at, line in said if line.startswith("Switching ")]
            at = switched[0] - load_started if switched else None
            figures["under_load"] = {
                **wrk_counts(output),
                "window_s": 30,
                "connections": 8,
                "switch_at_s": round(at, 2) if at is not None else "no switch seen",
                "switch_inside_window": int(at is not None and 1 < at < min(30, load_ended - load_started) - 1),
            }
        finally:
            proxy.remove(client, deploy.target(project, settings).proxy)
            rollout.remove_releases(client, project.slug)
            lock.release(client, project.slug)
    return figures


def make_site(root: Path, rng: random.Random) -> None:
    (root / "public" / "assets").mkdir(parents=True)
    (root / "netlify.toml").write_text('[build]\n  publish = "public"\n')
    for i in range(SITE_FILES):
        folder = root / "public" / ("assets" if i % 3 else "")
        (folder / f"file-{i:04d}.{rng.choice(['html', 'css', 'js', 'json'])}").write_bytes(
            rng.randbytes(rng.randint(200, 6000))
        )


# What `inv deploy` does for the Netlify half, as a process: read the site's files, deploy a draft.
OURS = """
import os, sys
from pathlib import Path
from cnd_toolkit.netlify import api, publish
files = publish.site_files(Path(sys.argv[1]), "https://api.example.com")
with api.NetlifyClient(os.environ["NETLIFY_AUTH_TOKEN"], os.environ["NETLIFY_API_URL"]) as client:
    publish.deploy_draft(client, "site-1", files)
"""


def bench_netlify(rounds: int = 3) -> dict[str, Any]:
    """A 1,000-file site: first deploy, unchanged re-deploy, one changed file; ours and netlify-cli's,
    each a process from a cold start, the uploads counted by the local Netlify API for both."""
    LocalNetlify = generated("tests.netlify_api").LocalNetlify

    figures: dict[str, Any] = {"files": SITE_FILES}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_site(root, random.Random(11))
        changed = next((root / "public").rglob("file-0001.*"))
        original = changed.read_bytes()

        def ours() -> list[dict[str, Any]]:
            """Our Netlify half as netlify-cli runs: a process from a cold start (a new interpreter,
            its imports), the uploads counted by the server."""
            steps = []
            with LocalNetlify(TOKEN) as server:
                env = {**os.environ, "NETLIFY_API_URL": server.api_url, "NETLIFY_AUTH_TOKEN": TOKEN}
                for step in ("first", "unchanged", "one_change"):
                    if step == "one_change":
                        changed.write_bytes(original + b"\n/* changed */\n")
                    before = len(server.uploads())
                    started = time.perf_counter()
                    subprocess.run(
                        [sys.executable, "-c", OURS, str(root)], env=env, check=True, capture_output=True, timeout=600
                    )
                    steps.append(
                        {"step": step, "s": time.perf_counter() - started, "uploads": len(server.uploads()) - before}
                    )
            changed.write_bytes(original)
            return steps

        def cli(binary: str) -> list[dict[str, Any]]:
            steps = []
            with LocalNetlify(TOKEN) as server:
                env = {**os.environ, "NETLIFY_API_URL": server.api_url, "NETLIFY_AUTH_TOKEN": TOKEN}
                for step in ("first", "unchanged", "one_change"):
                    if step == "one_change":
                        changed.write_bytes(original + b"\n/* changed */\n")
                    before = len(server.uploads())
                    started = time.perf_counter()
                    command = [
                        binary,
                        "deploy",
                        "--no-build",
                        "--dir",
                        str(root / "public"),
                        "--site",
                        "my-site",
                        "--json",
                    ]
                    subprocess.run(command, env=env, cwd=root, check=True, capture_output=True, timeout=600)
                    steps.append(
                        {"step": step, "s": time.perf_counter() - started, "uploads": len(server.uploads()) - before}
                    )
            changed.write_bytes(original)
            return steps

        runs = [ours() for _ in range(rounds)]
        figures["ours"] = median_steps(runs)
        binary = netlify_cli()
        if binary:
            figures["netlify_cli"] = median_steps([cli(binary) for _ in range(rounds)])
            figures["first_over_cli"] = round(figures["ours"]["first"]["s"] / figures["netlify_cli"]["first"]["s"], 3)
        else:
            figures["netlify_cli"] = "not installed (npm install --prefix .cache/netlify-tools netlify-cli)"
    return figures


def median_steps(runs: list[list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    out = {}
    for index, step in enumerate(("first", "unchanged", "one_change")):
        times = sorted(run[index]["s"] for run in runs)
        out[step] = {"s": round(times[len(times) // 2], 3), "uploads": runs[-1][index]["uploads"]}
    return out


def bench(project_root: Path, base: str, client: Any) -> dict[str, Any]:
    project_ops(project_root)
    return {"pipeline": bench_pipeline(project_root, base, client), "netlify": bench_netlify()}


def main() -> int:
    results = run_alone(SLUG, bench)
    (REPO / "bench-deploy-results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
