"""Benchmark the API's canary (issue 11) with the generated project's own cnd_toolkit/release code, on a
real engine and Caddy, under a bounded loopback load (6 clients, for the run's seconds only):

- a bad release (30 % of requests fail) as a canary caught at 10 %, against the same release
  switched in full and left serving for as long as the canary took to be caught: the failed
  requests of each, and their ratio (the same run, the same load);
- the time from the canary's first step to the canary removed (every request is back on the live
  release before that: the split files change first, then the canary drains);
- a good canary's observed share at each step against its target;
- on a one-node swarm of four tasks, a bad canary caught at the first task (failed requests, how
  many after the gate failed, and the time Swarm took to roll it back) and a good one's shares.

``python -m tools.bench_canary`` runs it alone; ``nox -s bench`` includes it.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tools.bench_deploy import generated, proxy_image
from tools.bench_swarm import one_node_swarm
from tools.generated import free_port, run_alone

SLUG = "bench-canary"


def faulty_image(client: Any, good: str) -> str:
    """The project's image with the test's fault added (tests/test_canary_rollout.py), never the product's."""
    fault = generated("tests.test_canary_rollout").FAULT
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "fault.py").write_text(fault)
        (Path(tmp) / "Dockerfile").write_text(
            f"FROM {good}\nUSER 0\nCOPY fault.py /tmp/fault.py\n"
            "RUN cat /tmp/fault.py >> /app/api/routes.py && rm /tmp/fault.py\nUSER 10001:10001\n"
        )
        tag = f"{SLUG}:faulty"
        client.images.build(path=tmp, tag=tag, rm=True, forcerm=True)
    return tag


def bench(project_root: Path, base: str, client: Any, interval: float = 5.0) -> dict[str, Any]:
    from cnd_toolkit import project as proj
    from cnd_toolkit.docker import images
    from cnd_toolkit.release import canary, canary_rollout, proxy, rollout

    helpers = generated("tests.test_canary_rollout")
    project = proj.load(project_root)
    good = f"{SLUG}:bench"
    images.build_image(client, project_root, [good], proj.build_args(project, base, revision="bench-canary"))
    image = faulty_image(client, good)
    port = free_port()
    settings = proxy.ProxySettings(
        proxy_image(client, base), port, free_port(), name=f"cnd-canary-bench-{uuid.uuid4().hex[:6]}"
    )
    target = rollout.Target(SLUG, f"http://127.0.0.1:{port}", project.container_port, settings, 60, 1)
    plan = canary_rollout.Plan(steps=(10, 50, 100), interval=interval, gate=canary.Gate(min_requests=20))
    env = helpers.env
    figures: dict[str, Any] = {"interval_s": interval}
    try:
        rollout.roll_out(client, target, image, version="1", revision="rev-live", environment=env("rev-live"))
        # A bad canary, caught at its first step.
        said = helpers.Said()
        with helpers.Load(target.backend_url) as load:
            time.sleep(1)
            try:
                canary_rollout.roll_out(
                    client, target, image, plan, version="2", revision="rev-bad",
                    environment=env("rev-bad", FAULT_RATE="0.3"), on_line=said,
                )  # fmt: skip
                raise RuntimeError("the bad canary was not caught")
            except canary_rollout.CanaryFailed:
                back = time.monotonic()
            time.sleep(1)
        first_step = said.at("Canary at 10%")
        exposure = back - first_step
        canary_failed = sum(1 for _, status, _ in load.answers if status != 200)
        figures["bad_canary"] = {
            "failed": canary_failed,
            "requests": len(load.answers),
            "detect_and_remove_s": round(exposure, 2),
        }
        # The same bad release switched in full, serving for as long as the canary took to be caught.
        with helpers.Load(target.backend_url) as load:
            time.sleep(1)
            rollout.roll_out(
                client, target, image, version="3", revision="rev-bad-full",
                environment=env("rev-bad-full", FAULT_RATE="0.3"), confirm_through=None,
            )  # fmt: skip
            time.sleep(exposure)
            rollout.roll_back(client, target, "rev-live", confirm_through=None)
            time.sleep(1)
        full_failed = sum(1 for _, status, _ in load.answers if status != 200)
        figures["full_switch"] = {"failed": full_failed, "requests": len(load.answers)}
        figures["failed_ratio_canary_over_full"] = round(canary_failed / full_failed, 3) if full_failed else None
        # A good canary: the share each step gave it, observed against the target.
        said = helpers.Said()
        with helpers.Load(target.backend_url) as load:
            time.sleep(1)
            outcome = canary_rollout.roll_out(
                client, target, image, plan, version="4", revision="rev-good",
                environment=env("rev-good"), on_line=said,
            )  # fmt: skip
        shares = {}
        for share in (10, 50):
            answered = load.between(said.at(f"Canary at {share}%") + 0.5, said.at(f"At {share}%:"))
            observed = 100 * sum(1 for *_, version in answered if version == "good") / max(len(answered), 1)
            shares[str(share)] = {
                "observed": round(observed, 1),
                "buckets": round(outcome.shares[0 if share == 10 else 1], 1),
            }
        figures["good_canary"] = {
            "promoted": outcome.promoted,
            "failed": sum(1 for _, status, _ in load.answers if status != 200),
            "shares": shares,
        }
    finally:
        proxy.remove(client, settings)
        rollout.remove_releases(client, SLUG)
    figures["swarm"] = bench_swarm(project_root, base, client, image, interval)
    return figures


def bench_swarm(project_root: Path, base: str, client: Any, image: str, interval: float) -> dict[str, Any]:
    """The same canaries on a one-node swarm of four tasks: Swarm's rolling update, one task at a
    time, paused for the gate after each; a bad one is caught at the first task (25 %)."""
    from cnd_toolkit import project as proj

    project = proj.load(project_root)
    with one_node_swarm(client) as made:
        return _bench_swarm(project_root, base, client, image, interval, project, made)


def _bench_swarm(
    project_root: Path, base: str, client: Any, image: str, interval: float, project: Any, made: Any
) -> dict[str, Any]:
    from cnd_toolkit.docker import images
    from cnd_toolkit.release import canary, canary_rollout, proxy, rollout, swarm, swarm_canary

    helpers = generated("tests.test_canary_rollout")
    env = helpers.env
    port = free_port()
    settings = proxy.ProxySettings(
        proxy_image(client, base), port, free_port(), name=f"cnd-swarm-canary-bench-{uuid.uuid4().hex[:6]}"
    )
    slug = f"{SLUG}-swarm"
    target = rollout.Target(slug, f"http://127.0.0.1:{port}", project.container_port, settings, 60, 1)
    plan = canary_rollout.Plan(interval=interval, gate=canary.Gate(min_requests=20))
    figures: dict[str, Any] = {"tasks": 4}
    try:
        with generated("tests.local_registry").serve() as registry:
            ref = images.push(client, image, f"{registry}/bench/{slug}", "faulty")

            def canary_run(revision: str, said: Any, **fault: str) -> Any:
                return swarm_canary.roll_out(
                    client, target, image, plan, reference=ref, version=revision, revision=revision,
                    environment=env(revision, **fault), node=made.node, on_line=said,
                )  # fmt: skip

            swarm.roll_out(
                client, target, image, reference=ref, version="live", revision="rev-live",
                environment=env("rev-live"), replicas=4, node=made.node,
            )  # fmt: skip
            said = helpers.Said()
            with helpers.Load(target.backend_url) as load:
                time.sleep(1)
                try:
                    canary_run("rev-bad", said, FAULT_RATE="0.3")
                    raise RuntimeError("the bad canary was not caught on the swarm")
                except canary_rollout.CanaryFailed:
                    back = time.monotonic()
                time.sleep(1)
            first, caught = said.at("Canary at 1 of 4"), said.at("Asking Swarm to roll")
            failed = [at for at, status, _ in load.answers if status != 200]
            figures["bad_canary"] = {
                "failed": len(failed),
                "failed_after_gate": sum(1 for at in failed if at >= caught),
                "requests": len(load.answers),
                "first_step_to_gate_s": round(caught - first, 2),
                "gate_to_rolled_back_s": round(back - caught, 2),
            }
            said = helpers.Said()
            with helpers.Load(target.backend_url) as load:
                time.sleep(1)
                canary_run("rev-good", said)
            shares = {}
            for k in (1, 2, 3):
                share = 25 * k
                answered = load.between(said.at(f"Canary at {k} of 4") + 1.5, said.at(f"At {share}%:"))
                observed = 100 * sum(1 for *_, version in answered if version == "good") / max(len(answered), 1)
                shares[str(share)] = round(observed, 1)
            figures["good_canary"] = {
                "failed": sum(1 for _, status, _ in load.answers if status != 200),
                "observed_shares": shares,
            }
    finally:
        swarm.remove_service(client, slug)
        swarm.remove_proxy(client, settings)
    return figures


def main() -> int:
    run_alone(SLUG, bench)
    return 0


if __name__ == "__main__":
    sys.exit(main())
