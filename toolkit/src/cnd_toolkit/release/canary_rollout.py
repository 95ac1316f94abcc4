"""A canary deploy on one Docker host: the new colour beside the live one, given a share of the
API's requests step by step through the proxy, gated between steps on both releases' own metrics.

The split is files, not a Caddy reload (:func:`cnd_toolkit.release.proxy.set_split`): each request falls
in one of 256 buckets, and a file per bucket names the colour it goes to. A reload would close
Caddy's idle keep-alive connections and fail the requests clients sent on them just then.

1. Every bucket is given to the live colour (the live file sends every request there too), so
   the canary gets no request before the deploy gives it some.
2. The canary starts, passes its health gate and is warmed, as in a full deploy.
3. Each step of ``Plan.steps`` below 100 gives the canary that share of the buckets, waits
   ``Plan.interval`` seconds, and compares what each release answered in those seconds
   (:func:`cnd_toolkit.release.canary.judge`). A failed gate gives every bucket back to the live colour
   at once, stops and removes the canary, and raises :class:`CanaryFailed` with the comparison.
   So does an error or Ctrl-C.
4. At 100 every bucket is the canary's; the live file names the canary, the old colour is
   drained, the split files removed, the release confirmed through the proxy, and old releases
   pruned.

``Plan.manual`` stops after the first step's gate, leaving the canary at that share for a
person to watch; :func:`promote` and :func:`abort` (``inv canary promote|abort``) end it, and
:func:`state` (``inv canary status``) reads it back from the split files and the releases.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import docker
import docker.errors
from docker.models.containers import Container

from cnd_toolkit.docker import containers
from cnd_toolkit.errors import Interrupted, OpsError
from cnd_toolkit.logs import LineSink
from cnd_toolkit.release import caddy, proxy, rollout, traffic
from cnd_toolkit.release.canary import DEFAULT_STEPS, Gate, Verdict, judge


class CanaryFailed(OpsError):
    """The canary's gate failed: traffic is back on the live release and the canary is gone."""


@dataclass(frozen=True)
class Plan:
    steps: tuple[int, ...] = DEFAULT_STEPS
    interval: float = 60.0  # seconds per step
    gate: Gate = field(default_factory=Gate)
    manual: bool = False
    extend: int = 2  # more intervals a step may take while too few requests came to judge it


@dataclass
class Outcome:
    release: rollout.Release  # the canary's release (live now, unless left midway by hand)
    promoted: bool
    verdicts: list[tuple[int, Verdict]] = field(default_factory=list)  # (share, verdict) per judged step
    shares: list[float] = field(default_factory=list)  # the exact share of each step (buckets / 256)


def _upstream(target: rollout.Target, colour: str) -> str:
    return rollout.upstream_of(target, colour)


def give(proxy_container: Container, target: rollout.Target, live: str, canary: str, share: int) -> float:
    """``share`` % of the buckets to the ``canary`` colour, the rest to ``live``; the exact share."""
    shares = {_upstream(target, live): 100 - share, _upstream(target, canary): share}
    return proxy.set_split(proxy_container, rollout.site(target), shares)


def roll_out(
    client: docker.DockerClient,
    target: rollout.Target,
    image: str,
    plan: Plan,
    *,
    version: str,
    revision: str,
    digest: str = "",
    environment: Mapping[str, str] | None = None,
    on_line: LineSink | None = None,
    confirm_through: Callable[[str, str], None] | None = rollout.confirm,
    scrape: Callable[[Container], traffic.Counts] = traffic.scrape,
    sleep: Callable[[float], None] = time.sleep,
    before_switch: Callable[[str], None] | None = None,
) -> Outcome:
    say = on_line or (lambda line: None)
    live = rollout.serving_release(client, target, proxy.get(client, target.proxy.name))
    if live is None:
        say("Nothing is live to compare a canary with: this first release is deployed in full")
        release = rollout.roll_out(
            client, target, image, version=version, revision=revision, digest=digest,
            environment=environment, on_line=say, confirm_through=confirm_through, before_switch=before_switch,
        )  # fmt: skip
        return Outcome(release, promoted=True)
    proxy_container = proxy.ensure(client, target.proxy, target.slug)
    usual = rollout.site(target)
    if proxy.read_site(proxy_container, target.slug) != proxy.render(proxy_container, usual):
        say(f"Updating {target.backend_url} in the shared proxy for the split (a reload)")
        proxy.apply_site(proxy_container, usual)
    colour = rollout.next_colour(client, target, live, say)
    give(proxy_container, target, live.colour, colour, 0)  # the canary gets no request before the first step
    say(f"Starting the canary {colour} ({version}, {revision[:12]}) beside {live.name}; it gets no request yet")
    try:
        new, started = rollout.start_gated(
            client, target, image, colour=colour, live=live, version=version, revision=revision, digest=digest,
            environment=environment, say=say,
        )  # fmt: skip
    except BaseException:
        proxy.set_split(proxy_container, usual, None)
        raise
    say(f"The canary {new.container.name} is healthy after {started:.1f}s")
    canary = next(r for r in rollout.releases(client, target.slug) if r.name == new.container.name)
    outcome = Outcome(canary, promoted=False)
    try:
        if before_switch is not None:  # before the canary's first request
            before_switch(canary.name)
        for share in plan.steps:
            exact = give(proxy_container, target, live.colour, colour, share)
            outcome.shares.append(exact)
            if share == 100:
                break
            say(
                f"Canary at {share}% of the API's requests ({exact:.1f}%); "
                f"comparing it with {live.name} for {plan.interval:g}s"
            )
            verdict = observe(
                lambda: _read(scrape, live, "the live release"), lambda: _read(scrape, canary, "the canary"), plan,
                sleep=sleep,
            )  # fmt: skip
            outcome.verdicts.append((share, verdict))
            say(f"At {share}%: {verdict.describe()}")
            if verdict.failed:
                raise CanaryFailed(
                    f"the canary failed its gate at {share}%: {'; '.join(verdict.reasons)}. Every request is "
                    f"back on {live.name}, and the canary was stopped and removed"
                )
            if plan.manual:
                say(
                    f"The canary stays at {share}% for you to watch: `inv canary status`, then `inv canary promote` "
                    "or `inv canary abort`"
                )
                return outcome
    except BaseException as exc:
        if not _running(live.container) and _running(canary.container):
            # The live release stopped (killed, crashed): the canary is what serves now, so it stays,
            # with every request, unjudged. Removing it too would leave nothing serving.
            proxy.set_live(proxy_container, rollout.site(target), _upstream(target, canary.colour))
            proxy.set_split(proxy_container, rollout.site(target), None)
            if isinstance(exc, OpsError) and not isinstance(exc, Interrupted):
                raise OpsError(
                    f"the live release {live.name} stopped during the canary ({exc}). The canary {canary.name} "
                    f"({canary.revision[:12]}) now takes every request, unjudged and not recorded: `inv status` "
                    f"shows it; `inv rollback` goes back to {live.revision[:12]}"
                ) from None
            raise
        _back(client, target, proxy_container, live, canary)
        if isinstance(exc, Unreadable) and exc.release is canary:
            raise CanaryFailed(
                f"{exc}: it stopped or restarted during its step. Every request is back on {live.name}, and the "
                "canary was removed (`inv logs` has its last lines)"
            ) from None
        if isinstance(exc, Unreadable):
            raise OpsError(f"{exc}; every request is back on {live.name}, and the canary was removed") from None
        raise
    outcome.release = finish(client, target, proxy_container, canary, say, confirm_through)
    outcome.promoted = True
    return outcome


class Unreadable(OpsError):
    """A release's /metrics could not be read during a step (it stopped, or restarted)."""

    def __init__(self, message: str, release: rollout.Release) -> None:
        super().__init__(message)
        self.release = release


def _read(scrape: Callable[[Container], traffic.Counts], release: rollout.Release, what: str) -> traffic.Counts:
    try:
        return scrape(release.container)
    except OpsError as exc:
        raise Unreadable(f"{what} {release.name} could not be read ({exc})", release) from None


def _running(container: Container) -> bool:
    try:
        container.reload()
    except docker.errors.NotFound:
        return False
    return str(container.status) == "running"


def _back(
    client: docker.DockerClient,
    target: rollout.Target,
    proxy_container: Container,
    live: rollout.Release,
    canary: rollout.Release,
) -> None:
    """Every request back on ``live`` first, then the canary stopped and removed, then the split files gone."""
    give(proxy_container, target, live.colour, canary.colour, 0)
    try:
        containers.stop(canary.container, timeout=containers.stop_timeout_of(canary.container))
        containers.remove(canary.container)
    finally:
        proxy.set_split(proxy_container, rollout.site(target), None)


def observe(
    live: Callable[[], traffic.Counts],
    canary: Callable[[], traffic.Counts],
    plan: Plan,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Verdict:
    """Both releases' answers over one step (longer, up to ``plan.extend`` more intervals, while
    too few came to judge), and the gate's verdict on them. ``live`` and ``canary`` read each
    release's counts now (one container's, or the sum over a swarm's tasks)."""

    def read() -> tuple[float, traffic.Counts, traffic.Counts]:
        return time.monotonic(), live(), canary()  # the same order each time: both windows are as long

    started, first_live, first_canary = read()
    verdict: Verdict | None = None
    for _ in range(1 + plan.extend):
        sleep(plan.interval)
        now, last_live, last_canary = read()
        verdict = judge(last_canary - first_canary, last_live - first_live, max(now - started, 1e-9), plan.gate)
        if verdict.outcome != "inconclusive":
            return verdict
    assert verdict is not None
    return verdict


def finish(
    client: docker.DockerClient,
    target: rollout.Target,
    proxy_container: Container,
    canary: rollout.Release,
    say: LineSink,
    confirm_through: Callable[[str, str], None] | None = rollout.confirm,
) -> rollout.Release:
    """Every request is the canary's: the live file names it, the old colour is drained, the split
    files go (also when the drain is interrupted: Ctrl-C finishes the drain first), and confirm."""
    proxy.set_live(proxy_container, rollout.site(target), _upstream(target, canary.colour))
    try:
        rollout.drain(client, target.slug, keep=canary.name, on_line=say)
    finally:
        proxy.set_split(proxy_container, rollout.site(target), None)
    rollout.confirm_switch(proxy_container, target, canary.revision, confirm_through, say)
    rollout.prune(client, target.slug, keep=target.keep_releases, on_line=say)
    return next(r for r in rollout.releases(client, target.slug) if r.name == canary.name)


@dataclass(frozen=True)
class State:
    """A canary in progress: both releases, and the canary's share of the requests."""

    live: rollout.Release
    canary: rollout.Release
    share: float  # percent


def state(client: docker.DockerClient, target: rollout.Target) -> State | None:
    """The canary in progress (two releases run and the split files divide them), or None."""
    proxy_container = proxy.get(client, target.proxy.name)
    if proxy_container is None:
        return None
    running = [r for r in rollout.releases(client, target.slug) if r.running]
    if len(running) < 2:
        return None
    split = proxy.split_now(proxy_container, rollout.site(target))
    if not split:
        return None
    canary, live = running[0], running[1]  # the newest is the canary
    mine = split.get(_upstream(target, canary.colour), 0)
    return State(live, canary, 100.0 * mine / caddy.SPLIT_BUCKETS)


def promote(
    client: docker.DockerClient,
    target: rollout.Target,
    *,
    on_line: LineSink | None = None,
    confirm_through: Callable[[str, str], None] | None = rollout.confirm,
) -> rollout.Release:
    """``inv canary promote``: every request to the canary, the old colour drained."""
    say = on_line or (lambda line: None)
    found = _in_progress(client, target)
    proxy_container = proxy.ensure(client, target.proxy, target.slug)
    give(proxy_container, target, found.live.colour, found.canary.colour, 100)
    say(f"Every request goes to {found.canary.name}")
    return finish(client, target, proxy_container, found.canary, say, confirm_through)


def abort(client: docker.DockerClient, target: rollout.Target, *, on_line: LineSink | None = None) -> rollout.Release:
    """``inv canary abort``: every request back on the live release, the canary stopped and removed."""
    say = on_line or (lambda line: None)
    found = _in_progress(client, target)
    proxy_container = proxy.ensure(client, target.proxy, target.slug)
    say(f"Every request back on {found.live.name}; stopping the canary {found.canary.name}")
    _back(client, target, proxy_container, found.live, found.canary)
    return found.live


def _in_progress(client: docker.DockerClient, target: rollout.Target) -> State:
    found = state(client, target)
    if found is None:
        raise OpsError(f"no canary of {target.slug} is in progress on this Docker host (`inv status` shows what runs)")
    return found
