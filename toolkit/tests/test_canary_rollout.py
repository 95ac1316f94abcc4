"""A canary deploy on a real engine, through a real Caddy, under a bounded loopback load: a good
canary goes 10 -> 50 -> 100 with no failed request and about the share it was given at each
step; one that fails some requests, or answers three times slower, is caught at the first step
and every request is back on the live release; and one watched by hand is promoted or aborted.

The releases are the project's own image with a fault added for the test (not in the product):
a request with ``X-Fault: 1`` waits ``FAULT_DELAY`` seconds and fails with a 500 with
probability ``FAULT_RATE``, both from the release's environment.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cnd_toolkit.errors import OpsError
from cnd_toolkit.release import canary, canary_rollout, proxy, rollout, traffic

from tests.test_rollout import Host, app_images, host  # noqa: F401 (the fixtures)

FAULT = """

@bp.before_app_request
def _injected_fault():  # added by tests/test_canary_rollout.py: never in the product
    import os
    import random
    import time as _time

    if request.headers.get("X-Fault") == "1":
        delay = float(os.environ.get("FAULT_DELAY") or 0)
        if delay:
            _time.sleep(delay)
        if random.random() < float(os.environ.get("FAULT_RATE") or 0):
            abort(500)
"""


@pytest.fixture(scope="module")
def faulty(engine: Any, app_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: F811
    context = tmp_path_factory.mktemp("faulty")
    (context / "fault.py").write_text(FAULT)
    (context / "Dockerfile").write_text(
        f"FROM {app_images['rev-two']}\n"
        "USER 0\n"
        "COPY fault.py /tmp/fault.py\n"
        "RUN cat /tmp/fault.py >> /app/api/routes.py && rm /tmp/fault.py\n"
        "USER 10001:10001\n"
        "ENV APP_VERSION=faulty APP_REVISION=rev-faulty\n"
    )
    tag = app_images["rev-two"].rpartition(":")[0] + ":faulty"
    engine.images.build(path=str(context), tag=tag, rm=True, forcerm=True)
    return tag


class Load:
    """Clients asking /api/version (with ``X-Fault: 1``) until stopped; each answer's time (when its
    request was sent), status and the version that answered it (``X-App-Version``, on errors too)."""

    def __init__(self, url: str, clients: int = 6) -> None:
        self.url = url
        self.answers: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        self._lock = threading.Lock()

    def _run(self) -> None:
        with httpx.Client(timeout=10, headers={"X-Fault": "1"}) as http:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    answer = http.get(self.url + "/api/version")
                    found = (sent, answer.status_code, answer.headers.get("X-App-Version", ""))
                except httpx.HTTPError as exc:
                    found = (sent, 0, type(exc).__name__)
                with self._lock:
                    self.answers.append(found)

    def between(self, start: float, end: float) -> list[tuple[float, int, str]]:
        with self._lock:
            return [a for a in self.answers if start <= a[0] < end]

    def answered(self, more: int = 20, version: str = "", timeout: float = 60) -> None:
        """Until ``more`` further answers have come (from ``version``, when given)."""

        def count() -> int:
            with self._lock:
                return sum(1 for a in self.answers if not version or a[2] == version)

        wanted = count() + more
        deadline = time.monotonic() + timeout
        while count() < wanted:
            assert time.monotonic() < deadline, f"fewer than {more} answers in {timeout:.0f}s"
            time.sleep(0.01)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.answered()  # traffic after the last change
        self._stop.set()
        for thread in self._threads:
            thread.join(20)


def assert_share(canary: int, total: int, exact: float, what: str) -> None:
    """``canary`` of ``total`` answers is the share ``exact`` (in %) that random buckets give, within
    4.5 standard deviations of the binomial count (a false alarm about once in 150,000 checks)."""
    assert total >= 20, f"{what}: only {total} answers to judge the share by"
    p = exact / 100
    margin = 4.5 * math.sqrt(p * (1 - p) / total)
    observed = canary / total
    expected = f"{exact:.1f}% +- {100 * margin:.1f}"
    assert abs(observed - p) <= margin, f"{what}: {100 * observed:.1f}% of {total}, not {expected}"


class Said:
    """The deploy's lines, each with the time it was said."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []

    def __call__(self, line: str) -> None:
        self.lines.append((time.monotonic(), line))

    def at(self, needle: str) -> float:
        return next(at for at, line in self.lines if needle in line)


@pytest.fixture
def live(engine: Any, host: Host, faulty: str) -> Iterator[rollout.Release]:  # noqa: F811
    """The faulty image as the live release, healthy and fault-free ("1"), ready for a canary."""
    yield rollout.roll_out(engine, host.target, faulty, version="1", revision="rev-live", environment=env("rev-live"))


def env(revision: str, **extra: str) -> dict[str, str]:
    """The release's environment: /api/version and X-App-Version name it, then the faults."""
    return {"APP_REVISION": revision, "APP_VERSION": revision.removeprefix("rev-"), **extra}


def plan(**changes: Any) -> canary_rollout.Plan:
    made = canary_rollout.Plan(steps=(10, 50, 100), interval=4.0, gate=canary.Gate(min_requests=20))
    return dataclasses.replace(made, **changes)


@pytest.mark.docker
@pytest.mark.rollouts
def test_a_good_canary_goes_10_50_100_with_no_failed_request_at_about_each_share(
    engine: Any,
    host: Host,  # noqa: F811
    live: rollout.Release,
    faulty: str,
) -> None:
    said = Said()
    with Load(host.url) as load:
        load.answered(version="live")
        outcome = canary_rollout.roll_out(
            engine, host.target, faulty, plan(), version="2", revision="rev-canary",
            environment=env("rev-canary"), on_line=said,
        )  # fmt: skip
    assert outcome.promoted and [share for share, _ in outcome.verdicts] == [10, 50]
    assert all(v.outcome == "pass" for _, v in outcome.verdicts), [v.describe() for _, v in outcome.verdicts]
    statuses = [status for _, status, _ in load.answers]
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    for share, exact in zip((10, 50), outcome.shares, strict=False):
        # The split files are in place before the step is announced: every request sent from then on
        # falls in a bucket of the new split (by Caddy's random request id).
        start, end = said.at(f"Canary at {share}%"), said.at(f"At {share}%:")
        answered = load.between(start, end)
        assert_share(sum(1 for *_, v in answered if v == "canary"), len(answered), exact, f"the {share}% step")
    # Promoted: the old colour drained, the usual site back, the canary's revision live.
    assert [r.revision for r in rollout.releases(engine, host.target.slug) if r.running] == ["rev-canary"]
    assert canary_rollout.state(engine, host.target) is None
    assert httpx.get(host.url + "/api/version").json()["revision"] == "rev-canary"


@pytest.mark.docker
@pytest.mark.rollouts
@pytest.mark.parametrize(
    ("environment", "reason"),
    [({"FAULT_RATE": "0.3"}, "5xx"), ({"FAULT_DELAY": "0.06"}, "p95")],
    ids=["errors", "three-times-slower"],
)
def test_a_bad_canary_is_caught_at_the_first_step_and_only_its_requests_failed(
    engine: Any,
    host: Host,  # noqa: F811
    faulty: str,
    environment: dict[str, str],
    reason: str,
) -> None:
    base = {"FAULT_DELAY": "0.02"} if reason == "p95" else {}  # the slow canary: 3x the live one's 20 ms
    rollout.roll_out(engine, host.target, faulty, version="1", revision="rev-live", environment=env("rev-live", **base))
    said = Said()
    with Load(host.url) as load:
        load.answered(version="live")
        with pytest.raises(canary_rollout.CanaryFailed, match=f"failed its gate at 10%: {reason}"):
            canary_rollout.roll_out(
                engine, host.target, faulty, plan(), version="2", revision="rev-canary",
                environment=env("rev-canary", **environment), on_line=said,
            )  # fmt: skip
        reverted = time.monotonic()  # the canary was removed before the deploy raised
        load.answered(50)
    # Every request back on the live release; the canary is gone; the usual site is back.
    assert [r.revision for r in rollout.releases(engine, host.target.slug)] == ["rev-live"]
    assert canary_rollout.state(engine, host.target) is None
    proxy_container = proxy.get(engine, host.target.proxy.name)
    assert proxy_container is not None and not proxy.split_now(
        proxy_container, rollout.site(host.target)
    )  # no split file left
    failed = [a for a in load.answers if a[1] != 200]
    assert all(version == "canary" for _, status, version in failed if status == 500), failed[:5]
    assert not [a for a in failed if a[1] != 500], failed[:5]  # nothing but the canary's own 500s
    assert not [a for a in load.between(reverted, float("inf")) if a[2] == "canary"]
    canary_share = sum(1 for a in load.between(said.at("Canary at 10%"), reverted) if a[2] == "canary")
    if reason == "5xx":
        assert 0 < len(failed) <= canary_share  # only requests the canary answered failed
    else:
        assert failed == []


@pytest.mark.docker
@pytest.mark.rollouts
def test_a_canary_watched_by_hand_is_promoted_or_aborted(
    engine: Any,
    host: Host,  # noqa: F811
    live: rollout.Release,
    faulty: str,
) -> None:
    outcome = canary_rollout.roll_out(
        engine, host.target, faulty, plan(manual=True), version="2", revision="rev-canary",
        environment=env("rev-canary"),
    )  # fmt: skip
    assert not outcome.promoted and [share for share, _ in outcome.verdicts] == [10]
    found = canary_rollout.state(engine, host.target)
    assert found is not None and found.share == 100 * 26 / 256 and found.live.name == live.name  # 26 of 256 buckets
    assert found.canary.revision == "rev-canary"
    aborted = canary_rollout.abort(engine, host.target)
    assert aborted.name == live.name and canary_rollout.state(engine, host.target) is None
    assert [r.revision for r in rollout.releases(engine, host.target.slug)] == ["rev-live"]
    with pytest.raises(Exception, match="no canary"):
        canary_rollout.promote(engine, host.target)
    canary_rollout.roll_out(
        engine, host.target, faulty, plan(manual=True), version="3", revision="rev-third",
        environment=env("rev-third"),
    )  # fmt: skip
    promoted = canary_rollout.promote(engine, host.target)
    assert promoted.revision == "rev-third" and canary_rollout.state(engine, host.target) is None
    assert [r.revision for r in rollout.releases(engine, host.target.slug) if r.running] == ["rev-third"]


@pytest.mark.docker
@pytest.mark.rollouts
def test_split_files_naming_a_colour_that_is_down_cost_no_request(
    engine: Any,
    host: Host,  # noqa: F811
    live: rollout.Release,
) -> None:
    """Files a killed deploy left, or a canary that died: the bucket's colour is tried first and
    the other behind it, so every request is still answered, by the live release."""
    proxy_container = proxy.get(engine, host.target.proxy.name)
    assert proxy_container is not None
    other = rollout.COLOURS[1] if live.colour == rollout.COLOURS[0] else rollout.COLOURS[0]
    canary_rollout.give(proxy_container, host.target, live.colour, other, 100)  # every bucket to a colour not running
    with Load(host.url) as load:
        load.answered(300)  # more than one request per bucket, on average
    assert load.answers and {status for _, status, _ in load.answers} == {200}
    assert {version for *_, version in load.answers} == {"live"}
    assert canary_rollout.state(engine, host.target) is None  # one release runs: no canary in progress
    proxy.set_split(proxy_container, rollout.site(host.target), None)


@pytest.mark.docker
@pytest.mark.rollouts
def test_when_the_live_release_stops_mid_canary_the_canary_is_kept_serving(
    engine: Any,
    host: Host,  # noqa: F811
    live: rollout.Release,
    faulty: str,
) -> None:
    """Removing the canary too would leave nothing serving: it stays, takes every request, and the
    message says so (the canary killed instead: every request back, the canary removed, said)."""
    calls = 0

    def scrape(container: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:  # after the step's first reads: the live release dies
            live.container.stop(timeout=1)
        return traffic.scrape(container)

    with pytest.raises(OpsError, match=r"the live release .* stopped during the canary .* now takes every request"):
        canary_rollout.roll_out(
            engine, host.target, faulty, plan(), version="2", revision="rev-canary", environment=env("rev-canary"),
            scrape=scrape,
        )  # fmt: skip
    running = [r for r in rollout.releases(engine, host.target.slug) if r.running]
    assert [r.revision for r in running] == ["rev-canary"]
    proxy_container = proxy.get(engine, host.target.proxy.name)
    assert proxy_container is not None and not proxy.split_now(proxy_container, rollout.site(host.target))
    assert httpx.get(host.url + "/api/version").json()["revision"] == "rev-canary"

    calls = 0
    canary_name = ""

    def kill_canary(container: Any) -> Any:
        nonlocal calls, canary_name
        calls += 1
        if calls == 3:
            [new] = [r for r in rollout.releases(engine, host.target.slug) if r.revision == "rev-next"]
            canary_name = new.name
            new.container.stop(timeout=1)
        return traffic.scrape(container)

    with pytest.raises(
        canary_rollout.CanaryFailed,
        match=r"the canary .* could not be read .* stopped or restarted during its step\. Every request is back on",
    ):
        canary_rollout.roll_out(
            engine, host.target, faulty, plan(), version="3", revision="rev-next", environment=env("rev-next"),
            scrape=kill_canary,
        )  # fmt: skip
    assert canary_name and [r.revision for r in rollout.releases(engine, host.target.slug) if r.running] == [
        "rev-canary"
    ]
    assert httpx.get(host.url + "/api/version").json()["revision"] == "rev-canary"


@pytest.mark.docker
@pytest.mark.rollouts
def test_split_files_left_behind_never_block_a_deploy_or_a_rollback(
    engine: Any,
    host: Host,  # noqa: F811
    live: rollout.Release,
    faulty: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C in a canary's last drain, or `inv rollback` in a canary's middle: no split file stays
    to send requests by bucket to a colour that comes back."""
    real = rollout._stop_others
    interrupted: list[str] = []

    def stop_others(*args: Any) -> None:
        if not interrupted:
            interrupted.append("once")
            raise KeyboardInterrupt  # Ctrl-C as the drain starts: the drain finishes, then the interrupt
        real(*args)

    monkeypatch.setattr(rollout, "_stop_others", stop_others)
    with pytest.raises(KeyboardInterrupt):
        canary_rollout.roll_out(
            engine, host.target, faulty, plan(steps=(10, 100), interval=1.0), version="2", revision="rev-canary",
            environment=env("rev-canary"),
        )  # fmt: skip
    monkeypatch.setattr(rollout, "_stop_others", real)
    proxy_container = proxy.get(engine, host.target.proxy.name)
    assert proxy_container is not None and not proxy.split_now(proxy_container, rollout.site(host.target))
    assert [r.revision for r in rollout.releases(engine, host.target.slug) if r.running] == ["rev-canary"]

    # Files a killed deploy left (one release runs): the next deploy removes them and switches.
    other = rollout.COLOURS[1] if live.colour == rollout.COLOURS[0] else rollout.COLOURS[0]
    canary_rollout.give(
        proxy_container, host.target, live.colour, other, 50
    )  # half to each colour, one of them stopped
    lines: list[str] = []
    rollout.roll_out(engine, host.target, faulty, version="3", revision="rev-three", environment=env("rev-three"),
                     on_line=lines.append)  # fmt: skip
    assert "Removing the split files a canary left behind (the live colour serves)" in lines
    assert not proxy.split_now(proxy_container, rollout.site(host.target))

    # `inv rollback` in the middle of a canary watched by hand: the canary drained, its files gone.
    canary_rollout.roll_out(
        engine, host.target, faulty, plan(manual=True), version="4", revision="rev-four", environment=env("rev-four"),
    )  # fmt: skip
    assert proxy.split_now(proxy_container, rollout.site(host.target))
    back = rollout.roll_back(engine, host.target, "rev-three")
    assert back.revision == "rev-three" and not proxy.split_now(proxy_container, rollout.site(host.target))
    assert [r.revision for r in rollout.releases(engine, host.target.slug) if r.running] == ["rev-three"]
