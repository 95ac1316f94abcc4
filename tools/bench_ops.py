"""The operations figures for ``nox -s bench``: how long an alert takes from a killed release (and
an OOM kill) to a webhook, and back to resolved, with the generated project's own `inv monitor`
code (cnd_toolkit/monitor.py) watching a real release behind Caddy and a local webhook receiver.

``python -m tools.bench_ops`` runs it alone.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tools.bench_deploy import generated, proxy_image
from tools.generated import free_port, run_alone

SLUG = "bench-ops"


def bench(project_root: Path, base: str, client: Any, runs: int = 5) -> dict[str, Any]:
    from cnd_toolkit import monitor
    from cnd_toolkit import project as proj
    from cnd_toolkit.docker import images
    from cnd_toolkit.release import proxy, rollout

    Receiver = generated("tests.webhook").Receiver  # the toolkit tests' own, as its alert tests use it

    project = proj.load(project_root)
    tag = f"{SLUG}:bench"
    images.build_image(client, project_root, [tag], proj.build_args(project, base, revision="bench-ops"))
    port = free_port()
    settings = proxy.ProxySettings(
        proxy_image(client, base), port, free_port(), name=f"cnd-ops-bench-{uuid.uuid4().hex[:6]}"
    )
    target = rollout.Target(SLUG, f"http://127.0.0.1:{port}", project.container_port, settings, 60, 1)
    receiver = Receiver()
    hook = monitor.Webhook(receiver.url, SLUG)
    # A loop of deaths is a restart loop by design; the bench counts the deaths alone.
    watcher = monitor.Monitor(
        client,
        SLUG,
        watched=monitor.Watched.host(SLUG),
        on_alert=hook.send,
        thresholds=monitor.Thresholds(restarts=1000),
    )
    figures: dict[str, Any] = {"runs": runs}
    try:
        release = rollout.roll_out(client, target, tag, version="1", revision="bench-ops")
        thread = threading.Thread(target=watcher.run, daemon=True)
        thread.start()
        time.sleep(1)
        kills, resolves = [], []
        for _ in range(runs):
            before = len(receiver.received)
            killed = time.monotonic()
            release.container.kill()
            kills.append((receiver.wait_for("died", before) - killed) * 1000)
            before = len(receiver.received)
            started = time.monotonic()
            release.container.start()
            resolves.append(receiver.wait_for("RESOLVED", before) - started)
        figures["kill_to_webhook_ms"] = {"median": round(statistics.median(kills), 1), "max": round(max(kills), 1)}
        figures["start_to_resolved_s"] = round(statistics.median(resolves), 2)
        before = len(receiver.received)
        allocated = time.monotonic()
        release.container.exec_run(["python", "-c", "b = bytearray(900 * 1024 * 1024)"])
        figures["oom_to_webhook_ms"] = round((receiver.wait_for("OOM", before) - allocated) * 1000, 1)
        figures["webhook_failed"] = hook.failed
    finally:
        watcher.stop()
        hook.close()
        receiver.close()
        proxy.remove(client, settings)
        rollout.remove_releases(client, SLUG)
    return figures


def main() -> int:
    run_alone(SLUG, bench)
    return 0


if __name__ == "__main__":
    sys.exit(main())
