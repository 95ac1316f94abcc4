"""The operations figures for ``nox -s bench``: how long an alert takes from a killed release (and
an OOM kill) to a webhook, and back to resolved, with the generated project's own `inv monitor`
code (ops/monitor.py) watching a real release behind Caddy and a local webhook receiver.

``python -m tools.bench_ops`` runs it alone.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tools.bench_deploy import proxy_image
from tools.generated import REPO, free_port, offline_base_image, project_ops, render

SLUG = "bench-ops"


class Receiver:
    """A webhook on loopback: the monotonic time each alert's text arrived."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.received.append((time.monotonic(), str(body.get("text", ""))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, needle: str, after: int, timeout: float = 60) -> float:
        """When the first alert containing ``needle`` among those from index ``after`` arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, text in self.received[after:]:
                if needle in text:
                    return at
            time.sleep(0.005)
        raise TimeoutError(f"no alert with {needle!r} within {timeout:.0f} s: {self.received[after:]}")


def bench(project_root: Path, base: str, client: Any, runs: int = 5) -> dict[str, Any]:
    from ops import monitor
    from ops import project as proj
    from ops.docker import images
    from ops.release import proxy, rollout

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
        client, SLUG, swarm=False, on_alert=hook.send, thresholds=monitor.Thresholds(restarts=1000)
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
        receiver.server.shutdown()
        proxy.remove(client, settings)
        rollout.remove_releases(client, SLUG)
    return figures


def main() -> int:
    base = offline_base_image("3.11")
    target = render(REPO / ".cache" / "bench" / SLUG, {"project_slug": SLUG, "base_image": base})
    project_ops(target)
    from ops.docker import engine

    print(json.dumps(bench(target, base, engine.connect()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
