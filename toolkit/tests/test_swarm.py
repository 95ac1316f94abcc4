"""DEPLOY_TARGET=swarm on a real one-node Docker Swarm, behind a real Caddy service, images pulled
by digest from a real registry, with a bounded loopback load through Caddy throughout.

The swarm: the engine's own when it is in one already (left as it was), else a one-node swarm
made for these tests and left afterwards. Everything a test makes (services, the proxy, its
configs, volumes and network) is removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
import httpx
import pytest
from cnd_toolkit import monitor, project
from cnd_toolkit import settings as settings_mod
from cnd_toolkit.docker import images
from cnd_toolkit.release import applogs, caddy, deploy, lock, proxy, records, rollout, swarm

from tests import deploy_leaks
from tests.conftest import base_image, free_port, unavailable
from tests.holding import Child
from tests.netlify_api import LocalNetlify
from tests.secret_values import deploy_secrets
from tests.test_rollout import Load

pytestmark = [pytest.mark.docker, pytest.mark.rollouts]
TOKEN = "nfp_swarm_test_token_abcdef0123456789"


def test_a_swarm_target_on_an_engine_that_is_no_manager_is_refused_before_anything(engine: Any) -> None:
    """First in the module: before its fixture makes the engine a swarm. An engine that is in a swarm
    already (the machine's own, or a run's that was killed before it left) cannot show this, and
    is not made to leave it here: a missing prerequisite (CI's engine starts outside a swarm)."""
    if (engine.info().get("Swarm") or {}).get("LocalNodeState") == "active":
        unavailable(
            "the engine is in a swarm already, so it cannot show the refusal of an engine outside one "
            "(`docker swarm leave --force`, if a test run left it there; an engine of its own for the tests)"
        )
    with pytest.raises(swarm.SwarmError, match=r"not in swarm mode: run `inv swarm-init`"):
        swarm.manager_node(engine)


@pytest.fixture(scope="module")
def node(engine: Any) -> Iterator[str]:
    """The manager node's id; the swarm made for the module if the engine was in none."""
    state = (engine.info().get("Swarm") or {}).get("LocalNodeState")
    if state not in {"active", "inactive"}:
        pytest.fail(f"the engine's swarm state is {state!r}: neither in a swarm nor out of one")
    bridges = {n.name for n in engine.networks.list(names=["docker_gwbridge"])}
    made = swarm.init(engine, "127.0.0.1")
    assert made.created == (state == "inactive")
    try:
        yield swarm.manager_node(engine)
    finally:
        if made.created:
            engine.swarm.leave(force=True)
            if "docker_gwbridge" not in bridges:  # made by `swarm init`, and left behind by `leave`
                for network in engine.networks.list(names=["docker_gwbridge"]):
                    network.remove()


@pytest.fixture(scope="module")
def pushed(engine: Any, registry: str) -> dict[str, tuple[str, str]]:
    """The project's image built with two revisions and pushed: revision -> (local tag, digest reference)."""
    me = project.load()
    out = {}
    for revision in ("rev-one", "rev-two"):
        tag = f"{me.slug}-rollout-test:{revision}"
        images.build_image(engine, me.root, [tag], project.build_args(me, base_image(engine), revision=revision))
        out[revision] = (tag, images.push(engine, tag, f"{registry}/swarmtest/{me.slug}", revision))
    return out


@dataclass
class Cluster:
    target: rollout.Target
    node: str
    settings: settings_mod.Settings
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.target.backend_url


def _environ(slug: str, port: int, name: str, proxy_image: str, **more: str) -> dict[str, str]:
    return {
        "DEPLOY_TARGET": "swarm",
        "BACKEND_URL": f"http://127.0.0.1:{port}",
        "PROXY_IMAGE": proxy_image,
        "PROXY_NAME": name,
        "PROXY_HTTP_PORT": str(port),
        "PROXY_HTTPS_PORT": str(free_port()),
        "HEALTH_TIMEOUT": "40",
        **more,
    }


def remove_both(engine: Any, slug: str, proxy_settings: proxy.ProxySettings) -> None:
    """The project's service and the proxy's removed together, then the lock: the engine takes
    seconds to let each go (its tasks' network endpoints), so neither waits for the other."""
    with ThreadPoolExecutor(2) as pool:
        removals = [
            pool.submit(swarm.remove_service, engine, slug),
            pool.submit(swarm.remove_proxy, engine, proxy_settings),
        ]
    for removal in removals:
        removal.result()
    lock.release(engine, slug)


@pytest.fixture
def cluster(engine: Any, node: str, proxy_image: str) -> Iterator[Cluster]:
    me = project.load()
    slug = f"swarm-{uuid.uuid4().hex[:8]}"
    port = free_port()
    environ = _environ(slug, port, f"cnd-swarm-test-{uuid.uuid4().hex[:6]}", proxy_image)
    settings = settings_mod.load(me.root, environ=environ, defaults={})
    target = dataclasses.replace(deploy.target(me, settings), slug=slug, health_timeout=40)
    try:
        yield Cluster(target, node, settings)
    finally:
        remove_both(engine, slug, target.proxy)


def _record(engine: Any, cluster: Cluster, release: swarm.SwarmRelease) -> None:
    """What the deploy pipeline records after a roll-out (rollback reads it)."""
    proxy_container = swarm.proxy_container(engine, cluster.target.proxy.name)
    assert proxy_container is not None
    records.add(
        proxy_container,
        cluster.target.slug,
        records.Record(release.version, release.revision, release.digest, release.name),
    )


def _until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:.0f}s for {what}"
        time.sleep(0.05)


def _exited(container: Any) -> bool:
    try:
        container.reload()
    except docker.errors.NotFound:
        return True
    return container.status != "running"


def _wait_tasks(engine: Any, slug: str, count: int, timeout: float = 60) -> float:
    """Seconds until ``count`` tasks run again (after one was killed)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        live = swarm.current(engine, slug)
        if live is not None and live.running == count:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{slug} did not get back to {count} tasks in {timeout}s")


def test_rolling_update_automatic_rollback_scale_rollback_and_a_killed_task_under_load(
    engine: Any, cluster: Cluster, pushed: dict[str, tuple[str, str]]
) -> None:
    target, say = cluster.target, cluster.lines.append
    (tag_one, ref_one), (tag_two, ref_two) = pushed["rev-one"], pushed["rev-two"]

    first = swarm.roll_out(
        engine, target, tag_one, reference=ref_one, version="1", revision="rev-one", replicas=2, node=cluster.node,
        on_line=say,
    )  # fmt: skip
    assert (first.revision, first.desired, first.running) == ("rev-one", 2, 2)
    assert httpx.get(cluster.url + "/api/version").json()["revision"] == "rev-one"
    _record(engine, cluster, first)
    spec = first.service.attrs["Spec"]
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Image"] == ref_one and "@sha256:" in container["Image"]  # pinned: every node, the same bytes
    assert container["ReadOnly"] and container["CapabilityDrop"] == ["ALL"]
    assert [m["Type"] for m in container["Mounts"]] == ["tmpfs"]
    assert container["Healthcheck"]["Interval"] == swarm.SECOND and "Test" not in container["Healthcheck"]
    assert container["StopGracePeriod"] >= 20 * swarm.SECOND
    limits = spec["TaskTemplate"]["Resources"]["Limits"]
    assert limits["MemoryBytes"] > 0 and limits["NanoCPUs"] > 0
    assert spec["EndpointSpec"]["Mode"] == "dnsrr" and not spec["EndpointSpec"].get("Ports")
    update = spec["UpdateConfig"]
    assert (update["Order"], update["FailureAction"], update["Parallelism"]) == ("start-first", "rollback", 1)
    proxy_spec = swarm.proxy_service(engine, target.proxy.name).attrs["Spec"]  # type: ignore[union-attr]
    assert {p["PublishMode"] for p in proxy_spec["EndpointSpec"]["Ports"]} == {"host"}
    assert proxy_spec["TaskTemplate"]["ContainerSpec"]["Configs"][0]["File"]["Name"] == "/etc/caddy/Caddyfile"

    with Load(cluster.url) as load:
        load.answered("rev-one", 20)
        second = swarm.roll_out(
            engine, target, tag_two, reference=ref_two, version="2", revision="rev-two", node=cluster.node,
            on_line=say,
        )  # fmt: skip
    assert load.failures == [], (load.statuses, cluster.lines)
    assert load.revisions["rev-one"] > 0 and load.revisions["rev-two"] > 0, load.revisions  # the switch, seen
    assert load.total >= 200 and (second.revision, second.running) == ("rev-two", 2)
    assert "Swarm: completed (update completed)" in cluster.lines
    _record(engine, cluster, second)

    # A v3 whose runtime setting is bad never turns healthy: Swarm rolls it back by itself.
    with Load(cluster.url) as load, pytest.raises(rollout.RolloutFailed) as caught:
        swarm.roll_out(
            engine, target, tag_one, reference=ref_one, version="3", revision="rev-three", node=cluster.node,
            environment={"WEB_CONCURRENCY": "abc"}, on_line=say,
        )  # fmt: skip
    message = str(caught.value)
    assert "Swarm rolled the update back: " in message and "rev-two serves" in message, message
    assert "WEB_CONCURRENCY" in message and "WEB_CONCURRENCY" in caught.value.detail, message  # the cause, and the log
    assert load.failures == [] and set(load.revisions) == {"rev-two"}, load.statuses
    back = swarm.current(engine, target.slug)
    assert back is not None and (back.revision, back.running) == ("rev-two", 2)

    for count in (4, 1):
        with Load(cluster.url) as load:
            load.answered(more=20)
            scaled = swarm.scale(engine, target.slug, count, 40, say)
        assert load.failures == [] and scaled.running == count, (count, load.statuses)
        assert len(swarm.tasks(engine, target.slug)) == count

    # `inv rollback`: the previous recorded release, from the registry, at the current task count.
    me = dataclasses.replace(project.load(), slug=target.slug)
    with Load(cluster.url) as load:
        load.answered(more=20)
        done = deploy.rollback(me, cluster.settings, say=say)
    assert done.revision == "rev-one" and done.image == ref_one
    assert load.failures == [], (load.statuses, cluster.lines)
    assert load.revisions["rev-one"] > 0, load.revisions
    live = swarm.current(engine, target.slug)
    assert live is not None and (live.revision, live.desired, live.running) == ("rev-one", 1, 1)
    assert records.load(swarm.proxy_container(engine, target.proxy.name), target.slug)[0].revision == "rev-one"
    with pytest.raises(rollout.RolloutFailed, match=r"no other release of revision nope is recorded"):
        deploy.rollback(me, cluster.settings, "nope", say=say)

    # A task killed outright (SIGKILL): Swarm replaces it; only requests in flight on it may fail.
    swarm.scale(engine, target.slug, 2, 40, say)
    [victim, *_] = [
        t["Status"]["ContainerStatus"]["ContainerID"]
        for t in live.service.tasks(filters={"desired-state": "running"})
        if t["Status"]["State"] == "running"
    ]
    with Load(cluster.url) as load:
        load.answered(more=20)
        killed = engine.containers.get(victim)
        killed.kill()
        _until(lambda: _exited(killed), "the killed task's container to stop")
        replaced = _wait_tasks(engine, target.slug, 2)
    print(f"\nkilled task: {len(load.failures)} of {load.total} requests failed; replaced in {replaced:.1f}s")
    # In flight on it when it died, or sent to it in the second before Caddy looked the name up again.
    assert len(load.failures) <= 12, load.statuses
    assert lock.holder(engine, target.slug) is None


def test_a_swarm_deploy_runs_the_whole_pipeline_and_status_shows_the_tasks(
    engine: Any, node: str, registry: str, proxy_image: str
) -> None:
    """`inv deploy` with DEPLOY_TARGET=swarm: build, smoke, push, service, Netlify; status, remove."""
    me = project.load()
    port = free_port()
    name = f"cnd-swarm-test-{uuid.uuid4().hex[:6]}"
    with LocalNetlify(TOKEN) as netlify:
        environ = _environ(
            me.slug, port, name, proxy_image,
            IMAGE=f"{registry}/acme/{me.slug}", BASE_IMAGE=base_image(engine), REPLICAS="2",
            NETLIFY_AUTH_TOKEN=TOKEN, NETLIFY_SITE_ID="site-1", NETLIFY_API_URL=netlify.api_url,
        )  # fmt: skip
        settings = settings_mod.load(me.root, environ=environ)
        lines: list[str] = []
        try:
            report = deploy.deploy(me, settings, deploy.Options(allow_dirty=True), say=lines.append)
            assert isinstance(report.release, swarm.SwarmRelease)
            assert (report.release.running, report.release.digest) == (2, report.image)
            backend = settings["BACKEND_URL"]
            assert httpx.get(f"{backend}/api/version").json()["revision"] == report.revision
            assert httpx.get(f"{netlify.site_url()}api/version").json()["revision"] == report.revision
            for phase in ("build", "smoke", "push", "rolling update", "switch", "netlify", "publish"):
                assert report.phases.get(phase, -1) >= 0, report.phases
            state = deploy.status(me, settings)
            assert state.health == "2 of 2 tasks up" and len(state.tasks) == 2
            assert {t.health for t in state.tasks} == {"healthy"} and all(t.node for t in state.tasks)
            [record] = state.records
            assert (record.image, record.container, record.netlify_deploy) == (
                report.image, me.slug, report.netlify.deploy.id  # type: ignore[union-attr]
            )  # fmt: skip
            _operations_on_a_swarm(engine, me, settings, report.revision)
            host = settings.override("DEPLOY_TARGET", "host", "test")
            with pytest.raises(deploy.OpsError, match=r"inv scale is for DEPLOY_TARGET=swarm"):
                deploy.scale(me, host, 3, say=lines.append)
            lines.clear()
            with pytest.raises(deploy.PreflightFailed, match=r"runs the swarm proxy service"):
                deploy.deploy(me, host, deploy.Options(allow_dirty=True, netlify=False), say=lines.append)
            assert not any(line.startswith("Building") for line in lines), lines  # refused in the preflight
            assert not engine.networks.list(names=[f"{me.slug}-net"])
            assert deploy.status(me, host).notes == [
                f"a swarm service of {me.slug} runs on this engine: DEPLOY_TARGET=swarm's"
            ]
            removed = deploy.remove(me, settings, say=lines.append)
            assert removed.containers == [f"service {me.slug} (2 tasks)"] and removed.site and removed.records == 1
            assert swarm.current(engine, me.slug) is None
            assert lock.holder(engine, me.slug) is None
        finally:
            remove_both(engine, me.slug, deploy.target(me, settings).proxy)


def test_a_real_inv_deploy_to_a_swarm_leaves_no_secret_in_its_service_or_anywhere(
    engine: Any, node: str, registry: str, proxy_image: str, tmp_path: Path
) -> None:
    """Issue 21, 12 on a swarm: a real `inv deploy` with a registry user and password (so it logs
    in and the service carries the credentials to every node), a Netlify token and a metrics
    token, all generated. None can be read in what it printed, in ``docker inspect`` of the
    services, configs, task containers, volumes and networks it made, in the image, in a file
    it wrote, in the proxy's volumes or in what Netlify received."""
    me = project.load()
    secrets = deploy_secrets(zlib.crc32(b"a real inv deploy to a swarm"))
    port = free_port()
    name = f"cnd-swarm-secrets-{uuid.uuid4().hex[:6]}"
    with LocalNetlify(secrets["NETLIFY_AUTH_TOKEN"]) as netlify:
        environ = {
            **os.environ, **secrets, "CI_DEPLOY_TOKEN": secrets["NETLIFY_AUTH_TOKEN"],
            **_environ(
                me.slug, port, name, proxy_image,
                IMAGE=f"{registry}/acme/{me.slug}", BASE_IMAGE=base_image(engine), REPLICAS="2",
                NETLIFY_SITE_ID="site-1", NETLIFY_API_URL=netlify.api_url,
            ),
        }  # fmt: skip
        settings = settings_mod.load(me.root, environ=environ)
        try:
            deployed = deploy_leaks.deploy_and_read(
                engine, me.root, environ, tmp_path / "tmp",
                names=(me.slug, name), netlify=netlify, proxy_container=lambda: swarm.proxy_container(engine, name),
            )  # fmt: skip
            services = {what for what in deployed.inspected if what.startswith("service ")}
            assert {f"service {me.slug}", f"service {name}"} <= services, list(deployed.inspected)
            assert any(what.startswith("config ") for what in deployed.inspected), list(deployed.inspected)
            spec = deployed.inspected[f"service {me.slug}"]["Spec"]["TaskTemplate"]["ContainerSpec"]
            names = {item.split("=", 1)[0] for item in spec.get("Env") or []}
            assert "APP_METRICS_TOKEN_SHA256" in names and names.isdisjoint(settings_mod.withheld_names()), names
            live = swarm.current(engine, me.slug)
            assert live is not None and live.running == 2
            pushed = engine.images.get(live.digest or live.image)
            inspected = {**deployed.inspected, "the image": pushed.attrs, "the image's history": pushed.history()}
            found = deploy_leaks.find_leaks(
                secrets, output=deployed.output, inspected=inspected, files=deployed.files, texts=deployed.texts
            )
            assert found == {}
            assert deploy_leaks.image_holds(engine, pushed.id, secrets) == []
        finally:
            remove_both(engine, me.slug, deploy.target(me, settings).proxy)
            for image in engine.images.list(name=environ["IMAGE"]):
                for tag in image.tags:
                    if tag.startswith(f"{environ['IMAGE']}:"):
                        with contextlib.suppress(docker.errors.NotFound):
                            engine.images.remove(tag)


def _operations_on_a_swarm(engine: Any, me: project.Project, settings: Any, revision: str) -> None:
    """Issue 10's tasks against the swarm target: status's figures, logs, metrics through the proxy
    on the edge overlay, and a killed task alerted and resolved once Swarm has replaced it."""
    backend = settings["BACKEND_URL"]
    with Load(backend):
        figures = deploy.traffic(me, settings, window=1.0)
    assert "req/s, 5xx 0.0%" in figures and "(the 2 task(s) on this node)" in figures, figures
    found = applogs.sources(deploy.open_backend(me, settings, engine), "all")
    assert len(found) == 3  # both tasks and the proxy's
    assert any('"path": "/api/version"' in line.text for line in applogs.read(found, None, 0))
    # Prometheus on the edge overlay reads the service's metrics through the proxy's port 9180.
    proxy_target = deploy.target(me, settings).proxy
    url = f"http://tasks.{proxy_target.name}:{caddy.METRICS_PORT}/{me.slug}/metrics"
    fetch = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    live = swarm.current(engine, me.slug)
    assert live is not None
    scraped = engine.containers.run(
        live.image, ["python", "-c", fetch], network=swarm.edge_network(proxy_target), remove=True
    )
    assert f'revision="{revision}"' in scraped.decode()
    # inv monitor: a task killed outright is a death of its slot; Swarm's replacement resolves it.
    alerts: list[monitor.Alert] = []
    watcher = monitor.Monitor(engine, me.slug, watched=monitor.Watched.swarm(me.slug), on_alert=alerts.append)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        assert watcher.watching.wait(60), "the monitor did not start watching"
        [task] = [t for t in live.service.tasks(filters={"desired-state": "running"}) if t["Slot"] == 1]
        engine.containers.get(task["Status"]["ContainerStatus"]["ContainerID"]).kill()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(a.resolved for a in alerts):
            time.sleep(0.1)
        kinds = [(a.kind, a.subject, a.resolved) for a in alerts]
        assert kinds[:1] == [("died", f"{me.slug}.1", False)] and ("died", f"{me.slug}.1", True) in kinds, kinds
        _wait_tasks(engine, me.slug, 2)
        assert monitor.snapshot(engine, me.slug, watched=monitor.Watched.swarm(me.slug)).ok
    finally:
        watcher.stop()
        thread.join(5)


ROLL_OUT_IN_A_CHILD = """
import sys, json
sys.path.insert(0, {root!r})
from cnd_toolkit.docker.engine import connect
from cnd_toolkit.release import lock, proxy, rollout, swarm
spec = json.loads(sys.argv[1])
target = rollout.Target(spec["slug"], spec["url"], spec["port"], proxy.ProxySettings(*spec["proxy"]), 40, 1)
client = connect()
with lock.held(client, spec["slug"], revision="rev-two"):
    swarm.roll_out(client, target, spec["image"], reference=spec["reference"], version="2", revision="rev-two",
                   on_line=lambda line: print(line, flush=True))
"""


def test_ctrl_c_in_a_rolling_update_asks_swarm_to_roll_back_and_frees_the_lock(
    engine: Any, cluster: Cluster, pushed: dict[str, tuple[str, str]], tmp_path: Path
) -> None:
    target = cluster.target
    (tag_one, ref_one), (tag_two, ref_two) = pushed["rev-one"], pushed["rev-two"]
    swarm.roll_out(engine, target, tag_one, reference=ref_one, version="1", revision="rev-one", replicas=2)
    spec = {
        "slug": target.slug, "url": target.backend_url, "port": target.container_port, "image": tag_two,
        "reference": ref_two,
        "proxy": [target.proxy.image, target.proxy.http_port, target.proxy.https_port, target.proxy.name],
    }  # fmt: skip
    code = ROLL_OUT_IN_A_CHILD.format(root=str(project.ROOT))
    command = [sys.executable, "-c", code, json.dumps(spec)]
    with Load(cluster.url) as load, Child(command, hold="swarm.updating", folder=tmp_path) as child:
        load.answered("rev-one", 20)
        child.wait_held()  # Swarm is updating the service now, and the child follows it
        child.signal(signal.SIGINT)
        said = child.finish(timeout=60)
        assert "asking Swarm to roll" in said, said

        def rolled_back() -> str:
            live = swarm.current(engine, target.slug)
            assert live is not None
            return str((live.service.attrs.get("UpdateStatus") or {}).get("State", ""))

        deadline = time.monotonic() + 90
        while rolled_back() != "rollback_completed" and time.monotonic() < deadline:
            time.sleep(0.3)
    assert rolled_back() == "rollback_completed"
    assert load.failures == [], (load.statuses, said)
    assert lock.holder(engine, target.slug) is None  # released on the way out
    live = swarm.current(engine, target.slug)
    assert live is not None and (live.revision, live.running) == ("rev-one", 2)
    assert {t.revision for t in swarm.tasks(engine, target.slug)} == {"rev-one"}


def test_a_host_serves_one_target_and_says_how_to_move(engine: Any, cluster: Cluster) -> None:
    """A single-host proxy of the same name is refused for the swarm, naming the projects on it,
    and the swarm's proxy for a single-host deploy, before anything is built."""
    settings = cluster.target.proxy
    single = proxy.ensure(engine, settings, cluster.target.slug)
    try:
        proxy.put_file(single, f"/etc/caddy/sites/{cluster.target.slug}.caddy", "# a project's site\n")
        with pytest.raises(swarm.SwarmError, match=r"runs the single-host proxy container") as caught:
            swarm.ensure_proxy(engine, settings, cluster.node)
        message = str(caught.value)
        assert f"projects still on it: {cluster.target.slug}" in message and f"docker rm -f {settings.name}" in message
        assert swarm.proxy_service(engine, settings.name) is None
    finally:
        proxy.remove(engine, settings)
        for network in engine.networks.list(names=[f"{cluster.target.slug}-net"]):
            network.remove()
    swarm.ensure_proxy(engine, settings, cluster.node)
    with pytest.raises(swarm.SwarmError, match=rf"runs the swarm proxy service {settings.name}.*docker service rm"):
        swarm.refuse_swarm_proxy(engine, settings)


def test_a_proxy_removed_by_hand_comes_back_and_remove_takes_everything(
    engine: Any, cluster: Cluster, pushed: dict[str, tuple[str, str]]
) -> None:
    """The proxy service removed outside these tasks: status says so, the next roll-out makes it
    again (its volume kept the sites and records), and `inv remove` then takes the project off."""
    target = cluster.target
    me = dataclasses.replace(project.load(), slug=target.slug)
    tag, ref = pushed["rev-one"]
    first = swarm.roll_out(engine, target, tag, reference=ref, version="1", revision="rev-one", replicas=1)
    assert deploy.status(me, cluster.settings).notes[0].startswith("the live release rev-one has no record")
    _record(engine, cluster, first)
    gone = swarm.proxy_service(engine, target.proxy.name)
    assert gone is not None
    gone.remove()
    swarm._wait_gone(engine, target.proxy.name)
    assert deploy.status(me, cluster.settings).notes == [
        f"the proxy {target.proxy.name} is gone, so {target.backend_url} answers nothing: `inv deploy` creates it again"
    ]
    swarm.roll_out(engine, target, tag, reference=ref, version="1", revision="rev-one")
    assert httpx.get(cluster.url + "/api/version").json()["revision"] == "rev-one"
    removed = deploy.remove(me, cluster.settings, say=cluster.lines.append)
    assert (removed.containers, removed.site, removed.records) == ([f"service {target.slug} (1 tasks)"], True, 1)
    proxy_container = swarm.proxy_container(engine, target.proxy.name)
    assert records.load(proxy_container, target.slug) == [] and swarm.current(engine, target.slug) is None
    assert proxy.read_file(proxy_container, f"/etc/caddy/sites/{target.slug}.caddy") is None  # type: ignore[arg-type]
