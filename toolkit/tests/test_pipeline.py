"""The deploy pipeline (``deploy.deploy``), written once against the release-backend interface,
run against a backend in memory (tests/memory_backend.py): its order, and what a failure at
each step leaves. The same pipeline runs on the real engine in test_deploy, test_rollout and
test_swarm."""

from __future__ import annotations

from pathlib import Path

import pytest
from cnd_toolkit import project as proj
from cnd_toolkit.errors import Interrupted, OpsError, SmokeFailed
from cnd_toolkit.release import backends, deploy, rollout
from cnd_toolkit.settings import Settings, load

from tests.conftest import git_project
from tests.memory_backend import MemoryBackend

ENVIRON = {"BACKEND_URL": "http://127.0.0.1", "REGISTRY_PUSH": "off", "NETLIFY_DEPLOY": "off"}


def stage(tmp_path: Path, **environ: str) -> tuple[proj.Project, Settings, MemoryBackend]:
    here = git_project(tmp_path)
    settings = load(tmp_path, environ={**ENVIRON, **environ}, defaults={})
    return here, settings, MemoryBackend(deploy.target(here, settings))


def run(here: proj.Project, settings: Settings, backend: MemoryBackend, **options: bool) -> deploy.Report:
    return deploy.deploy(
        here, settings, deploy.Options(netlify=False, **options), say=lambda line: None, backend=backend
    )


def test_a_deploy_builds_smokes_rolls_out_and_records_under_the_lock(tmp_path: Path) -> None:
    here, settings, backend = stage(tmp_path)
    report = run(here, settings, backend)
    revision = proj.git_revision(tmp_path)
    assert backend.calls == ["lock deploy", "build", "smoke", "roll_out", f"record {revision}", "unlock deploy"]
    assert report.release is not None and backend.live() == report.release and report.revision == revision
    assert [r.revision for r in backend.history()] == [revision]
    assert list(report.phases)[:3] == ["preflight", "build", "smoke"] and "record" in report.phases
    assert report.image.startswith(f"{here.slug}:") and "@sha256:" in report.image  # not pushed: the image id


def test_a_pushed_release_runs_and_records_the_digest(tmp_path: Path) -> None:
    here, settings, backend = stage(tmp_path, REGISTRY_PUSH="on", IMAGE="registry.acme.dev/acme/orders")
    report = run(here, settings, backend)
    assert backend.calls[1:4] == ["build", "smoke", "push"]
    assert report.release is not None and report.release.digest == f"registry.acme.dev/acme/orders@sha256:{'a' * 64}"
    assert backend.history()[0].image == report.image == report.release.digest


@pytest.mark.parametrize("step", ["build", "smoke", "roll_out"])
def test_a_failed_step_leaves_the_live_release_and_records_nothing(tmp_path: Path, step: str) -> None:
    here, settings, backend = stage(tmp_path)
    first = run(here, settings, backend).release
    backend.calls.clear()
    backend.fail[step] = SmokeFailed("the smoke suite failed") if step == "smoke" else OpsError(f"{step} failed")
    with pytest.raises(OpsError):
        run(here, settings, backend)
    assert backend.live() == first and len(backend.history()) == 1
    assert backend.calls[-1] == "unlock deploy" and backend.lock_holder() is None
    later = ["build", "smoke", "roll_out"]
    assert [c for c in backend.calls if c in later] == later[: later.index(step) + 1]  # nothing after it ran


def test_a_problem_of_the_host_stops_the_deploy_before_the_lock_and_the_build(tmp_path: Path) -> None:
    here, settings, backend = stage(tmp_path)
    backend.problems = ["the proxy's image cannot be pulled"]
    with pytest.raises(deploy.PreflightFailed, match="the proxy's image cannot be pulled"):
        run(here, settings, backend)
    assert backend.calls == []


def test_a_canary_in_progress_stops_a_deploy_and_names_it(tmp_path: Path) -> None:
    here, settings, backend = stage(tmp_path)
    backend.canary_in_progress = backends.CanaryNow("orders-blue", "b" * 40, "orders-green", "a" * 40, 10.0)
    with pytest.raises(deploy.PreflightFailed, match=r"a canary of .* is in progress \(orders-blue at 10%\)"):
        run(here, settings, backend)
    assert backend.calls == []


def test_a_canary_left_to_a_person_is_not_recorded_and_a_promoted_one_is(tmp_path: Path) -> None:
    here, settings, backend = stage(tmp_path)
    report = run(here, settings, backend, canary=True, manual=True)
    assert report.canary is not None and not report.canary.promoted and report.release is None
    assert backend.history() == [] and "canary" in backend.calls
    report = run(here, settings, backend, canary=True)
    assert report.canary is not None and report.canary.promoted and report.release == backend.live()
    assert len(backend.history()) == 1


def test_ctrl_c_past_the_switch_records_the_release_that_serves(tmp_path: Path) -> None:
    here, settings, backend = stage(tmp_path)
    backend.fail["after_switch"] = KeyboardInterrupt()
    with pytest.raises(Interrupted) as caught:
        run(here, settings, backend)
    live = backend.live()
    assert isinstance(live, rollout.Release)
    assert f"{live.name} ({live.revision[:12]}) serves" in str(caught.value)
    assert [r.revision for r in backend.history()] == [live.revision] and backend.lock_holder() is None


def test_ctrl_c_before_the_switch_of_a_first_deploy_says_nothing_serves(tmp_path: Path) -> None:
    here, settings, backend = stage(tmp_path)
    backend.fail["smoke"] = KeyboardInterrupt()
    with pytest.raises(Interrupted, match="nothing serves"):
        run(here, settings, backend)
    assert backend.history() == [] and backend.live() is None


def test_the_lock_of_another_deploy_refuses_this_one(tmp_path: Path) -> None:
    here, settings, backend = stage(tmp_path)
    with backend.hold_lock(action="rollback"), pytest.raises(OpsError, match="is locked"):
        run(here, settings, backend)
    assert "build" not in backend.calls
