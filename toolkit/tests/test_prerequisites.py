"""A test whose prerequisite is missing is skipped on a machine without it and fails under CI (``CI``
set), where every test must run: tests/conftest.py's ``unavailable``, the one way the tests treat
one. Shown on this suite's own tests, run by pytest in a child with the prerequisite taken away."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cnd_toolkit import project, smoke

GITIGNORE_TEST = (
    f"{Path(__file__).parent / 'test_settings.py'}::test_gitignore_keeps_every_env_file_out_but_the_example"
)
# Set by CI and by the smoke runner: the child gets only what each case gives it.
# CND_TEST_PART: a child runs the tests it names, whichever part of the run this test is in.
CLEARED = {"CI", "CND_CHECK_LEAKS", "CND_TEST_PART", "SMOKE_BASE_URL", "SMOKE_CONTAINER", "SMOKE_URL_ONLY"}


def pytest_in_child(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """pytest over ``args`` in this project: this process's environment without :data:`CLEARED`, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in CLEARED}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", *args],
        cwd=project.ROOT,
        env={**base, "PYTEST_ADDOPTS": "", "DOCKER_HOST": "unix:///nonexistent/docker.sock", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("ci", ["", "true", "1", "false", "0", "no", "off"])
def test_a_missing_tool_skips_here_and_fails_under_ci(tmp_path: Path, ci: str) -> None:
    """git taken off PATH (an empty folder): the .gitignore test names it and how to get it.
    CI=true (or 1) is CI; CI=false, 0, no or off, as a person may write it to say "not CI", is not."""
    done = pytest_in_child(GITIGNORE_TEST, PATH=str(tmp_path), **({"CI": ci} if ci else {}))
    output = done.stdout + done.stderr
    assert "git is not installed, and is needed to read .gitignore as git does (apt-get install git)" in output
    if ci in {"true", "1"}:
        assert done.returncode == 1 and "1 failed" in output, output
        assert "CI is set, so this test must run, not skip" in output
    else:
        assert done.returncode == 0 and "1 skipped" in output, output


def test_with_the_tool_the_same_test_runs_under_ci() -> None:
    """The control: the failure above is git's absence, not the child's environment."""
    done = pytest_in_child(GITIGNORE_TEST, CI="true")
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr


def test_the_smoke_suite_without_its_container_fails_under_ci_unless_it_tests_a_url(api_origin: str) -> None:
    """A smoke run that names no container (SMOKE_CONTAINER) and does not say it tests a URL
    (SMOKE_URL_ONLY) is missing one: under CI its container checks fail, saying what to set. A URL
    run has no container to inspect, and they skip, by design, under CI too."""
    checks = ["tests/smoke", "--base-url", api_origin, "-k", "test_readiness or test_runs_as_non_root"]
    unnamed = pytest_in_child(*checks, CI="true")
    # An error, not a failure: the fixture fails, before the test.
    summary = unnamed.stdout.strip().splitlines()[-1]
    assert unnamed.returncode == 1 and "1 passed" in summary and "1 error" in summary, unnamed.stdout
    assert "`inv smoke` starts the image and sets SMOKE_CONTAINER" in unnamed.stdout
    assert "CI is set, so this test must run, not skip" in unnamed.stdout
    url_run = pytest_in_child(*checks, CI="true", SMOKE_URL_ONLY="1")
    assert url_run.returncode == 0 and "1 passed, 1 skipped" in url_run.stdout, url_run.stdout + url_run.stderr
    assert "no container to inspect" in url_run.stdout


def test_the_smoke_runner_says_a_url_run_is_one(
    api_origin: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """`inv smoke --url`'s runner, under CI: the container checks skip as a URL run's, and the suite passes."""
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("CND_CHECK_LEAKS", raising=False)
    monkeypatch.setenv("SMOKE_CONTAINER", "inherited-from-the-shell")  # not the runner's: dropped
    monkeypatch.setenv("PYTEST_ADDOPTS", "")
    done = smoke.run_suite(project.load(), api_origin, extra=["-rs", "-k", "test_readiness or test_runs_as_non_root"])
    output = capfd.readouterr().out
    assert done.code == 0 and "1 passed, 1 skipped" in output, output
    assert "no container to inspect" in output
