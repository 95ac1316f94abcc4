"""A canary on a real one-node Docker Swarm, behind the real Caddy service, images pulled by
digest from a real registry, under a bounded loopback load: Swarm's rolling update moves one task
at a time and pauses after each while the gate compares the new tasks with the old ones.

A good canary goes 25 -> 50 -> 75 -> 100 % of four tasks with no failed request, at about each
share; one that fails some requests is caught at the first task and Swarm rolls it back, only
the requests the canary answered having failed; one watched by hand is aborted, then promoted.
The releases are the project's image with the test's fault hook (``tests/test_canary_rollout.py``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import httpx
import pytest
from cnd_toolkit import project
from cnd_toolkit.docker import images
from cnd_toolkit.release import canary, canary_rollout, deploy, records, rollout, swarm, swarm_canary

from tests.test_canary_rollout import FAULT, Load, Said, env, faulty  # noqa: F401 (fixtures and helpers)
from tests.test_rollout import app_images  # noqa: F401 (the fixture)
from tests.test_swarm import Cluster, _until, cluster, node  # noqa: F401 (the fixtures)

pytestmark = [pytest.mark.docker, pytest.mark.rollouts]
assert FAULT  # the hook the releases carry


@pytest.fixture(scope="module")
def faulty_ref(engine: Any, registry: str, faulty: str) -> str:  # noqa: F811
    """The faulty image pushed to the registry: its digest reference, as a swarm pulls it."""
    return images.push(engine, faulty, f"{registry}/swarmtest/{project.load().slug}", "faulty")


def plan(**changes: Any) -> canary_rollout.Plan:
    return canary_rollout.Plan(interval=4.0, gate=canary.Gate(min_requests=20), **changes)


def _deploy(engine: Any, cluster: Cluster, image: str, ref: str, revision: str, count: int, **fault: str) -> None:  # noqa: F811
    swarm.roll_out(
        engine, cluster.target, image, reference=ref, version=revision.removeprefix("rev-"), revision=revision,
        environment=env(revision, **fault), replicas=count, node=cluster.node,
    )  # fmt: skip


def _no_canary_task_runs(engine: Any, cluster: Cluster) -> bool:  # noqa: F811
    labels = [
        f"com.docker.swarm.service.name={swarm.service_name(cluster.target.slug)}",
        f"{rollout.PREFIX}.revision=rev-canary",
    ]
    return not engine.containers.list(filters={"label": labels})  # running containers of the canary's tasks


def _revisions(engine: Any, cluster: Cluster) -> list[str]:  # noqa: F811
    return sorted(t.revision for t in swarm.tasks(engine, cluster.target.slug))


def test_a_good_canary_moves_one_task_at_a_time_with_no_failed_request(
    engine: Any,
    cluster: Cluster,  # noqa: F811
    faulty: str,  # noqa: F811
    faulty_ref: str,
) -> None:
    _deploy(engine, cluster, faulty, faulty_ref, "rev-live", 4)
    said = Said()
    with Load(cluster.url) as load:
        load.answered(version="live")
        outcome = swarm_canary.roll_out(
            engine, cluster.target, faulty, plan(), reference=faulty_ref, version="canary", revision="rev-canary",
            environment=env("rev-canary"), node=cluster.node, on_line=said,
        )  # fmt: skip
    assert outcome.promoted and [share for share, _ in outcome.verdicts] == [25, 50, 75]
    assert all(v.outcome == "pass" for _, v in outcome.verdicts), [v.describe() for _, v in outcome.verdicts]
    statuses = [status for _, status, _ in load.answers]
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    # Caddy follows tasks.<service> by looking the name up again each second, so a step's first
    # moments may still go by the step before: each step's observed share is above the last one's
    # and not above its own (how close it comes is measured by `nox -s bench`, bench_canary).
    observed = [0.0]
    for share in (25, 50, 75):
        start, end = said.at(f"Canary at {share // 25} of 4 tasks"), said.at(f"At {share}%:")
        answered = load.between(start, end)
        canary_count = sum(1 for *_, v in answered if v == "canary")
        assert len(answered) >= 20, (share, len(answered))
        p = share / 100
        margin = 4.5 * (p * (1 - p) / len(answered)) ** 0.5  # the binomial count's spread
        observed.append(canary_count / len(answered))
        print(f"\n{share}% step: observed {100 * observed[-1]:.1f}% of {len(answered)}")
        assert observed[-2] < observed[-1] <= p + margin, (share, observed)
    assert _revisions(engine, cluster) == ["rev-canary"] * 4
    live = swarm.current(engine, cluster.target.slug)
    assert live is not None and swarm.update_state(live) == "completed"
    assert swarm_canary.state(engine, cluster.target.slug) is None
    assert httpx.get(cluster.url + "/api/version").json()["revision"] == "rev-canary"


def test_a_failing_canary_is_caught_at_the_first_task_and_swarm_rolls_it_back(
    engine: Any,
    cluster: Cluster,  # noqa: F811
    faulty: str,  # noqa: F811
    faulty_ref: str,
) -> None:
    _deploy(engine, cluster, faulty, faulty_ref, "rev-live", 4)
    said = Said()
    with Load(cluster.url) as load:
        load.answered(version="live")
        with pytest.raises(canary_rollout.CanaryFailed, match=r"failed its gate at 25% \(1 of 4 tasks\): 5xx"):
            swarm_canary.roll_out(
                engine, cluster.target, faulty, plan(), reference=faulty_ref, version="canary",
                revision="rev-canary", environment=env("rev-canary", FAULT_RATE="0.3"), node=cluster.node,
                on_line=said,
            )  # fmt: skip
        reverted = time.monotonic()
        _until(lambda: _no_canary_task_runs(engine, cluster), "the canary's tasks to stop", timeout=120)
        gone = time.monotonic()
        load.answered(50)
    live = swarm.current(engine, cluster.target.slug)
    assert live is not None and swarm.update_state(live) == "rollback_completed", said.lines
    assert _revisions(engine, cluster) == ["rev-live"] * 4 and live.revision == "rev-live"
    failed = [a for a in load.answers if a[1] != 200]
    others = [a for a in failed if (a[1], a[2]) != (500, "canary")]
    assert failed and not others, (others[:5], said.lines)  # nothing but the canary's own 500s
    canary_answers = sum(1 for a in load.answers if a[2] == "canary")
    caught = said.at("Asking Swarm to roll")
    late = [a for a in failed if a[0] >= caught]
    print(
        f"\nfailing canary: {len(failed)} of {len(load.answers)} requests failed, {len(late)} of them after the gate "
        f"failed; the canary answered {canary_answers}; rolled back {reverted - caught:.1f}s after the gate"
    )
    assert len(failed) <= canary_answers
    assert not [a for a in load.between(gone, float("inf")) if a[2] == "canary"]  # all back on live


def test_a_canary_watched_by_hand_on_a_swarm_is_aborted_then_promoted(
    engine: Any,
    registry: str,
    cluster: Cluster,  # noqa: F811
    faulty: str,  # noqa: F811
    faulty_ref: str,
) -> None:
    _deploy(engine, cluster, faulty, faulty_ref, "rev-live", 2)
    me = dataclasses.replace(project.load(), slug=cluster.target.slug)
    outcome = swarm_canary.roll_out(
        engine, cluster.target, faulty, plan(manual=True), reference=faulty_ref, version="canary",
        revision="rev-canary", environment=env("rev-canary"), node=cluster.node,
    )  # fmt: skip
    assert not outcome.promoted and [share for share, _ in outcome.verdicts] == [50]
    found = deploy.canary_state(me, cluster.settings)
    assert found is not None and found.swarm is not None and found.share == 50
    assert (found.canary_revision, found.live_revision) == ("rev-canary", "rev-live")
    assert "1 of 2 tasks" in found.describe() and _revisions(engine, cluster) == ["rev-canary", "rev-live"]
    time.sleep(swarm.MONITOR + 1)  # past Swarm's monitor window: it keeps waiting for the person, not its timer
    assert _revisions(engine, cluster) == ["rev-canary", "rev-live"]
    pushing = cluster.settings.override("IMAGE", f"{registry}/swarmtest/{me.slug}", "test")
    with pytest.raises(deploy.PreflightFailed, match=r"a canary of .* is in progress"):
        deploy.deploy(me, pushing, deploy.Options(allow_dirty=True, netlify=False), say=lambda line: None)

    aborted = deploy.canary_abort(me, cluster.settings, say=lambda line: None)
    assert aborted.revision == "rev-live" and _revisions(engine, cluster) == ["rev-live", "rev-live"]
    assert deploy.canary_state(me, cluster.settings) is None
    with pytest.raises(Exception, match="no canary"):
        deploy.canary_promote(me, cluster.settings, say=lambda line: None)

    swarm_canary.roll_out(
        engine, cluster.target, faulty, plan(manual=True), reference=faulty_ref, version="third",
        revision="rev-third", environment=env("rev-third"), node=cluster.node,
    )  # fmt: skip
    with Load(cluster.url) as load:
        promoted = deploy.canary_promote(me, cluster.settings, say=lambda line: None)
    assert promoted.revision == "rev-third" and _revisions(engine, cluster) == ["rev-third", "rev-third"]
    assert {status for _, status, _ in load.answers} == {200}
    assert deploy.canary_state(me, cluster.settings) is None
    proxy_container = swarm.proxy_container(engine, cluster.target.proxy.name)
    assert records.load(proxy_container, cluster.target.slug)[0].revision == "rev-third"  # recorded as a deploy
    one = pushing.override("REPLICAS", "1", "test")  # one task cannot move one task at a time: said before a build
    with pytest.raises(deploy.PreflightFailed, match=r"a canary on a swarm needs at least 2 tasks"):
        deploy.deploy(me, one, deploy.Options(allow_dirty=True, netlify=False, canary=True), say=lambda line: None)


def test_ctrl_c_in_a_swarm_canarys_gate_rolls_back_once(
    engine: Any,
    cluster: Cluster,  # noqa: F811
    faulty: str,  # noqa: F811
    faulty_ref: str,
) -> None:
    """Ctrl-C while the gate reads the tasks: one rollback (a second would swap the specs back and
    roll the canary forward again), the live release on every task, the interrupt passed on."""
    _deploy(engine, cluster, faulty, faulty_ref, "rev-live", 2)

    def interrupted(container: Any) -> Any:
        raise KeyboardInterrupt

    said = Said()
    with pytest.raises(KeyboardInterrupt):
        swarm_canary.roll_out(
            engine, cluster.target, faulty, plan(), reference=faulty_ref, version="canary", revision="rev-canary",
            environment=env("rev-canary"), node=cluster.node, on_line=said, scrape=interrupted,
        )  # fmt: skip
    live = swarm.current(engine, cluster.target.slug)
    assert live is not None and swarm.update_state(live) == "rollback_completed", said.lines
    # A second rollback would have swapped the spec back to the canary's (the engine changes the spec
    # when asked, before any task moves): the spec is the live release's, and rolled back once.
    assert live.revision == "rev-live", said.lines
    assert _revisions(engine, cluster) == ["rev-live", "rev-live"]
    assert sum("roll" in line and "back" in line for _, line in said.lines) == 1, said.lines
