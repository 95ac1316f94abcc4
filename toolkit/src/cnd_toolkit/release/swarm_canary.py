"""A canary on a swarm (``DEPLOY_TARGET=swarm``): Swarm's own rolling update, one task at a
time, paused after each task while the deploy compares the new release with the old one.

The update is a deploy's (start-first, parallelism 1, rolled back by Swarm itself when a new task
fails), with Swarm's ``delay`` between tasks set to the step's interval and a margin. After the
k-th of N new tasks is up and the task it replaces is told to stop, Swarm waits; in that pause the
deploy reads the new release's tasks and the old release's tasks (their own ``/metrics``, summed
per release) over ``Plan.interval`` seconds and asks the same gate as on one host
(:func:`cnd_toolkit.release.canary.judge`). Caddy follows ``tasks.<service>`` and spreads requests over
the tasks that are up, so the canary's share at step k is k/N: with ``REPLICAS=4``, 25, 50, 75 and
100 %. ``CANARY_STEPS`` is the single host's (it splits by request buckets); here the tasks are
the steps.

A failed gate, an error or Ctrl-C asks Swarm to roll back (``docker service rollback``: the
spec from before the canary, start-first, so the canary's tasks serve until the old release's
replacements are up), waits for it, and raises :class:`CanaryFailed` with the comparison. (Stopping
the canary's tasks first was tried: requests then hung for 10 s on this engine while they stopped.)
Past the last gate Swarm goes on by itself: the remaining tasks, its pause after the last one,
and its monitor window, then ``completed``.

``Plan.manual`` pauses Swarm for :data:`MANUAL_PAUSE` after the first task instead, for a person
to watch; :func:`promote` lets Swarm finish without pauses (the update config changed, which
Swarm takes as a new update of the tasks still old), and :func:`abort` rolls it back.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import docker
import docker.errors
from docker.models.containers import Container
from docker.models.services import Service

from cnd_toolkit.errors import OpsError
from cnd_toolkit.logs import LineSink
from cnd_toolkit.release import canary_rollout, rollout, swarm, traffic
from cnd_toolkit.release.canary import Verdict
from cnd_toolkit.release.canary_rollout import CanaryFailed, Plan
from cnd_toolkit.wait import NotReady, TimedOut, poll

MANUAL_PAUSE = 7 * 24 * 3600  # seconds Swarm waits after the first task of a canary watched by hand
CANARY_LABEL = f"{rollout.PREFIX}.canary"  # on the service while a canary's update runs: "auto" or "manual"


def margin(interval: float) -> float:
    """What Swarm's pause adds to the gate's interval: the reads of every task before and after."""
    return max(5.0, interval / 10)


@dataclass
class Outcome:
    release: swarm.SwarmRelease
    promoted: bool
    verdicts: list[tuple[float, Verdict]] = dataclasses.field(default_factory=list)  # (share %, verdict)
    shares: list[float] = dataclasses.field(default_factory=list)  # the canary's share of the tasks, per step


def check_tasks(name: str, count: int) -> None:
    """A canary moves one task at a time: it needs two tasks at least."""
    if count < 2:
        raise OpsError(
            f"a canary on a swarm needs at least 2 tasks (it moves one task at a time); {name} would have {count}: "
            "set REPLICAS=2 or more (or `inv scale 2`)"
        )


def roll_out(
    client: docker.DockerClient,
    target: rollout.Target,
    image: str,
    plan: Plan,
    *,
    reference: str,
    version: str,
    revision: str,
    environment: dict[str, str] | None = None,
    replicas: int | None = None,
    node: str = "",
    on_line: LineSink | None = None,
    confirm_through: Callable[[str, str], None] | None = rollout.confirm,
    timings: rollout.Timings | None = None,
    scrape: Callable[[Container], traffic.Counts] = traffic.scrape,
    before_switch: Callable[[str], None] | None = None,
) -> Outcome:
    say = on_line or (lambda line: None)
    live = swarm.current(client, target.slug)
    if live is None:
        say("Nothing runs on the swarm to compare a canary with: this first release is deployed in full")
        release = swarm.roll_out(
            client, target, image, reference=reference, version=version, revision=revision,
            environment=environment, replicas=replicas, node=node, on_line=say,
            confirm_through=confirm_through, timings=timings, before_switch=before_switch,
        )  # fmt: skip
        return Outcome(release, promoted=True)
    count = replicas or live.desired or 2
    check_tasks(live.name, count)
    pause = MANUAL_PAUSE if plan.manual else plan.interval + margin(plan.interval)
    steps = ", ".join(f"{100 * k / count:.0f}%" for k in range(1, count + 1))
    say(
        f"Canary on the swarm: Swarm replaces one task of {count} at a time ({steps} of the requests) and "
        + ("waits for you after the first" if plan.manual else f"pauses {pause:.0f}s after each for the gate")
    )
    outcome = Outcome(live, promoted=False)
    release = swarm.roll_out(
        client, target, image, reference=reference, version=version, revision=revision,
        environment=environment, replicas=count, node=node, on_line=say, confirm_through=confirm_through,
        timings=timings, pause=pause, labels={CANARY_LABEL: "manual" if plan.manual else "auto"},
        watch=lambda update: _gate(client, update, plan, outcome, say, scrape, pause + target.health_timeout + 30),
        before_switch=before_switch,
    )  # fmt: skip
    outcome.release = release
    outcome.promoted = not plan.manual
    return outcome


def _gate(
    client: docker.DockerClient,
    update: swarm.Update,
    plan: Plan,
    outcome: Outcome,
    say: LineSink,
    scrape: Callable[[Container], traffic.Counts],
    step_timeout: float,
) -> bool:
    """The gate after each new task but the last; True when it leaves the update to a person."""
    once = dataclasses.replace(plan, extend=0)  # Swarm's pause is the step: no longer look
    try:
        for k in range(1, update.count):
            _wait_step(client, update, k, step_timeout)  # the rest of the last pause, then a task's start
            share = 100.0 * k / update.count
            outcome.shares.append(share)
            new, old = task_containers(client, update.service, update.deploy_id)
            unseen = update.count - len(new) - len(old)
            say(
                f"Canary at {k} of {update.count} tasks ({share:.0f}% of the requests); comparing it with "
                f"{update.live.revision[:12]} for {plan.interval:g}s"
                + (f" (on this node's {len(new) + len(old)} tasks; {unseen} run elsewhere)" if unseen > 0 else "")
            )
            verdict = canary_rollout.observe(_summed(old, scrape), _summed(new, scrape), once)
            outcome.verdicts.append((share, verdict))
            say(f"At {share:.0f}%: {verdict.describe()}")
            if verdict.failed:
                raise CanaryFailed(
                    f"the canary failed its gate at {share:.0f}% ({k} of {update.count} tasks): "
                    f"{'; '.join(verdict.reasons)}. Swarm rolled the service back to {update.live.revision[:12]}"
                )
            if plan.manual:
                say(
                    f"The canary stays at {k} of {update.count} tasks for you to watch: `inv canary status`, then "
                    "`inv canary promote` or `inv canary abort`"
                )
                return True
        say("The gate passed at every step: Swarm finishes the update (its pause after the last task, then its watch)")
    except BaseException:
        say(f"Asking Swarm to roll {update.service.name} back to {update.live.revision[:12]}")
        swarm.request_rollback(client, update.service)
        with contextlib.suppress(OpsError):
            wait_rolled_back(update.service, 60 + 60 * update.count)
        raise
    return False


def _wait_step(client: docker.DockerClient, update: swarm.Update, k: int, timeout: float) -> None:
    """Until ``k`` of the new release's tasks run and the rest are the old release's: Swarm's
    pause after the k-th task. Swarm rolling back by itself (a new task failed) ends the canary."""

    def probe() -> None:
        update.service.reload()
        status = update.service.attrs.get("UpdateStatus") or {}
        state = str(status.get("State", "")) if status.get("StartedAt", "") != update.before else ""
        if state.startswith("rollback") or state == "paused":
            raise rollout.RolloutFailed(
                f"Swarm stopped the canary itself ({state.replace('_', ' ')}: {status.get('Message', '')}); "
                f"{update.live.revision[:12]} serves"
            )
        tasks = swarm._tasks(update.service, {"desired-state": "running"})
        new = [t for t in tasks if swarm._deploy_of(t) == update.deploy_id and swarm._state(t) == "running"]
        old = [t for t in tasks if swarm._deploy_of(t) != update.deploy_id]
        if len(new) < k or len(old) > update.count - k:
            raise NotReady(f"{len(new)} of the canary's tasks up, {len(old)} old ones")

    try:
        poll(probe, timeout=timeout, interval=0.1)
    except TimedOut as exc:
        raise rollout.RolloutFailed(
            f"Swarm did not get the canary to {k} tasks in {timeout:.0f}s ({exc.reason})"
        ) from None


def task_containers(
    client: docker.DockerClient, service: Service, deploy_id: str
) -> tuple[list[Container], list[Container]]:
    """The running task containers on this node: the new release's (``deploy_id``) and the others."""
    new: list[Container] = []
    old: list[Container] = []
    for task in swarm._tasks(service, {"desired-state": "running"}):
        container_id = task.get("Status", {}).get("ContainerStatus", {}).get("ContainerID")
        if swarm._state(task) != "running" or not container_id:
            continue
        try:
            container = client.containers.get(container_id)
        except docker.errors.NotFound:  # on another node
            continue
        (new if swarm._deploy_of(task) == deploy_id else old).append(container)
    return new, old


def _summed(found: Sequence[Container], scrape: Callable[[Container], traffic.Counts]) -> Callable[[], traffic.Counts]:
    def total() -> traffic.Counts:
        summed = traffic.Counts()
        for container in found:
            summed = summed + scrape(container)
        return summed

    return total


def wait_rolled_back(service: Service, timeout: float) -> None:
    """Until Swarm's rollback of ``service`` has completed."""

    def probe() -> None:
        service.reload()
        state = swarm.service_update_state(service)
        if state == "rollback_completed":
            return
        if state in {"rollback_paused", "paused"}:
            message = (service.attrs.get("UpdateStatus") or {}).get("Message", "")
            raise swarm.SwarmError(f"Swarm's rollback of {service.name} paused: {message}")
        raise NotReady(state or "no update")

    try:
        poll(probe, timeout=timeout, interval=0.1)
    except TimedOut as exc:
        raise swarm.SwarmError(
            f"Swarm's rollback of {service.name} did not end in {timeout:.0f}s ({exc.reason})"
        ) from None


# --- a canary watched by hand ---------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """A canary's update in progress on the swarm: the old and new releases' tasks."""

    service: Service
    live_revision: str
    canary_revision: str
    deploy_id: str
    canary_tasks: int
    tasks: int
    manual: bool

    @property
    def share(self) -> float:
        return 100.0 * self.canary_tasks / max(self.tasks, 1)


def state(client: docker.DockerClient, slug: str) -> State | None:
    """The canary whose update Swarm is in (its service carries :data:`CANARY_LABEL`), or None."""
    service = swarm._find_service(client, swarm.service_name(slug))
    if service is None:
        return None
    spec = service.attrs.get("Spec") or {}
    labels = spec.get("Labels") or {}
    if CANARY_LABEL not in labels or swarm.service_update_state(service) != "updating":
        return None
    deploy_id = labels.get(f"{rollout.PREFIX}.deploy", "")
    previous = ((service.attrs.get("PreviousSpec") or {}).get("Labels")) or {}
    tasks = swarm._tasks(service, {"desired-state": "running"})
    mine = [t for t in tasks if swarm._deploy_of(t) == deploy_id]
    count = int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", len(tasks)))
    return State(
        service,
        live_revision=previous.get(f"{rollout.PREFIX}.revision", ""),
        canary_revision=labels.get(f"{rollout.PREFIX}.revision", ""),
        deploy_id=deploy_id,
        canary_tasks=len(mine),
        tasks=count,
        manual=labels.get(CANARY_LABEL) == "manual",
    )


def figures(client: docker.DockerClient, found: State, plan: Plan, window: float = 5.0) -> str:
    """The gate's comparison over ``window`` seconds, as `inv canary status` shows it."""
    new, old = task_containers(client, found.service, found.deploy_id)
    verdict = canary_rollout.observe(
        _summed(old, traffic.scrape), _summed(new, traffic.scrape), dataclasses.replace(plan, interval=window, extend=0)
    )
    return verdict.describe()


def _in_progress(client: docker.DockerClient, slug: str) -> State:
    found = state(client, slug)
    if found is None:
        raise OpsError(f"no canary of {slug} is in progress on this swarm (`inv status` shows what runs)")
    return found


def promote(
    client: docker.DockerClient,
    target: rollout.Target,
    *,
    on_line: LineSink | None = None,
    confirm_through: Callable[[str, str], None] | None = rollout.confirm,
) -> swarm.SwarmRelease:
    """``inv canary promote``: Swarm replaces the remaining old tasks without pausing, then the
    switch is confirmed through the proxy."""
    say = on_line or (lambda line: None)
    found = _in_progress(client, target.slug)
    service = found.service
    live = swarm.current(client, target.slug)
    assert live is not None
    spec = service.attrs["Spec"]
    before = (service.attrs.get("UpdateStatus") or {}).get("StartedAt", "")
    labels = {k: v for k, v in (spec.get("Labels") or {}).items() if k != CANARY_LABEL}
    say(f"Promoting: Swarm replaces the other {found.tasks - found.canary_tasks} task(s) without pausing")
    try:
        client.api.update_service(
            service.id,
            service.attrs["Version"]["Index"],
            labels=labels,
            update_config=swarm.update_config(0),
            fetch_current_spec=True,
        )
    except docker.errors.APIError as exc:
        raise swarm.SwarmError(f"Swarm refused to go on: {exc.explanation or exc}") from None
    limit = (target.health_timeout + swarm.MONITOR + 5) * found.tasks + 30
    swarm.wait_update(client, service, before, limit, live, say, found.deploy_id)
    proxy_container = swarm.proxy_container(client, target.proxy.name)
    if proxy_container is not None:
        rollout.confirm_switch(proxy_container, target, found.canary_revision, confirm_through, say)
    done = swarm.current(client, target.slug)
    assert done is not None
    return done


def abort(
    client: docker.DockerClient, target: rollout.Target, *, on_line: LineSink | None = None
) -> swarm.SwarmRelease:
    """``inv canary abort``: Swarm rolls the service back to the release before the canary."""
    say = on_line or (lambda line: None)
    found = _in_progress(client, target.slug)
    say(f"Asking Swarm to roll {found.service.name} back to {found.live_revision[:12]}")
    swarm.request_rollback(client, found.service)
    wait_rolled_back(found.service, 60 + 60 * found.tasks)
    done = swarm.current(client, target.slug)
    assert done is not None
    return done
