"""Messages a person reads every day, as they read them: the lines `inv` prints last, `inv -l`,
and what a deploy's preflight says to do. None of these needs a Docker engine."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ops import monitor
from ops import project as proj
from ops import settings as settings_mod
from ops.release import deploy


def git_project(root: Path) -> proj.Project:
    """The project's facts with a committed tree at ``root``, for preflights."""
    for name in ("pyproject.toml", "netlify.toml"):
        (root / name).write_bytes((proj.ROOT / name).read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run([*git, *args], cwd=root, check=True)
    return dataclasses.replace(proj.load(), root=root)


# -- inv deploy without Netlify settings ----------------------------------------------------------


def test_a_deploy_without_netlify_settings_names_backend_only_among_its_fixes(tmp_path: Path) -> None:
    """A project whose site is not on Netlify yet can still ship its API: the preflight says how."""
    here = git_project(tmp_path)
    environ = {"BACKEND_URL": "https://api.acme.dev", "IMAGE": "registry.acme.dev/acme/x"}
    for netlify in ({}, {"NETLIFY_SITE_ID": "site-1"}, {"NETLIFY_AUTH_TOKEN": "nfp_token_abcdef0123456789"}):
        settings = settings_mod.load(tmp_path, environ={**environ, **netlify}, defaults={})
        with pytest.raises(deploy.PreflightFailed) as caught:
            deploy.preflight(here, settings, deploy.Options())
        lines = str(caught.value).splitlines()
        assert any("NETLIFY_" in line and "is not set" in line for line in lines), lines
        assert [line for line in lines if "--backend-only" in line] == [
            "  - or deploy the container alone, without Netlify: `inv deploy --backend-only`"
        ], lines
        assert deploy.preflight(here, settings, deploy.Options(netlify=False))  # the fix works as said
    # Only where it helps: --netlify-only cannot be mended by it, and a deploy with Netlify set
    # but another setting missing is not told to leave Netlify out.
    settings = settings_mod.load(tmp_path, environ={"BACKEND_URL": "https://api.acme.dev"}, defaults={})
    with pytest.raises(deploy.PreflightFailed) as caught:
        deploy.preflight(here, settings, deploy.Options(backend=False))
    assert "--backend-only" not in str(caught.value)
    netlify = {"NETLIFY_SITE_ID": "site-1", "NETLIFY_AUTH_TOKEN": "nfp_token_abcdef0123456789"}
    settings = settings_mod.load(tmp_path, environ={"BACKEND_URL": "https://api.acme.dev", **netlify}, defaults={})
    with pytest.raises(deploy.PreflightFailed) as caught:
        deploy.preflight(here, settings, deploy.Options())
    assert "IMAGE is not set" in str(caught.value) and "--backend-only" not in str(caught.value)


# -- inv monitor --once ------------------------------------------------------------------------


def _container(name: str, status: str, started: str, health: str, **state: Any) -> Any:
    """A container as the engine describes it to the SDK (the parts ``snapshot`` reads)."""
    attrs = {
        "State": {"StartedAt": started, "Health": {"Status": health}, **state},
        "RestartCount": 0,
        "HostConfig": {"NanoCpus": 1_000_000_000},
    }
    stats = {
        "cpu_stats": {"cpu_usage": {"total_usage": 200}, "system_cpu_usage": 10_000, "online_cpus": 2},
        "precpu_stats": {"cpu_usage": {"total_usage": 100}, "system_cpu_usage": 9_000},
        "memory_stats": {"usage": 100, "limit": 1000, "stats": {"inactive_file": 0}},
    }
    return SimpleNamespace(name=name, status=status, attrs=attrs, stats=lambda stream: stats)


def _engine(*containers: Any) -> Any:
    return SimpleNamespace(containers=SimpleNamespace(list=lambda all, filters: list(containers)))


@pytest.mark.parametrize(("swarm", "kept"), [(False, "kept for rollback"), (True, "kept in Swarm's task history")])
def test_monitor_once_shows_a_stopped_release_kept_for_rollback_as_such_not_unhealthy(swarm: bool, kept: str) -> None:
    """The engine reports a stopped container's health check as unhealthy: `inv monitor --once`
    printed that for the release a deploy keeps for rollback, then OK."""
    live = _container("svc-green", "running", "2026-01-02T10:00:00.1Z", "healthy", ExitCode=0)
    previous = _container("svc-blue", "exited", "2026-01-01T10:00:00.1Z", "unhealthy", ExitCode=0)
    found = monitor.snapshot(_engine(previous, live), "svc", swarm=swarm)
    assert found.ok and found.problems == []
    assert found.lines() == [
        "svc-green: running, health healthy, restarts 0, CPU 20%, memory 10%",
        f"svc-blue: stopped, {kept}",
    ]
    assert "unhealthy" not in json.dumps(found.as_json("svc"))
    [_, row] = found.as_json("svc")["containers"]
    assert row["health"] is None and row["kept"] == kept.removeprefix("kept ")


def test_monitor_once_with_no_release_running_names_the_problem_not_a_stale_health() -> None:
    crashed = _container("svc-green", "exited", "2026-01-02T10:00:00.1Z", "unhealthy", ExitCode=137, OOMKilled=True)
    found = monitor.snapshot(_engine(crashed), "svc", swarm=False)
    assert not found.ok
    assert found.lines() == ["svc-green: exited (exit code 137, OOM-killed)"]
    assert found.problems == [
        "no release of svc runs on this Docker host; the last one, svc-green, stopped (OOM-killed)"
    ]
    # A release that runs and fails its check is still named unhealthy, and is a problem.
    sick = _container("svc-blue", "running", "2026-01-02T11:00:00.1Z", "unhealthy", ExitCode=0)
    found = monitor.snapshot(_engine(crashed, sick), "svc", swarm=False)
    assert found.problems == ["svc-blue is unhealthy: its health check fails"]
    assert found.lines()[0].startswith("svc-blue: running, health unhealthy")
    assert found.lines()[1] == "svc-green: stopped, kept for rollback"
