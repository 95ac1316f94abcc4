"""Every test leaves the machine as it found it: no container, network, volume, swarm, service,
config or child process of its own outlives it (nor a module's fixtures their module).

What one test leaves behind changes the next: a proxy container still bound to a port, a swarm
that puts the engine in swarm mode, a server process still answering. Such a leak made tests pass
alone and fail after others, so each test is checked, and a leak fails the test that made it,
naming what was left. Under CI the leftovers are then removed, so one leak is one failure and not
a cascade; elsewhere they are only named (another run may share the engine).

On with ``CND_CHECK_LEAKS=1`` (the template's CI sets it, and the generated project's CI workflow):
the check compares the whole engine before and after, so it is for an engine the run has to
itself, not one that other work shares. conftest.py imports the fixtures.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cnd_toolkit.testing import in_ci

# Objects the engine removes by itself after a test's own cleanup returned (the task containers of a
# removed service, a network whose last endpoint is going) are given this long to go.
SETTLE_SECONDS = float(os.environ.get("CND_LEAK_SETTLE_SECONDS") or 60)


SWARM_NETWORKS = {"docker_gwbridge", "ingress"}


def enabled() -> bool:
    return os.environ.get("CND_CHECK_LEAKS") == "1"


def _client() -> Any | None:
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except Exception:  # no engine: only processes are checked
        return None


def engine_state(client: Any) -> dict[str, set[str]]:
    """Names of what the engine holds, by kind (plus the node's swarm state)."""
    api = client.api
    state = {
        "container": {(c.get("Names") or [c["Id"]])[0].lstrip("/") for c in api.containers(all=True)},
        "network": {n["Name"] for n in api.networks()},
        "volume": {v["Name"] for v in (api.volumes().get("Volumes") or [])},
    }
    swarm = api.info().get("Swarm") or {}
    state["swarm"] = {f"node state {swarm.get('LocalNodeState', '')}"}
    if swarm.get("LocalNodeState") == "active":
        # The swarm's own networks: the engine makes docker_gwbridge at the first task it starts,
        # inside whichever test that is; they belong to the swarm and go with it (once it is left,
        # one still there is a leak like any other).
        state["network"] -= SWARM_NETWORKS
    if swarm.get("ControlAvailable"):
        state["service"] = {s["Spec"]["Name"] for s in api.services()}
        state["config"] = {c["Spec"]["Name"] for c in api.configs()}
        state["secret"] = {s["Spec"]["Name"] for s in api.secrets()}
    return state


def child_processes() -> set[str]:
    """This process's descendants still running, as 'pid command'."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid ...: comm may hold spaces and parentheses.
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] == "Z":
                continue
            parents[int(entry.name)] = int(fields[1])
            names[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    mine, me = set(), os.getpid()
    for pid in parents:
        ancestor, hops = parents.get(pid, 0), 0
        while ancestor and ancestor != me and hops < 64:
            ancestor, hops = parents.get(ancestor, 0), hops + 1
        if ancestor == me:
            mine.add(f"{pid} {names[pid][:160].strip()}")
    return mine


def _new(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, set[str]]:
    return {kind: names - before.get(kind, set()) for kind, names in after.items() if names - before.get(kind, set())}


def uses_engine(item: pytest.Item) -> bool:
    return item.get_closest_marker("docker") is not None or "engine" in getattr(item, "fixturenames", ())


class Watch:
    def __init__(self, engine: bool) -> None:
        self.client = _client() if engine else None
        self.engine_before = engine_state(self.client) if self.client is not None else {}
        self.processes_before = child_processes()

    def new(self) -> dict[str, set[str]]:
        """What is new since the start, by kind."""
        found = _new(self.engine_before, engine_state(self.client)) if self.client is not None else {}
        processes = child_processes() - self.processes_before
        if processes:
            found["process"] = processes
        return found

    def left(self) -> dict[str, set[str]]:
        """What is new since the start, once the engine has had its time to finish removals."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            found = _not_session_owned(self.new())
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def clear(self, left: dict[str, set[str]]) -> None:
        """Remove what was left (in CI only: elsewhere, another run may own it)."""
        if not in_ci():
            return
        for line in left.get("process", set()):
            with contextlib.suppress(OSError):
                os.kill(int(line.split()[0]), 9)
        if self.client is None:
            return
        api = self.client.api
        for name in left.get("service", set()):
            with contextlib.suppress(Exception):
                api.remove_service(name)
        for name in left.get("container", set()):
            with contextlib.suppress(Exception):
                api.remove_container(name, force=True, v=True)
        for name in left.get("config", set()):
            with contextlib.suppress(Exception):
                api.remove_config(name)
        for name in left.get("secret", set()):
            with contextlib.suppress(Exception):
                api.remove_secret(name)
        for name in left.get("network", set()):
            with contextlib.suppress(Exception):
                api.remove_network(name)
        for name in left.get("volume", set()):
            with contextlib.suppress(Exception):
                api.remove_volume(name, force=True)
        if "swarm" in left and "node state inactive" in self.engine_before.get("swarm", set()):
            with contextlib.suppress(Exception):
                self.client.swarm.leave(force=True)


# What session-scoped fixtures made (a registry process, say): they live for the whole run by
# design, and one that a module's later test asks for first is made inside that module's window.
_session_owned: dict[str, set[str]] = {}


class _SessionFixtures:
    """Records what session-scoped fixtures make. A plugin of its own (:func:`pytest_configure`),
    not a conftest hook: pytest sets a session fixture up through the session's hooks, which a
    conftest.py in a test folder is not part of, so such a hook never saw them."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Iterator[None]:
        if not enabled() or fixturedef.scope != "session":
            yield
            return
        watch = Watch(engine=True)
        yield
        for kind, names in watch.new().items():
            _session_owned.setdefault(kind, set()).update(names)


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("cnd-session-fixtures"):
        config.pluginmanager.register(_SessionFixtures(), "cnd-session-fixtures")


def _not_session_owned(left: dict[str, set[str]]) -> dict[str, set[str]]:
    kept = {kind: names - _session_owned.get(kind, set()) for kind, names in left.items()}
    return {kind: names for kind, names in kept.items() if names}


def describe(left: dict[str, set[str]]) -> str:
    return "; ".join(f"{kind}: {', '.join(sorted(names))}" for kind, names in sorted(left.items()))


def _checked(what: str, engine: bool) -> Iterator[None]:
    if not enabled():
        yield
        return
    watch = Watch(engine)
    yield
    left = watch.left()
    if left:
        watch.clear(left)
        pytest.fail(f"{what} left behind what a later test would meet: {describe(left)}", pytrace=False)


@pytest.fixture(scope="module", autouse=True)
def module_leaves_nothing(request: pytest.FixtureRequest) -> Iterator[None]:
    """What the module's fixtures made is gone after its last test."""
    module = request.node
    engine = any(uses_engine(item) for item in request.session.items if getattr(item, "module", None) is module.obj)
    yield from _checked(f"the module {module.name}", engine)


@pytest.fixture(autouse=True)
def test_leaves_nothing(request: pytest.FixtureRequest) -> Iterator[None]:
    """What the test made (beyond its module's fixtures) is gone when it ends."""
    yield from _checked("this test", uses_engine(request.node))


# CND_CPU_REPORT=1 (.ci/run sets it): the machine's busy CPU time over each test, every process
# counted (the engine, containers, servers it starts), summed per module and listed at the end.
# CI's time budget is spent in CPU on this 2-core machine: this says where.
_cpu: dict[str, tuple[float, float]] = {}


def _busy_seconds() -> float:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(value) for value in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle and iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    if os.environ.get("CND_CPU_REPORT") != "1" or not Path("/proc/stat").exists():
        yield
        return
    busy, wall = _busy_seconds(), time.monotonic()
    yield
    _cpu[item.nodeid] = (_busy_seconds() - busy, time.monotonic() - wall)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _cpu:
        return
    modules: dict[str, list[float]] = {}
    for nodeid, (busy, wall) in _cpu.items():
        totals = modules.setdefault(nodeid.split("::", 1)[0], [0.0, 0.0])
        totals[0] += busy
        totals[1] += wall
    write = terminalreporter.write_line
    busy_all, wall_all = sum(b for b, _ in _cpu.values()), sum(w for _, w in _cpu.values())
    terminalreporter.section(f"CPU: {busy_all:.0f} busy core-seconds in {wall_all:.0f} s of tests")
    for name, (busy, wall) in sorted(modules.items(), key=lambda kv: -kv[1][0]):
        write(f"{busy:8.1f} cpu-s {wall:8.1f} s  {name}")
    write("slowest in CPU:")
    for nodeid, (busy, wall) in sorted(_cpu.items(), key=lambda kv: -kv[1][0])[:30]:
        write(f"{busy:8.1f} cpu-s {wall:8.1f} s  {nodeid}")
