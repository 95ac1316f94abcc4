"""Alerts from the target host: Docker's events and resource use, to the terminal and a webhook.

What is watched: the project's release containers on the engine ``DOCKER_HOST`` names (one host:
the blue/green releases; a swarm: the service's task containers on that node).

- a container **died** (any exit but a clean one or a ``docker stop``: deploys, rollbacks and
  Swarm's updates stop containers with SIGTERM, and those are not alerts), naming the exit code
  and signal; **OOM-killed** when the kernel killed it at its memory limit (also a worker the
  kernel killed while the container lived on);
- it turned **unhealthy** (its health check fails);
- a **restart loop**: ``restarts`` deaths of one release (or task slot) within ``window`` seconds;
- **CPU** or **memory** at or above a share of the container's limit for ``samples`` samples in a row;
- **down**: no release running for ``down_grace`` seconds, however they stopped (``docker stop``
  included).

Problems already there when watching starts (an unhealthy release, none running) are reported
first. Each alert is raised once (de-duplicated by its key) and resolved once, naming what it
resolves: a died, OOM or unhealthy alert when the release turns healthy again (or is removed), an
OOM kill of a worker in a container that lived on after ``oom_quiet`` seconds without another, a
restart loop when its window passes without a death, a resource alert when use falls under the
threshold again, down when a release runs. :class:`Tracker` is that state machine, pure; :class:`Monitor` feeds it from
the engine; :class:`Webhook` posts Slack-compatible JSON (``{"text": ...}``) from a thread of its
own, with a timeout and retries, so a slow or failing webhook never holds up watching.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import docker
import docker.errors
import httpx
from docker.models.containers import Container

from cnd_toolkit import logs
from cnd_toolkit.docker.containers import memory_share
from cnd_toolkit.docker.images import RELEASE_LABEL
from cnd_toolkit.errors import OpsError
from cnd_toolkit.release.swarm import SERVICE_LABEL  # on each task's container
from cnd_toolkit.settings import whole_number

SIGNALS = {"1": "SIGHUP", "2": "SIGINT", "6": "SIGABRT", "9": "SIGKILL", "11": "SIGSEGV", "15": "SIGTERM"}


class WatchLost(OpsError):
    """The engine's event stream ended while watching."""


OOM_DEATH_WINDOW = 10.0  # seconds between an OOM event and a death it caused
CLEAN_STOP_SIGNALS = {"15", "SIGTERM", "3", "SIGQUIT"}  # docker stop, Swarm's updates and scale-downs


@dataclass(frozen=True)
class Thresholds:
    cpu: float = 0.9  # share of the container's CPU limit
    memory: float = 0.9  # share of its memory limit
    restarts: int = 3  # deaths of one release within `window` seconds make a restart loop
    window: float = 300.0
    samples: int = 3  # samples in a row over a threshold before a resource alert (and under it to resolve)
    oom_quiet: float = 60.0  # a worker's OOM kill (the container lived on): resolved after this long without another
    down_grace: float = 5.0  # seconds with no release running before "down" (a deploy's switch takes less)


@dataclass(frozen=True)
class Alert:
    key: str  # what de-duplicates it: kind and subject
    kind: str  # died, oom, unhealthy, restart_loop, cpu, memory
    subject: str  # the release (container name on one host, service.slot on a swarm)
    message: str
    severity: str  # critical or warning
    resolved: bool = False
    at: float = field(default_factory=time.time)

    def text(self, project: str) -> str:
        state = "RESOLVED" if self.resolved else self.severity.upper()
        return f"[{project}] {state}: {self.message}"

    def as_json(self, project: str) -> dict[str, Any]:
        return {"project": project, **asdict(self), "text": self.text(project)}


def subject_of(attributes: Mapping[str, str]) -> str:
    """The release a container is: its name on one host; ``service.slot`` for a swarm task
    (each new task of a slot is a new container, but the same release of the service)."""
    task = attributes.get("com.docker.swarm.task.name", "")
    if task:
        service, _, rest = task.partition(".")
        return f"{service}.{rest.partition('.')[0]}"
    return attributes.get("name", "")


class Tracker:
    """Events and samples in, alerts out: each raised once, each resolved once."""

    def __init__(self, thresholds: Thresholds | None = None, clock: Callable[[], float] = time.time) -> None:
        self.thresholds = thresholds or Thresholds()
        self.clock = clock
        self.active: dict[str, Alert] = {}
        self._stopping: set[str] = set()  # container ids a SIGTERM (docker stop) is ending
        self._oom: dict[str, float] = {}  # container id -> its last OOM event: a death right after it is that
        self._deaths: dict[str, deque[float]] = {}
        self._streak: dict[str, int] = {}  # resource key -> samples in a row over (+) or under (-)
        self._oom_live: dict[str, float] = {}  # subject -> the last OOM kill in a container still running
        self._down_since: float | None = None

    def _fire(self, kind: str, subject: str, message: str, severity: str) -> list[Alert]:
        key = f"{kind}:{subject}"
        if key in self.active:
            return []
        alert = Alert(key, kind, subject, message, severity, at=self.clock())
        self.active[key] = alert
        return [alert]

    def alert(self, kind: str, subject: str, message: str, severity: str) -> list[Alert]:
        """An alert from outside the events (the watcher itself), de-duplicated like the others."""
        return self._fire(kind, subject, message, severity)

    def _resolve(self, key: str, why: str) -> list[Alert]:
        found = self.active.pop(key, None)
        if found is None:
            return []
        message = f"{why} (was: {found.message})"
        return [Alert(key, found.kind, found.subject, message, found.severity, resolved=True, at=self.clock())]

    def tick(self) -> list[Alert]:
        """What time alone resolves: a restart loop with no death in its window, and an OOM kill of
        a worker (the container lived on, so no health change will say so) with none since."""
        now, out = self.clock(), []
        for subject, deaths in self._deaths.items():
            while deaths and deaths[0] < now - self.thresholds.window:
                deaths.popleft()
            if not deaths:
                minutes = self.thresholds.window / 60
                out += self._resolve(f"restart_loop:{subject}", f"{subject} has not died in the last {minutes:g} min")
        for subject, at in list(self._oom_live.items()):
            if now - at >= self.thresholds.oom_quiet:
                del self._oom_live[subject]
                out += self._resolve(
                    f"oom:{subject}", f"{subject}: no OOM kill for {self.thresholds.oom_quiet:g} s; it kept running"
                )
        return out

    def running(self, count: int, project: str) -> list[Alert]:
        """How many of the project's releases run now: none for ``down_grace`` seconds is an outage,
        even when each was stopped on purpose (``docker stop``), which no death alert reports."""
        now = self.clock()
        if count:
            self._down_since = None
            return self._resolve(f"down:{project}", f"{count} release(s) of {project} running again")
        if self._down_since is None:
            self._down_since = now
        if now - self._down_since >= self.thresholds.down_grace:
            return self._fire("down", project, f"no release of {project} is running on this Docker host", "critical")
        return []

    def event(self, event: Mapping[str, Any]) -> list[Alert]:
        """Alerts a Docker event raises or resolves (``docker events`` JSON, decoded)."""
        if event.get("Type") != "container":
            return []
        action = str(event.get("Action") or event.get("status") or "")
        actor = event.get("Actor") or {}
        attributes: Mapping[str, str] = actor.get("Attributes") or {}
        container_id = str(actor.get("ID") or event.get("id") or "")
        name = logs.clean_line(attributes.get("name", container_id[:12]))
        subject = subject_of(attributes) or name
        if action.startswith("health_status"):
            status = action.partition(":")[2].strip()
            if status == "unhealthy":
                return self._fire("unhealthy", subject, f"{name} is unhealthy: its health check fails", "critical")
            if status == "healthy":
                # Not a restart loop: a looping release is healthy between deaths (tick() resolves it).
                out: list[Alert] = []
                for kind in ("unhealthy", "died", "oom"):
                    out += self._resolve(f"{kind}:{subject}", f"{name} is healthy again")
                self._oom_live.pop(subject, None)
                return out
            return []
        if action == "kill":
            if str(attributes.get("signal", "")) in CLEAN_STOP_SIGNALS:
                self._stopping.add(container_id)
            return []
        if action == "oom":
            self._oom[container_id] = self.clock()
            self._oom_live[subject] = self.clock()
            return self._fire(
                "oom", subject, f"{name}: the kernel OOM-killed a process at the container's memory limit", "critical"
            )
        if action == "die":
            return self._died(container_id, name, subject, str(attributes.get("exitCode", "?")))
        if action == "destroy":
            self._oom.pop(container_id, None)
            self._oom_live.pop(subject, None)
            self._stopping.discard(container_id)
            out = []
            for kind in ("unhealthy", "died", "oom"):
                out += self._resolve(f"{kind}:{subject}", f"{name} was removed (a newer release or task replaces it)")
            return out
        return []

    def _died(self, container_id: str, name: str, subject: str, code: str) -> list[Alert]:
        # An OOM event names the death that follows it at once (the kernel killed the container's
        # main process); one from a while ago was a worker's, and this death has another cause.
        oom_at = self._oom.get(container_id)
        oom = oom_at is not None and self.clock() - oom_at <= OOM_DEATH_WINDOW
        planned = container_id in self._stopping and not oom
        self._stopping.discard(container_id)
        self._oom.pop(container_id, None)
        if (planned or code == "0") and not oom:
            return []
        out: list[Alert] = []
        if oom:
            self._oom_live.pop(subject, None)  # the container died of it: health or removal resolves it
            # Already raised by the kernel's event, as a rule: this says it again only if that was missed.
            out += self._fire(
                "oom", subject, f"{name} was OOM-killed (exit code {code}): it reached its memory limit", "critical"
            )
        else:
            number = whole_number(code, 129, 255)  # 128 + the signal that ended it
            signal = SIGNALS.get(str(number - 128), "") if number else ""
            how = f"exit code {code}" + (f", {signal}" if signal else "")
            out += self._fire("died", subject, f"{name} died ({how})", "critical")
        now = self.clock()
        deaths = self._deaths.setdefault(subject, deque())
        deaths.append(now)
        while deaths and deaths[0] < now - self.thresholds.window:
            deaths.popleft()
        if len(deaths) >= self.thresholds.restarts:
            minutes = self.thresholds.window / 60
            out += self._fire(
                "restart_loop", subject, f"{subject} is in a restart loop: {len(deaths)} deaths in {minutes:g} min",
                "critical",
            )  # fmt: skip
        return out

    def sample(self, subject: str, kind: str, share: float) -> list[Alert]:
        """A resource sample: ``kind`` (cpu, memory) at ``share`` of the container's limit."""
        limit = self.thresholds.cpu if kind == "cpu" else self.thresholds.memory
        key = f"{kind}:{subject}"
        streak = self._streak.get(key, 0)
        streak = max(streak, 0) + 1 if share >= limit else min(streak, 0) - 1
        self._streak[key] = streak
        label = "CPU" if kind == "cpu" else "memory"
        if streak >= self.thresholds.samples:
            message = f"{subject} uses {share:.0%} of its {label} limit (threshold {limit:.0%})"
            return self._fire(kind, subject, message, "warning")
        if -streak >= self.thresholds.samples:
            return self._resolve(key, f"{subject} is back under its {label} threshold ({share:.0%} of the limit)")
        return []


def cpu_share(stats: Mapping[str, Any], limit_cpus: float) -> float | None:
    """The share of ``limit_cpus`` the container used between the two samples in ``stats``."""
    now, before = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    try:
        used = now["cpu_usage"]["total_usage"] - before["cpu_usage"]["total_usage"]
        system = now["system_cpu_usage"] - before["system_cpu_usage"]
    except (KeyError, TypeError):
        return None
    online = now.get("online_cpus") or len(now.get("cpu_usage", {}).get("percpu_usage") or []) or 1
    if system <= 0 or used < 0:
        return None
    return float(used / system * online / (limit_cpus or online))


def limit_cpus(container: Container) -> float:
    host = container.attrs.get("HostConfig") or {}
    if host.get("NanoCpus"):
        return float(host["NanoCpus"]) / 1e9
    if host.get("CpuQuota") and host.get("CpuPeriod"):
        return float(host["CpuQuota"]) / float(host["CpuPeriod"])
    return 0.0


class Webhook:
    """Posts each alert's text as Slack-compatible JSON, from its own thread, with retries.

    One at a time, in order: a RESOLVED never overtakes the alert it resolves. A refused
    connection or a 5xx/429 answer is tried again (``attempts``, with backoff); a request that got
    no answer is not, since the webhook may have taken it and a second post would repeat the alert.
    """

    def __init__(
        self,
        url: str,
        project: str,
        *,
        timeout: float = 5.0,
        attempts: int = 3,
        backoff: float = 1.0,
        warn: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.url, self.project, self.timeout, self.attempts, self.backoff = url, project, timeout, attempts, backoff
        self.warn = warn
        self.sent = 0
        self.failed = 0
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize=1000)
        self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
        self._thread.start()

    def send(self, alert: Alert) -> None:
        """Queue an alert; never blocks (a full queue drops the alert with a warning)."""
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self.failed += 1
            self.warn(f"alert webhook: 1,000 alerts wait to be sent; dropped: {alert.message}")

    def close(self, wait: float = 5.0) -> None:
        """Send what is queued (for at most ``wait`` seconds), then stop."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=wait)
        self._thread.join(wait)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            while True:
                alert = self._queue.get()
                if alert is None:
                    return
                self._post(client, alert)

    def _post(self, client: httpx.Client, alert: Alert) -> None:
        body = {"text": alert.text(self.project)}
        reason = ""
        for attempt in range(self.attempts):
            try:
                response = client.post(self.url, json=body)
                if response.status_code < 300:
                    self.sent += 1
                    return
                reason = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code != 429:
                    break  # the webhook refuses it: asking again will not change that
            except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError) as exc:
                # The request went out and no answer came: it may have been delivered, and sending
                # it again could post the alert twice. Not asked again.
                reason = f"{type(exc).__name__}: no answer within {self.timeout:g} s"
                reason += "; not sent again, it may have arrived"
                break
            except Exception as exc:  # connection refused, a bad host name, TLS: this thread must live on
                reason = type(exc).__name__  # never the URL: a webhook URL holds its secret
            time.sleep(self.backoff * 2**attempt)
        self.failed += 1
        self.warn(f"alert webhook: not delivered after {attempt + 1} attempt(s) ({reason}): {alert.message}")


@dataclass(frozen=True)
class Watched:
    """What a monitor watches of a project, as its release backend says: the label of its release
    containers, and what a stopped one is while another runs."""

    label: str
    kept: str

    @classmethod
    def host(cls, slug: str) -> Watched:
        return cls(f"{RELEASE_LABEL}={slug}", "for rollback")

    @classmethod
    def swarm(cls, slug: str) -> Watched:
        return cls(f"{SERVICE_LABEL}={slug}", "in Swarm's task history")


class Monitor:
    """Watches one project's releases on one engine; hands each alert to ``on_alert``."""

    def __init__(
        self,
        client: docker.DockerClient,
        slug: str,
        *,
        watched: Watched,
        on_alert: Callable[[Alert], None],
        thresholds: Thresholds | None = None,
        stats_interval: float = 1.0,
        tick_interval: float = 1.0,
    ) -> None:
        self.client, self.slug, self.watched = client, slug, watched
        self.tick_interval = tick_interval
        self.label = watched.label
        self.on_alert = on_alert
        self.tracker = Tracker(thresholds)
        self.stats_interval = stats_interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watched: dict[str, threading.Thread] = {}
        self._events: Any = None
        # Set once the event stream is open and what was already wrong is reported: from then on,
        # every change is seen (a test, or a caller, can wait for it instead of guessing).
        self.watching = threading.Event()

    def containers(self) -> list[Container]:
        return list(self.client.containers.list(filters={"label": self.label, "status": "running"}))

    def _emit(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            self.on_alert(alert)

    def run(self) -> None:
        """Watch until :meth:`stop` (or the engine goes away: :class:`docker.errors.DockerException`).

        What is already wrong when it starts is reported first: a release that is unhealthy, or
        none running (after ``down_grace``)."""
        since = int(time.time()) - 1
        self._events = self.client.events(decode=True, since=since, filters={"type": "container", "label": self.label})
        for container in self.containers():
            self._watch(container)
            health = ((container.attrs.get("State") or {}).get("Health") or {}).get("Status")
            if health == "unhealthy":
                attributes = {**(container.labels or {}), "name": container.name or ""}
                found = {"Type": "container", "Action": "health_status: unhealthy",
                         "Actor": {"ID": container.id, "Attributes": attributes}}  # fmt: skip
                with self._lock:
                    self._emit(self.tracker.event(found))
        threading.Thread(target=self._tick, name="monitor-tick", daemon=True).start()
        self.watching.set()
        try:
            for event in self._events:
                if self._stop.is_set():
                    break
                with self._lock:
                    self._emit(self.tracker.event(event))
                if event.get("Action") == "start":
                    with contextlib.suppress(docker.errors.NotFound):
                        self._watch(self.client.containers.get(event["Actor"]["ID"]))
        except Exception as exc:
            if self._stop.is_set():
                return
            self._lost(f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
        if not self._stop.is_set():
            self._lost("the engine closed its event stream (it stopped or restarted, or the connection dropped)")

    def _lost(self, why: str) -> None:
        """Watching has ended without a stop: an alert says so (nothing watches now), then an error."""
        message = f"inv monitor lost the Docker engine, so nothing watches {self.slug} now: {why}"
        with self._lock:
            self._emit(self.tracker.alert("watch", self.slug, message, "critical"))
        raise WatchLost(f"{message}; run `inv monitor` again once the engine answers (a service manager restarts it)")

    def stop(self) -> None:
        self._stop.set()
        if self._events is not None:
            with contextlib.suppress(Exception):
                self._events.close()

    def _tick(self) -> None:
        """Once a second: what time resolves, and whether any release runs at all."""
        while not self._stop.wait(self.tick_interval):
            try:
                count = len(self.containers())
            except Exception:  # the engine went away: run() reports that
                continue
            with self._lock:
                self._emit(self.tracker.tick() + self.tracker.running(count, self.slug))

    def _watch(self, container: Container) -> None:
        """A thread that samples the container's CPU and memory until it stops."""
        thread = self._watched.get(container.id or "")
        if thread is not None and thread.is_alive():
            return
        thread = threading.Thread(target=self._sample, args=(container,), name=f"stats-{container.name}", daemon=True)
        self._watched[container.id or ""] = thread
        thread.start()

    def _sample(self, container: Container) -> None:
        subject = subject_of({**(container.labels or {}), "name": container.name or ""})
        cpus = limit_cpus(container)
        last = 0.0
        with contextlib.suppress(Exception):  # the container went away, or the engine did
            stream = cast(Iterator[dict[str, Any]], container.stats(stream=True, decode=True))
            for stats in stream:
                if self._stop.is_set():
                    return
                if time.monotonic() - last < self.stats_interval:
                    continue
                last = time.monotonic()
                shares = {"cpu": cpu_share(stats, cpus), "memory": memory_share(stats)}
                if not stats.get("read") or stats.get("read", "").startswith("0001"):
                    return  # the container stopped: the engine sends an empty sample
                with self._lock:
                    for kind, share in shares.items():
                        if share is not None:
                            self._emit(self.tracker.sample(subject, kind, share))


@dataclass
class Snapshot:
    """What ``inv monitor --once`` reports: each release's state, and what is wrong."""

    containers: list[dict[str, Any]]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self, project: str) -> dict[str, Any]:
        return {"project": project, "ok": self.ok, "problems": self.problems, "containers": self.containers}

    def lines(self) -> list[str]:
        """A line per release, as ``inv monitor --once`` prints them (the problems follow)."""
        return [f"{row['name']}: {describe(row)}" for row in self.containers]


def describe(row: Mapping[str, Any]) -> str:
    """One release of :func:`snapshot` in words: its state, and for one that runs, its figures."""
    if row.get("kept"):
        return f"stopped, kept {row['kept']}"
    if row["health"] is None:  # stopped, and none runs: the problems say so
        oom = ", OOM-killed" if row.get("oom_killed") else ""
        return f"{row['status']} (exit code {row.get('exit_code')}{oom})"
    return (
        f"{row['status']}, health {row['health']}, restarts {row['restarts']}"
        + (f", CPU {row['cpu']:.0%}" if row.get("cpu") is not None else "")
        + (f", memory {row['memory']:.0%}" if row.get("memory") is not None else "")
    )


def snapshot(
    client: docker.DockerClient, slug: str, *, watched: Watched, thresholds: Thresholds | None = None
) -> Snapshot:
    """One look at the project's releases: running, health, restarts, OOM, CPU and memory.

    Stopped releases are listed, and are a problem only when none runs. While one runs, a stopped
    one is what a deploy keeps for rollback (on a swarm, an earlier task Swarm keeps in its
    history): its row says ``kept`` and has no health, since the engine reports a stopped
    container's health check as unhealthy (the check stopped with it), not anything that serves."""
    limits = thresholds or Thresholds()
    label = watched.label
    found = sorted(
        client.containers.list(all=True, filters={"label": label}),
        key=lambda c: str((c.attrs.get("State") or {}).get("StartedAt", "")),
        reverse=True,
    )
    running = [c for c in found if c.status in {"running", "paused"}]
    problems: list[str] = []
    rows = []
    for container in found:
        state = container.attrs.get("State") or {}
        health = (state.get("Health") or {}).get("Status", "none")
        row: dict[str, Any] = {
            "name": container.name,
            "status": container.status,
            "health": health,
            "restarts": container.attrs.get("RestartCount", 0),
            "oom_killed": bool(state.get("OOMKilled")),
            "exit_code": state.get("ExitCode"),
        }
        if container.status not in {"running", "paused", "restarting"}:
            row["health"] = None
            if running:
                row["kept"] = watched.kept
        if container.status == "running":
            started = _seconds_since(str(state.get("StartedAt", "")))
            if row["restarts"] and started is not None and started < limits.window:
                problems.append(
                    f"{container.name} restarted {row['restarts']} time(s), the last {started:.0f} s ago "
                    "(its restart policy brought it back after a crash: `inv logs` shows why)"
                )
            stats = cast(dict[str, Any], container.stats(stream=False))
            row["cpu"] = cpu_share(stats, limit_cpus(container))
            row["memory"] = memory_share(stats)
            if health == "unhealthy":
                problems.append(f"{container.name} is unhealthy: its health check fails")
            if row["memory"] is not None and row["memory"] >= limits.memory:
                problems.append(f"{container.name} uses {row['memory']:.0%} of its memory limit")
            if row["cpu"] is not None and row["cpu"] >= limits.cpu:
                problems.append(f"{container.name} uses {row['cpu']:.0%} of its CPU limit")
        elif container.status == "paused":
            problems.append(f"{container.name} is paused (docker pause): it answers nothing; `docker unpause` it")
        elif container.status == "restarting":
            problems.append(f"{container.name} is restarting (restarts: {row['restarts']})")
        rows.append(row)
    if not running:
        last = ""
        if found:
            state = found[0].attrs.get("State") or {}
            how = "OOM-killed" if state.get("OOMKilled") else f"exit code {state.get('ExitCode')}"
            last = f"; the last one, {found[0].name}, stopped ({how})"
        problems.append(f"no release of {slug} runs on this Docker host{last}")
    return Snapshot(rows, problems)


def _seconds_since(stamp: str) -> float | None:
    """Seconds since Docker's RFC 3339 time (nanoseconds, Z), or None if it is not one."""
    import datetime as dt

    head, _, fraction = stamp.rstrip("Z").partition(".")
    try:
        when = dt.datetime.fromisoformat(head).replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    seconds = (dt.datetime.now(dt.UTC) - when).total_seconds() - float(f"0.{fraction or 0}")
    return max(seconds, 0.0)
