"""The deploy pipeline (``deploy.deploy``), written once against the release-backend interface,
run against a backend in memory (tests/memory_backend.py): its order, and what a failure at
each step leaves. The same pipeline runs on the real engine in test_deploy, test_rollout and
test_swarm."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from cnd_toolkit import project as proj
from cnd_toolkit import redact
from cnd_toolkit.errors import Interrupted, OpsError, SmokeFailed
from cnd_toolkit.release import backends, deploy, hooks, rollout
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


# --------------------------------------------------------------------------- hooks

# Each hook writes what it was given to $HOOK_OUT/<hook>.env (outside the tree, which stays clean).
ENV_DUMP = (
    '#!/bin/sh\nenv | grep -E "^(CND_|NETLIFY_AUTH_TOKEN|HOOK_SEEN|DOCKER_HOST)" | sort > "$HOOK_OUT/$CND_HOOK.env"\n'
)


@pytest.fixture(autouse=True)
def hook_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path.parent / f"{tmp_path.name}-hooks-out"
    out.mkdir()
    monkeypatch.setenv("HOOK_OUT", str(out))
    return out


def hook(root: Path, name: str, body: str = ENV_DUMP, mode: int = 0o755, commit: bool = True) -> Path:
    path = root / "hooks" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(body)
    path.chmod(mode)
    if commit:  # as a team commits its hooks: the deploy's preflight refuses untracked files
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
        for args in (["add", "-A"], ["commit", "-qm", f"hook {name}"]):
            subprocess.run([*git, *args], cwd=root, check=True)
    return path


def seen(out: Path, name: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (out / f"{name}.env").read_text().splitlines())


def test_hooks_run_before_the_build_before_the_switch_and_after_the_record_with_the_releases_facts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook_out: Path
) -> None:
    here, settings, backend = stage(tmp_path, DOCKER_HOST="ssh://deploy@engine.example")  # as a .env file names it
    first = run(here, settings, backend).release
    assert first is not None
    for name in ("pre-build", "pre-switch", "post-deploy"):
        hook(tmp_path, name)
    monkeypatch.setenv("NETLIFY_AUTH_TOKEN", "nfp_not-for-hooks-0123456789")  # the deploy's secret
    monkeypatch.setenv("HOOK_SEEN", "the team's own variable")
    lines: list[str] = []
    report = deploy.deploy(here, settings, deploy.Options(netlify=False), say=lines.append, backend=backend)
    assert report.release is not None
    order = [line for line in lines if line.startswith("Running hooks/")]
    assert order == ["Running hooks/pre-build", "Running hooks/pre-switch", "Running hooks/post-deploy"]
    common = {"CND_PROJECT": here.slug, "CND_REVISION": report.revision, "CND_TARGET": "memory"}
    common |= {"CND_BACKEND_URL": "http://127.0.0.1", "HOOK_SEEN": "the team's own variable"}
    common |= {"DOCKER_HOST": "ssh://deploy@engine.example"}  # `docker exec "$CND_RELEASE"` reaches the right engine
    before, switch, after = (seen(hook_out, name) for name in ("pre-build", "pre-switch", "post-deploy"))
    assert before.items() >= {**common, "CND_HOOK": "pre-build", "CND_IMAGE": "", "CND_RELEASE": ""}.items()
    assert switch.items() >= {**common, "CND_RELEASE": report.release.name, "CND_LIVE_RELEASE": first.name}.items()
    # What `docker run` takes: not pushed, the local image's id
    assert switch["CND_IMAGE"] == report.reference == report.release.digest and report.reference.startswith("sha256:")
    assert switch["CND_RELEASE"] != first.name
    assert after.items() >= {**common, "CND_RELEASE": report.release.name, "CND_IMAGE": report.reference}.items()
    assert not [env for env in (before, switch, after) if "NETLIFY_AUTH_TOKEN" in env]


@pytest.mark.parametrize("canary", [False, True], ids=["roll out", "canary"])
def test_a_failing_pre_switch_hook_stops_the_deploy_before_the_switch(
    tmp_path: Path, canary: bool, hook_out: Path
) -> None:
    here, settings, backend = stage(tmp_path)
    first = run(here, settings, backend).release
    hook(tmp_path, "pre-switch", '#!/bin/sh\necho migrating "$CND_RELEASE"\nexit 3\n')
    hook(tmp_path, "post-deploy")
    lines: list[str] = []
    with pytest.raises(OpsError, match=r"hooks/pre-switch exited with 3: the deploy stopped before the switch"):
        deploy.deploy(here, settings, deploy.Options(netlify=False, canary=canary), say=lines.append, backend=backend)
    assert backend.live() == first and len(backend.history()) == 1  # nothing switched, nothing recorded
    assert [r.name for r in backend.releases] == [first.name]  # the new one was removed
    assert any(line.startswith("  pre-switch: migrating ") for line in lines), lines
    assert not (hook_out / "post-deploy.env").exists() and backend.lock_holder() is None


def test_a_failing_pre_build_hook_stops_before_the_build_and_a_failing_post_deploy_one_after_the_record(
    tmp_path: Path,
) -> None:
    here, settings, backend = stage(tmp_path)
    hook(tmp_path, "pre-build", "#!/bin/sh\nexit 1\n")
    with pytest.raises(OpsError, match="hooks/pre-build exited with 1: the deploy stopped before the build"):
        run(here, settings, backend)
    assert "build" not in backend.calls and backend.live() is None
    (tmp_path / "hooks" / "pre-build").unlink()
    hook(tmp_path, "post-deploy", "#!/bin/sh\nkill -TERM $$\n")  # commits the removal too
    with pytest.raises(OpsError, match="post-deploy was stopped by signal 15; the deploy itself is done and recorded"):
        run(here, settings, backend)
    assert backend.live() is not None and len(backend.history()) == 1


@pytest.mark.parametrize(
    ("body", "mode", "expected"),
    [
        ("#!/bin/sh\nexit 0\n", 0o644, r"hooks/pre-build is not executable: `chmod \+x hooks/pre-build`"),
        ("#!/no/such/interpreter\n", 0o755, r"hooks/pre-build starts with #!/no/such/interpreter, which is not an"),
        ("#!/bin/sh\nsleep 30\n", 0o755, r"hooks/pre-build did not finish within 0.5 s and was stopped"),
    ],
    ids=["not executable", "no interpreter", "too slow"],
)
def test_a_hook_that_cannot_run_or_finish_is_one_clear_error(
    tmp_path: Path, body: str, mode: int, expected: str
) -> None:
    hook(tmp_path, "pre-build", body, mode, commit=False)
    with pytest.raises(hooks.HookFailed, match=expected):
        hooks.run(tmp_path, "pre-build", {}, say=lambda line: None, timeout=0.5)


def test_a_hooks_output_is_shown_with_secrets_masked_and_controls_escaped(tmp_path: Path) -> None:
    redact.remember("REGISTRY_PASSWORD", "hunter2-registry-secret")
    try:
        hook(
            tmp_path,
            "post-deploy",
            "#!/bin/sh\necho 'pw=hunter2-registry-secret'\nprintf 'bell\\033[2J\\n'\n",
            commit=False,
        )
        lines: list[str] = []
        assert hooks.run(tmp_path, "post-deploy", {}, say=lines.append)
    finally:
        redact.forget()
    assert lines == [
        "Running hooks/post-deploy",
        "  post-deploy: pw=[REGISTRY_PASSWORD]",
        "  post-deploy: bell\\x1b[2J",
    ]
    assert not hooks.run(tmp_path, "pre-build", {}, say=lines.append)  # no such hook: skipped


@pytest.mark.parametrize(
    ("name", "meant"),
    [("pre-switch.sh", "pre-switch"), ("pre_switch", "pre-switch"), ("preswitch", "pre-switch"),
     ("Post-Deploy.py", "post-deploy"), ("pre-biuld", "pre-build")],
)  # fmt: skip
def test_a_file_named_almost_like_a_hook_stops_the_preflight(tmp_path: Path, name: str, meant: str) -> None:
    """The deploy runs only the exact names: a migration in `hooks/pre-switch.sh` would never run."""
    here, settings, backend = stage(tmp_path)
    hook(tmp_path, name, "#!/bin/sh\necho MIGRATING\nexit 1\n")
    hook(tmp_path, "pre-switch.sample", "#!/bin/sh\nexit 0\n")  # samples and helpers stay quiet
    hook(tmp_path, "lib.sh", "helper() { :; }\n", mode=0o644)
    with pytest.raises(deploy.PreflightFailed) as caught:
        run(here, settings, backend)
    assert f"hooks/{name} is not a hook the deploy runs" in str(caught.value), str(caught.value)
    assert f"rename it to hooks/{meant}" in str(caught.value)
    assert "sample" not in str(caught.value) and "lib.sh" not in str(caught.value)
    assert backend.calls == []


def test_a_hook_that_cannot_run_stops_the_deploy_in_its_preflight(tmp_path: Path) -> None:
    here, settings, backend = stage(tmp_path)
    hook(tmp_path, "post-deploy", "#!/bin/sh\nexit 0\n", mode=0o644)
    hook(tmp_path, "pre-switch", "#!/no/such/interpreter\n")
    with pytest.raises(deploy.PreflightFailed) as caught:
        run(here, settings, backend)
    assert "hooks/post-deploy is not executable: `chmod +x hooks/post-deploy`" in str(caught.value)
    assert "hooks/pre-switch starts with #!/no/such/interpreter, which is not an executable" in str(caught.value)
    assert backend.calls == []  # before the lock and the build


def test_a_hook_is_stopped_whole_at_its_timeout_and_what_it_leaves_running_goes_with_it(tmp_path: Path) -> None:
    marker = tmp_path.parent / f"{tmp_path.name}-background"
    hook(tmp_path, "pre-build", f"#!/bin/sh\n(sleep 30; touch {marker}) &\necho started\nexit 0\n", commit=False)
    started = time.monotonic()
    lines: list[str] = []
    assert hooks.run(tmp_path, "pre-build", {}, say=lines.append)  # it succeeded: its own exit is what counts
    # Not held for the 30 s its background child sleeps (a bound that a busy machine cannot miss).
    assert time.monotonic() - started < 15 and lines[-1] == "  pre-build: started"
    hook(tmp_path, "pre-switch", f"#!/bin/sh\n(sleep 30; touch {marker}) &\nsleep 30\n", commit=False)
    started = time.monotonic()
    with pytest.raises(hooks.HookFailed, match="did not finish within 1 s"):
        hooks.run(tmp_path, "pre-switch", {}, say=lines.append, timeout=1)
    assert time.monotonic() - started < 15
    leftovers = subprocess.run(["pgrep", "-f", f"touch {marker}"], capture_output=True, text=True).stdout
    assert leftovers == "", leftovers  # neither hook's background sleep survived


def test_a_canary_promoted_by_hand_runs_the_post_deploy_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook_out: Path
) -> None:
    here, settings, backend = stage(tmp_path)
    run(here, settings, backend)
    hook(tmp_path, "post-deploy")
    monkeypatch.setattr(deploy, "open_backend", lambda *args, **kwargs: backend)
    report = deploy.deploy(
        here, settings, deploy.Options(netlify=False, canary=True, manual=True), say=lambda line: None, backend=backend
    )
    assert report.canary is not None and not report.canary.promoted
    assert not (hook_out / "post-deploy.env").exists()  # not yet: the canary is watched by hand
    promoted = deploy.canary_promote(here, settings, say=lambda line: None)
    assert seen(hook_out, "post-deploy")["CND_RELEASE"] == promoted.name and backend.live() == promoted
