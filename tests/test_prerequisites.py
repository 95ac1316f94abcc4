"""A missing prerequisite skips a test on a laptop and fails it in CI (cnd_toolkit.testing's
``unavailable``, which these tests, the toolkit's and a generated project's share), and .ci/run installs every
one, so a CI run fails for a missing tool only where .ci/run forgot it."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tools.generated import REPO

UV_TEST = "tests/test_render.py::test_the_first_steps_commit_uv_lock_and_leave_a_clean_tree"


def ci_run_packages() -> set[str]:
    """The Debian packages .ci/run installs when their command is missing."""
    return set(re.findall(r"missing\+=\(([\w.+-]+)\)", (REPO / ".ci" / "run").read_text()))


def template_tools() -> dict[str, str]:
    """The tools of the generated tests and the toolkit's, command -> package (the TOOLS of
    template/tests/conftest.py and toolkit/tests/conftest.py), read without importing them (they
    import the generated project)."""
    tools: dict[str, str] = {}
    for conftest in (REPO / "template" / "tests" / "conftest.py", REPO / "toolkit" / "tests" / "conftest.py"):
        tree = ast.parse(conftest.read_text())
        found = [
            ast.literal_eval(node.value)
            for node in tree.body
            if isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] == ["TOOLS"]
        ]
        assert found, f"{conftest} has no TOOLS"
        tools |= found[0]
    return tools


def test_ci_run_installs_what_the_tests_need() -> None:
    """The generated projects' tests and the toolkit's run under .ci/run too (`nox -s generated`,
    `nox -s toolkit`); and these tests' own: sshd for the ssh:// engine test, openssl, Chromium,
    debootstrap for the base images."""
    needed = set(template_tools().values()) | {"openssh-server", "openssl", "chromium", "debootstrap", "git"}
    assert needed - ci_run_packages() == set()


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_missing_tool_skips_on_a_laptop_and_fails_in_ci(tmp_path: Path, ci: str) -> None:
    """uv taken off PATH (an empty folder), in a child pytest: the test that needs it names it."""
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "CND_CHECK_LEAKS"}}
    env |= {"PATH": str(tmp_path), "PYTEST_ADDOPTS": "", "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    if ci:
        env["CI"] = ci
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", UV_TEST],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert "uv is not installed (pip install uv)" in output
    if ci:
        assert (
            done.returncode == 1 and "1 failed" in output and "CI is set, so this test must run, not skip" in output
        ), output
    else:
        assert done.returncode == 0 and "1 skipped" in output, output
