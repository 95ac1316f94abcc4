"""The Swarm target's figures for ``nox -s bench``: rolling update time with 2 and 4 replicas,
failed requests (wrk through Caddy) during updates, scaling and a rollback, the time from a
killed task to its healthy replacement, and requests per second through Caddy with 1, 2 and 4
replicas beside a single-host release in the same run.

It runs the generated project's own cnd_toolkit/ on a real one-node swarm (the engine's own if it is in
one, else one made here and left afterwards), with images pushed to Debian's docker-registry.
``python -m tools.bench_swarm`` runs it alone.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tools.bench_deploy import generated, proxy_image, wrk_counts
from tools.generated import free_port, run_alone

SLUG = "bench-swarm"


@contextmanager
def wrk_load(url: str, connections: int = 8) -> Iterator[dict[str, int]]:
    """wrk against ``url`` for the block (and a second after it); the dict gets its counts."""
    found: dict[str, int] = {}
    load = subprocess.Popen(
        ["wrk", "-t2", f"-c{connections}", "-d600s", url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        time.sleep(1)
        yield found
        time.sleep(1)
    finally:
        load.send_signal(signal.SIGINT)  # wrk prints its summary on SIGINT
        output, _ = load.communicate(timeout=30)
        found.update(wrk_counts(output))


def rps(url: str, seconds: int = 8, connections: int = 8) -> float:
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url], capture_output=True, text=True, check=True
    ).stdout
    counts = wrk_counts(output)
    assert counts["failed"] == 0, output
    return round(counts["requests"] / seconds, 1)


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return round(time.perf_counter() - started, 2)


def bench(project_root: Path, base: str, client: Any) -> dict[str, Any]:
    from cnd_toolkit import project as proj

    project = proj.load(project_root)
    state = str((client.info().get("Swarm") or {}).get("LocalNodeState"))
    with one_node_swarm(client) as made:
        return _bench(project_root, base, client, project, made, state)


@contextmanager
def one_node_swarm(client: Any) -> Iterator[Any]:
    """The engine's swarm if it is in one; else a one-node swarm made here, left afterwards with
    the ``docker_gwbridge`` network that ``swarm init`` made. Yields ``swarm.init``'s answer."""
    from cnd_toolkit.release import swarm

    bridges = {n.name for n in client.networks.list(names=["docker_gwbridge"])}
    made = swarm.init(client, "127.0.0.1")
    try:
        yield made
    finally:
        if made.created:
            client.swarm.leave(force=True)
            if "docker_gwbridge" not in bridges:
                for network in client.networks.list(names=["docker_gwbridge"]):
                    network.remove()


def _bench(project_root: Path, base: str, client: Any, project: Any, made: Any, state: str) -> dict[str, Any]:
    from cnd_toolkit import project as proj
    from cnd_toolkit.docker import images
    from cnd_toolkit.release import proxy, rollout, swarm

    figures: dict[str, Any] = {"swarm": "made for the bench" if made.created else f"the engine's own ({state})"}
    port, host_port = free_port(), free_port()
    caddy_image = proxy_image(client, base)
    settings = proxy.ProxySettings(caddy_image, port, free_port(), name=f"cnd-swarm-bench-{uuid.uuid4().hex[:6]}")
    target = rollout.Target(SLUG, f"http://127.0.0.1:{port}", project.container_port, settings, 60, 1)
    host_settings = proxy.ProxySettings(
        caddy_image, host_port, free_port(), name=f"cnd-host-bench-{uuid.uuid4().hex[:6]}"
    )
    host_target = dataclasses.replace(
        target, slug=f"{SLUG}-host", backend_url=f"http://127.0.0.1:{host_port}", proxy=host_settings
    )
    url = f"{target.backend_url}/api/version"
    say = lambda line: None  # noqa: E731
    try:
        with generated("tests.local_registry").serve() as registry:
            refs = {}
            for revision in ("bench-one", "bench-two"):
                tag = f"{SLUG}:{revision}"
                images.build_image(client, project_root, [tag], proj.build_args(project, base, revision=revision))
                refs[revision] = (tag, images.push(client, tag, f"{registry}/bench/{SLUG}", revision))

            def roll(revision: str, replicas: int | None = None) -> swarm.SwarmRelease:
                tag, ref = refs[revision]
                return swarm.roll_out(
                    client, target, tag, reference=ref, version=revision, revision=revision, replicas=replicas,
                    node=made.node, on_line=say,
                )  # fmt: skip

            figures["first_create_2_s"] = timed(lambda: roll("bench-one", 2))
            updates: dict[str, Any] = {}
            for replicas, revision in ((2, "bench-two"), (4, "bench-one")):
                if replicas == 4:
                    swarm.scale(client, SLUG, 4, 60, say)
                with wrk_load(url) as load:
                    seconds = timed(functools.partial(roll, revision))
                updates[str(replicas)] = {"seconds": seconds, **load}
            figures["rolling_update"] = updates

            scaling: dict[str, Any] = {}
            for count in (1, 2, 4):
                with wrk_load(url) as load:
                    seconds = timed(functools.partial(swarm.scale, client, SLUG, count, 60, say))
                scaling[f"to_{count}"] = {"seconds": seconds, **load}
                time.sleep(2)
                scaling[f"rps_{count}"] = rps(url)
            figures["scale"] = scaling

            with wrk_load(url) as load:
                seconds = timed(lambda: roll("bench-two"))  # what `inv rollback` does: a recorded digest
            figures["rollback"] = {"seconds": seconds, **load}

            swarm.scale(client, SLUG, 2, 60, say)
            live = swarm.current(client, SLUG)
            assert live is not None
            victim = next(
                t["Status"]["ContainerStatus"]["ContainerID"]
                for t in live.service.tasks(filters={"desired-state": "running"})
                if t["Status"]["State"] == "running"
            )
            with wrk_load(url) as load:
                killed = time.perf_counter()
                client.containers.get(victim).kill()
                while (
                    (now := swarm.current(client, SLUG)) is None
                    or now.running < 2
                    or time.perf_counter() - killed < 0.5
                ):
                    time.sleep(0.05)
                replaced = round(time.perf_counter() - killed, 2)
            figures["killed_task"] = {"replaced_s": replaced, **load}

            tag, ref = refs["bench-one"]
            rollout.roll_out(client, host_target, tag, version="1", revision="bench-one", digest=ref, on_line=say)
            time.sleep(2)
            figures["rps_single_host"] = rps(f"{host_target.backend_url}/api/version")
    finally:
        swarm.remove_service(client, SLUG)
        swarm.remove_proxy(client, settings)
        proxy.remove(client, host_settings)
        rollout.remove_releases(client, host_target.slug)
    return figures


def main() -> int:
    run_alone(SLUG, bench)
    return 0


if __name__ == "__main__":
    sys.exit(main())
