"""cnd_toolkit.monitor: the alert state machine, the webhook sender, and a real deploy watched while its
release is killed, restarted and OOM-killed, with a local webhook receiver."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cnd_toolkit import monitor
from cnd_toolkit.release import deploy, rollout

from tests.test_deploy import Stage, stage  # noqa: F401 (the fixture)
from tests.webhook import Receiver


def event(action: str, name: str = "svc-blue-abc", container: str = "c1", **attributes: str) -> dict[str, Any]:
    return {
        "Type": "container",
        "Action": action,
        "Actor": {"ID": container, "Attributes": {"name": name, **attributes}},
    }


def test_a_stop_a_deploy_makes_is_no_alert_and_a_kill_is_one() -> None:
    tracker = monitor.Tracker()
    assert tracker.event(event("kill", signal="15")) == []
    assert tracker.event(event("die", exitCode="0")) == []
    assert tracker.event(event("kill", container="c2", signal="15")) == []
    assert tracker.event(event("die", container="c2", exitCode="137")) == []  # stopped, then SIGKILLed at the timeout
    assert tracker.event(event("kill", container="c3", signal="9")) == []
    [alert] = tracker.event(event("die", container="c3", exitCode="137"))
    assert alert.kind == "died" and "exit code 137, SIGKILL" in alert.message and not alert.resolved
    assert tracker.event(event("die", container="c3", exitCode="137")) == []  # once
    [resolved] = tracker.event(event("health_status: healthy"))
    assert resolved.resolved and resolved.key == alert.key
    assert tracker.event(event("health_status: healthy")) == []  # resolved once


def test_an_oom_kill_is_named_as_such() -> None:
    tracker = monitor.Tracker()
    [first] = tracker.event(event("oom"))
    assert first.kind == "oom" and "OOM-killed a process" in first.message
    assert tracker.event(event("die", exitCode="137")) == []  # the same OOM: raised once
    # A death with no OOM event seen before it (the watcher started late) is still named.
    late = monitor.Tracker()
    late.event(event("oom", container="c9", name="other"))
    late.active.clear()
    [named] = late.event(event("die", container="c9", name="other", exitCode="137"))
    assert named.kind == "oom" and "was OOM-killed (exit code 137)" in named.message
    # A worker killed while the container lives on: the OOM alert resolves when health says so.
    assert [a.resolved for a in tracker.event(event("health_status: healthy"))] == [True]


def test_an_oom_kill_in_a_container_that_lives_on_resolves_after_a_quiet_spell_and_can_fire_again() -> None:
    now = [1000.0]
    tracker = monitor.Tracker(monitor.Thresholds(oom_quiet=60), clock=lambda: now[0])
    [first] = tracker.event(event("oom"))
    now[0] += 30
    assert tracker.event(event("oom")) == [] and tracker.tick() == []  # another within the spell: still one alert
    now[0] += 59
    assert tracker.tick() == []
    now[0] += 2
    [resolved] = tracker.tick()
    assert resolved.resolved and resolved.key == first.key and "(was: " in resolved.message
    [again] = tracker.event(event("oom"))  # a later OOM kill is a new alert, not silenced
    assert again.kind == "oom" and not again.resolved
    # One that killed the container is not resolved by time: its health (or removal) says so.
    dead = monitor.Tracker(monitor.Thresholds(oom_quiet=60), clock=lambda: now[0])
    dead.event(event("oom"))
    dead.event(event("die", exitCode="137"))
    now[0] += 3600
    assert dead.tick() == [] and "oom:svc-blue-abc" in dead.active
    # A worker's OOM kill long ago does not name a later crash of the container: that is a death.
    later = monitor.Tracker(monitor.Thresholds(oom_quiet=60), clock=lambda: now[0])
    later.event(event("oom", container="c7"))
    now[0] += 120
    [quiet] = later.tick()
    now[0] += 600
    [crash] = later.event(event("die", container="c7", exitCode="137"))
    assert quiet.resolved and crash.kind == "died" and "SIGKILL" in crash.message


def test_no_release_running_is_an_outage_even_when_stopped_on_purpose() -> None:
    now = [0.0]
    tracker = monitor.Tracker(monitor.Thresholds(down_grace=5), clock=lambda: now[0])
    assert tracker.event(event("kill", signal="15")) == [] and tracker.event(event("die", exitCode="0")) == []
    assert tracker.running(0, "svc") == []
    now[0] += 4
    assert tracker.running(1, "svc") == []  # a deploy's switch: back within the grace
    assert tracker.running(0, "svc") == []
    now[0] += 5
    [down] = tracker.running(0, "svc")
    assert down.kind == "down" and "no release of svc is running" in down.message
    assert tracker.running(0, "svc") == []  # once
    [up] = tracker.running(2, "svc")
    assert up.resolved and "2 release(s) of svc running again" in up.message


def test_a_restart_loop_and_unhealthy_and_swarm_slots() -> None:
    now = [1000.0]
    tracker = monitor.Tracker(monitor.Thresholds(restarts=3, window=60), clock=lambda: now[0])
    task = {"com.docker.swarm.task.name": "svc.2.x1"}
    kinds = []
    for i in range(3):  # three tasks of slot 2 die within a minute: each a new container
        now[0] += 10
        kinds += [
            a.kind for a in tracker.event(event("die", name=f"svc.2.x{i}", container=f"t{i}", exitCode="1", **task))
        ]
    assert kinds == ["died", "restart_loop"]
    [unhealthy] = tracker.event(
        event("health_status: unhealthy", name="svc.1.y", **{"com.docker.swarm.task.name": "svc.1.y"})
    )
    assert unhealthy.subject == "svc.1" and unhealthy.kind == "unhealthy"
    # Healthy between deaths does not end a loop (it would flap): a window without a death does.
    assert [a.kind for a in tracker.event(event("health_status: healthy", name="svc.2.x3", **task))] == ["died"]
    now[0] += 30
    assert tracker.tick() == []
    assert tracker.event(event("die", name="svc.2.x4", container="t4", exitCode="1", **task))[0].kind == "died"
    now[0] += 61
    [ended] = tracker.tick()
    assert ended.kind == "restart_loop" and ended.resolved and "has not died in the last 1 min" in ended.message
    # Far apart, deaths are no loop.
    spaced = monitor.Tracker(monitor.Thresholds(restarts=3, window=60), clock=lambda: now[0])
    for i in range(3):
        now[0] += 100
        found = spaced.event(event("die", container=f"s{i}", exitCode="1"))
        spaced.event(event("health_status: healthy"))
        assert [a.kind for a in found] == ["died"]


def test_resources_alert_after_a_streak_and_resolve_after_one() -> None:
    tracker = monitor.Tracker(monitor.Thresholds(memory=0.9, samples=3))
    shares = [0.95, 0.95, 0.5, 0.95, 0.95, 0.95, 0.97, 0.5, 0.5, 0.5]
    out = [(a.kind, a.resolved) for s in shares for a in tracker.sample("svc-blue", "memory", s)]
    assert out == [("memory", False), ("memory", True)]


def test_generated_event_streams_fire_and_resolve_each_alert_once() -> None:
    rng = random.Random(20261203)
    actions = ["die", "kill", "oom", "health_status: healthy", "health_status: unhealthy", "destroy", "start"]
    actions += ["tick", "running"]
    for _ in range(200):
        now = [0.0]
        thresholds = monitor.Thresholds(restarts=2, window=50, oom_quiet=30)
        tracker = monitor.Tracker(thresholds, clock=lambda: now[0])  # noqa: B023 (each tracker its own clock)
        open_keys: set[str] = set()
        for _ in range(60):
            now[0] += rng.choice([0, 1, 10])
            action = rng.choice(actions)
            if action in {"tick", "running"}:
                found = tracker.tick() if action == "tick" else tracker.running(rng.choice([0, 0, 1]), "svc")
                for alert in found:
                    assert (alert.key in open_keys) == alert.resolved, alert
                    (open_keys.remove if alert.resolved else open_keys.add)(alert.key)
                continue
            extra = {"exitCode": rng.choice(["0", "1", "137", "143"])} if action == "die" else {}
            if action == "kill":
                extra = {"signal": rng.choice(["9", "15"])}
            name = rng.choice(["a", "b"])
            for alert in tracker.event(event(action, name=name, container=rng.choice(["1", "2", "3"]), **extra)):
                if alert.resolved:
                    assert alert.key in open_keys, alert
                    open_keys.remove(alert.key)
                else:
                    assert alert.key not in open_keys, alert
                    open_keys.add(alert.key)
        assert open_keys == set(tracker.active)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


def wait(predicate: Any, seconds: float = 60) -> bool:
    """Whether ``predicate`` holds within ``seconds`` (a deadline for a wait on state, not a bound)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_the_webhook_retries_and_never_blocks_the_watcher() -> None:
    flaky = Receiver(statuses=[500, 503])
    warnings: list[str] = []
    hook = monitor.Webhook(flaky.url, "svc", backoff=0.05, warn=warnings.append)
    alert = monitor.Alert("died:x", "died", "x", "x died (exit code 1)", "critical")
    hook.send(alert)
    assert wait(lambda: flaky.texts() == ["[svc] CRITICAL: x died (exit code 1)"])
    hook.close()
    flaky.close()
    assert warnings == []
    # A webhook that hangs: sending never waits for it. Its posts are held unanswered (the hook's
    # timeout far off) until the 51 sends have all returned; none is lost once it answers.
    hanging = Receiver(hold=True)
    hook = monitor.Webhook(hanging.url, "svc", timeout=600, warn=warnings.append)
    sender = threading.Thread(target=lambda: [hook.send(alert) for _ in range(51)], daemon=True)
    sender.start()
    sender.join(60)
    assert not sender.is_alive(), "hook.send waited for the webhook"
    assert wait(lambda: len(hanging.arrivals) == 1)  # the first post is out, and held
    assert hanging.received == []  # so the sends returned while it hung
    hanging.let_go()
    assert wait(lambda: len(hanging.received) == 51), len(hanging.received)
    hook.close()
    hanging.close()
    assert warnings == []
    # A post that gets no answer within the hook's timeout: a warning without the URL, and not
    # posted again (it may have arrived).
    silent = Receiver(hold=True)
    timeouts: list[str] = []
    hook = monitor.Webhook(silent.url, "svc", timeout=0.3, attempts=2, backoff=0.05, warn=timeouts.append)
    for _ in range(3):
        hook.send(alert)
    assert wait(lambda: len(timeouts) == 3), timeouts
    for warning in timeouts:
        assert "not delivered after 1 attempt(s) (ReadTimeout: no answer within 0.3 s" in warning, warning
        assert "secret-part" not in warning
    hook.close()
    assert wait(lambda: len(silent.arrivals) >= 3)
    assert len(silent.arrivals) == 3  # each alert posted once: a timed-out post is not repeated
    silent.close()
    # A URL no request can be made to (an empty DNS label): each alert is a warning, the thread lives on.
    broken = monitor.Webhook("http://a..b/hook", "svc", backoff=0.01, attempts=1, warn=warnings.append)
    broken.send(alert)
    broken.send(alert)
    assert wait(lambda: len(warnings) == 2), warnings
    broken.close()
    # A refusal (4xx) is not asked again.
    refusing = Receiver(statuses=[404, 404, 404])
    hook = monitor.Webhook(refusing.url, "svc", backoff=0.05, warn=warnings.append)
    hook.send(alert)
    assert wait(lambda: any("(HTTP 404)" in w and "1 attempt" in w for w in warnings))
    hook.close()
    refusing.close()
    assert len(refusing.arrivals) == 1


@pytest.mark.docker
def test_losing_the_engine_is_an_alert_and_an_error_not_a_quiet_exit(engine: Any, tmp_path: Any) -> None:
    """The engine reached through a TCP relay (socat), which then goes away, as an engine restart
    or a dropped ssh:// connection would: the watcher says so and ends with an error."""
    import os
    import signal
    import subprocess

    import docker

    from tests.conftest import engine_socket, free_port, needed_tool

    socat = needed_tool("socat", "to relay the engine over TCP and then drop it")
    port = free_port()
    relay = subprocess.Popen(
        [socat, f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr", f"UNIX-CONNECT:{engine_socket()}"],
        start_new_session=True,  # its forks (one a connection) share its process group
    )
    try:
        assert wait(lambda: _answers(port))
        client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{port}", timeout=30)
        seen: list[monitor.Alert] = []
        watcher = monitor.Monitor(
            client, f"nothing-{port}", watched=monitor.Watched.host("nothing"), on_alert=seen.append
        )
        failure: list[BaseException] = []

        def watch() -> None:
            try:
                watcher.run()
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        assert watcher.watching.wait(60), failure  # the event stream is open, through the relay
        os.killpg(relay.pid, signal.SIGKILL)  # the relay and its forks
        thread.join(60)
        assert not thread.is_alive()
        assert failure and isinstance(failure[0], monitor.WatchLost), failure
        assert "lost the Docker engine" in str(failure[0])
        assert [a.kind for a in seen] == ["watch"] and "nothing watches" in seen[0].message
        watcher.stop()
        client.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(relay.pid, signal.SIGKILL)
        relay.wait(30)


def _answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.docker
def test_a_killed_release_alerts_resolves_and_an_oom_kill_is_named(
    engine: Any,
    stage: Stage,  # noqa: F811 (the fixture)
    receiver: Receiver,
) -> None:
    deploy.deploy(stage.project, stage.settings, deploy.Options(allow_dirty=True), say=stage.lines.append)
    live = rollout.live_release(engine, stage.project.slug)
    assert live is not None
    hook = monitor.Webhook(receiver.url, stage.project.slug)
    seen: list[monitor.Alert] = []

    def on_alert(alert: monitor.Alert) -> None:
        seen.append(alert)
        hook.send(alert)

    watcher = monitor.Monitor(
        engine, stage.project.slug, watched=monitor.Watched.host(stage.project.slug), on_alert=on_alert
    )
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        assert watcher.watching.wait(60)  # the event stream is open: the kill below is seen
        assert monitor.snapshot(engine, stage.project.slug, watched=monitor.Watched.host(stage.project.slug)).ok
        live.container.kill()
        # From the engine's die event (its exit code and signal), through the webhook.
        assert wait(lambda: any("died (exit code 137, SIGKILL)" in t for t in receiver.texts())), receiver.texts()
        down = monitor.snapshot(engine, stage.project.slug, watched=monitor.Watched.host(stage.project.slug))
        assert not down.ok and "no release of" in down.problems[0] and "exit code 137" in down.problems[0]
        # Recovery: the release runs again and turns healthy; the alert resolves, once.
        live.container.start()
        assert wait(lambda: any("RESOLVED" in t and "healthy again" in t for t in receiver.texts()))
        # An OOM kill: a process in the release allocates past the container's memory limit.
        live.container.exec_run(["python", "-c", "b = bytearray(900 * 1024 * 1024)"])
        assert wait(lambda: any("OOM-killed" in t for t in receiver.texts())), receiver.texts()
        died = [t for t in receiver.texts() if "died" in t and "RESOLVED" not in t]
        assert len(died) == 1  # de-duplicated
        # Stopped on purpose (docker stop) with nothing else running: no death alert, but an outage.
        after = len(receiver.received)  # the alerts from here on: a "down" before it does not count
        live.container.stop(timeout=5)
        assert wait(lambda: any("no release of" in t for t in receiver.texts()[after:])), receiver.texts()
        [note] = deploy.status(stage.project, stage.settings).notes  # inv status: stopped, not "removed"
        assert f"is stopped ({live.name}, exited)" in note, note
        after = len(receiver.received)
        live.container.start()
        assert wait(lambda: any("RESOLVED" in t and "running again" in t for t in receiver.texts()[after:]))
        # Paused: named as such by --once and by inv status (not "stopped" or "nothing deployed").
        live.container.pause()
        try:
            paused = monitor.snapshot(engine, stage.project.slug, watched=monitor.Watched.host(stage.project.slug))
            assert any("is paused" in p for p in paused.problems) and not any(
                "no release" in p for p in paused.problems
            )
            assert "docker unpause" in deploy.status(stage.project, stage.settings).notes[0]
        finally:
            live.container.unpause()
        # A crash its restart policy recovered from is a problem for --once for a while.
        import os
        import signal

        live.container.reload()
        os.kill(int(live.container.attrs["State"]["Pid"]), signal.SIGKILL)
        assert wait(lambda: live.container.reload() or live.container.attrs["RestartCount"] >= 1)
        assert wait(lambda: live.container.reload() or live.container.status == "running")
        restarted = monitor.snapshot(engine, stage.project.slug, watched=monitor.Watched.host(stage.project.slug))
        assert any("restarted 1 time(s)" in p for p in restarted.problems), restarted.problems
    finally:
        watcher.stop()
        hook.close()
        thread.join(60)
