"""The first-deploy figures for ``nox -s bench``: a new user's own machine as the deploy target.

A fresh render; the generated README's set-up (`git init` with uv.lock in the first commit, `uv
sync --locked`); then, as a user types them in the project's shell: `inv deploy --env local`
(cold: the local proxy is made, the image built and smoke-tested), a second deploy of a new
commit under a loopback load (the blue/green switch: failed requests counted), `inv rollback`,
the proxy's log after both colours have served (lines naming the idle colour, and errors), a
deploy refused by the host preflight (an unpullable PROXY_IMAGE: seconds to the refusal, and
whether anything was built or left), and `inv remove --yes --proxy`.

``python -m tools.bench_local`` runs it alone.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tools.bench_deploy import proxy_image
from tools.generated import REPO, new_user_env, render

SLUG = "bench-local"
URL = "http://127.0.0.1:8480"


def bench(project_root: Path, base: str, client: Any) -> dict[str, Any]:
    del project_root  # a fresh render of its own: the first deploy starts from nothing
    root = render(REPO / ".cache" / "bench" / f"{SLUG}-fresh", {"project_slug": SLUG, "base_image": base}, git=False)
    env = new_user_env(root, PROXY_IMAGE=proxy_image(client, base))

    def sh(command: str, **extra: str) -> tuple[float, subprocess.CompletedProcess[str]]:
        started = time.perf_counter()
        done = subprocess.run(
            ["bash", "-c", f". .venv/bin/activate 2>/dev/null; {command}"],
            cwd=root, env={**env, **extra}, capture_output=True, text=True, timeout=1200,
        )  # fmt: skip
        if done.returncode != 0 and not extra:
            raise RuntimeError(f"{command} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        return round(time.perf_counter() - started, 2), done

    figures: dict[str, Any] = {}
    try:
        readme = (root / "README.md").read_text().split("## Quick start", 1)[1].split("```sh", 1)[1].split("```")[0]
        lines = readme.splitlines()
        setup = [line.split("  #")[0].strip() for line in lines if line.startswith(("git init", "uv sync"))]
        figures["setup_s"] = sh(" && ".join(setup))[0]  # the README's set-up, as written
        figures["first_deploy_s"], first = sh("inv deploy --env local")
        figures["first_deploy_phases"] = _phases(first.stdout + first.stderr)
        (root / "public" / "bench.txt").write_text("two\n")
        sh("git add -A && git commit -qm two")
        with _Load(URL + "/api/version") as load:
            figures["second_deploy_s"], second = sh("inv deploy --env local")
        figures["second_deploy_phases"] = _phases(second.stdout + second.stderr)
        figures["second_deploy_requests"] = load.total
        figures["second_deploy_failed"] = load.failed
        with _Load(URL + "/api/version") as load:
            figures["rollback_s"] = sh("inv rollback --env local")[0]
        figures["rollback_requests"], figures["rollback_failed"] = load.total, load.failed
        with _Load(URL + "/api/version") as load:
            time.sleep(5)  # five of the old health checks' intervals, both colours having served
        proxy = client.containers.get("cnd-local")
        log = proxy.logs().decode("utf-8", "replace").splitlines()
        figures["proxy_log_lines"] = len(log)
        figures["proxy_log_errors"] = sum('"level":"error"' in line for line in log)
        figures["proxy_log_idle_colour_lines"] = sum(f"{SLUG}-blue" in line or f"{SLUG}-green" in line for line in log)
        # The host preflight: a proxy image that cannot be had is refused before the build.
        sh("inv remove --env local --yes --proxy")
        images_before = {i.id for i in client.images.list()}
        networks_before = {n.name for n in client.networks.list()}
        figures["refused_preflight_s"], refused = sh(
            "inv deploy --env local", PROXY_IMAGE="127.0.0.1:9/no-such/caddy:never"
        )
        figures["refused_exit"] = refused.returncode
        figures["refused_built_images"] = len({i.id for i in client.images.list()} - images_before)
        figures["refused_left_networks"] = sorted({n.name for n in client.networks.list()} - networks_before)
        figures["remove_s"] = sh("inv remove --env local --yes --proxy")[0]
    finally:
        subprocess.run(
            ["bash", "-c", ". .venv/bin/activate && inv remove --env local --yes --proxy"],
            cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    return figures


def _phases(output: str) -> dict[str, float]:
    """The deploy's own phase table ("Deploy phases": a row per phase, its seconds, and the total)."""
    found = {}
    row = r"^\W*([a-z][a-z _-]*?)\s*[│┃|]\s*([0-9]+[.][0-9]+)\s*[│┃|]?\s*$"
    for name, seconds in re.findall(row, output, re.MULTILINE):
        found[name.strip()] = float(seconds)
    return found


class _Load:
    """Four clients asking one URL until stopped; answers that are not 200 are failures."""

    def __init__(self, url: str) -> None:
        self.url, self.counts, self.stop = url, Counter[str](), threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(4)]

    def _run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set():
                try:
                    self.counts[str(http.get(self.url).status_code)] += 1
                except httpx.HTTPError as exc:
                    self.counts[type(exc).__name__] += 1

    def __enter__(self) -> _Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(20)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return self.total - self.counts["200"]


def main() -> int:
    from tools.generated import run_alone

    run_alone(SLUG, bench)
    return 0


if __name__ == "__main__":
    sys.exit(main())
