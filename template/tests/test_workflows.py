""".github/workflows/: GitHub's workflow schema (check-jsonschema's vendored copy, offline), and
what each workflow must do: CI on every push and pull request; a deploy that never overlaps
another, waits for the production environment's reviewers and pins the host's SSH key; a
preview that never publishes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parent.parent / ".github" / "workflows"


def check(*paths: Path) -> subprocess.CompletedProcess[str]:
    command = shutil.which("check-jsonschema")
    runner = [command] if command else [sys.executable, "-m", "check_jsonschema"]
    return subprocess.run(
        [*runner, "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def load(name: str) -> dict[Any, Any]:
    found: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return found


def test_every_workflow_is_valid_for_github() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} == {"ci.yml", "deploy.yml", "preview.yml"}
    result = check(*files)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "old", "new"),
    [
        ("a misspelt key", "runs-on:", "run-on:"),
        ("a job without steps", "    steps:\n", "    stepz:\n"),
        ("a bad concurrency value", "cancel-in-progress: true", "cancel-in-progress: sometimes"),
    ],
)
def test_the_schema_check_catches_a_broken_workflow(tmp_path: Path, change: str, old: str, new: str) -> None:
    text = (WORKFLOWS / "ci.yml").read_text()
    assert old in text, change
    broken = tmp_path / "ci.yml"
    broken.write_text(text.replace(old, new, 1))
    assert check(broken).returncode != 0, change


def test_ci_runs_lint_tests_and_smoke_on_pushes_and_pull_requests_with_caching() -> None:
    ci = load("ci.yml")
    triggers = ci[True]  # YAML 1.1 reads the key `on` as true
    assert "push" in triggers and "pull_request" in triggers
    steps = ci["jobs"]["check"]["steps"]
    runs = " ".join(str(step.get("run", "")) for step in steps)
    for session in ("nox -s lint", "nox -s tests", "nox -s smoke"):
        assert session in runs
    assert any(str(step.get("uses", "")).startswith("actions/cache@") for step in steps)
    assert ci["permissions"] == {"contents": "read"}


def test_deploys_never_overlap_wait_for_reviewers_and_pin_the_host_key() -> None:
    workflow = load("deploy.yml")
    # Only after CI passed on main (or by hand), and the very commit CI tested.
    assert workflow[True]["workflow_run"] == {"workflows": ["ci"], "types": ["completed"], "branches": ["main"]}
    assert "push" not in workflow[True] and "workflow_dispatch" in workflow[True]
    assert load("ci.yml")["name"] == "ci"
    condition = workflow["jobs"]["deploy"]["if"]
    assert "github.event.workflow_run.conclusion == 'success'" in condition
    # Not a fork's pull request whose branch happens to be called main.
    assert "github.event.workflow_run.event == 'push'" in condition
    assert "github.event.workflow_run.head_repository.full_name == github.repository" in condition
    steps = workflow["jobs"]["deploy"]["steps"]
    checkout = next(s for s in steps if str(s.get("uses", "")).startswith("actions/checkout"))
    assert "github.event.workflow_run.head_sha" in checkout["with"]["ref"]
    assert workflow["concurrency"] == {"group": "deploy-production", "cancel-in-progress": False}
    job = workflow["jobs"]["deploy"]
    assert job["environment"]["name"] == "production"  # its required reviewers gate each run
    text = (WORKFLOWS / "deploy.yml").read_text()
    assert "StrictHostKeyChecking yes" in text and "DEPLOY_KNOWN_HOSTS" in text
    assert "ssh-keyscan" not in [str(step.get("run", "")) for step in job["steps"]]  # never trusted on first use
    assert "inv deploy" in " ".join(str(step.get("run", "")) for step in job["steps"])
    assert workflow["permissions"]["packages"] == "write"  # GHCR
    # Secrets reach the steps through the environment, never on a command line or in a file we print.
    for step in job["steps"]:
        assert "secrets." not in str(step.get("run", "")), step


def test_a_preview_is_a_draft_posted_on_the_pull_request_and_skipped_for_forks() -> None:
    workflow = load("preview.yml")
    assert list(workflow[True]) == ["pull_request"]
    job = workflow["jobs"]["preview"]
    assert "head.repo.full_name == github.repository" in job["if"]
    runs = " ".join(str(step.get("run", "")) for step in job["steps"])
    assert "inv preview" in runs and "inv deploy" not in runs  # a draft: nothing is published
    assert "gh pr comment" in runs and workflow["permissions"]["pull-requests"] == "write"
