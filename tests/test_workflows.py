"""The generated project's .github/workflows/ (static files, the same in every render): GitHub's
workflow schema (check-jsonschema's vendored copy, offline), zizmor's
security audits (offline, its strictest persona), and what each workflow must do: CI on every push
and pull request; a deploy that never overlaps another, waits for the production environment's
reviewers and pins the host's SSH key; a preview that never publishes and never runs a pull
request's code while it holds the Netlify token. Secrets reach only the steps that use them, after
the tooling was installed from uv.lock; each rule is shown failing on a workflow that breaks it.

A generated project's `nox -s lint` runs the same two auditors on its workflows as the team edits
them; the rules here are the template's promises, tested once, in this repository."""

from __future__ import annotations

import ast
import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from cnd_toolkit import settings

TEMPLATE = Path(__file__).resolve().parent.parent / "template"
WORKFLOWS = TEMPLATE / ".github" / "workflows"
NAMES = ("ci.yml", "deploy.yml", "preview.yml")
OPEN = "${" + "{"  # a GitHub expression's opening, spelt so that this file holds no template syntax


def expr(text: str) -> str:
    """The GitHub expression of ``text``, as a workflow writes it."""
    return f"{OPEN} {text} }}}}"


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
    assert {f.name for f in files} == set(NAMES)
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


# ------------------------------------------------------------------ zizmor


def zizmor(folder: Path, *options: str) -> list[dict[str, Any]]:
    """zizmor's findings for the workflows in ``folder``: offline, the auditor persona (every audit,
    false positives allowed), no configuration file (only reviewed inline ignores count)."""
    command = shutil.which("zizmor") or str(Path(sys.executable).parent / "zizmor")
    if not Path(command).exists():
        pytest.fail("zizmor is not installed (it comes with the test dependency group)")
    done = subprocess.run(
        [command, "--offline", "--persona", "auditor", "--no-config", "--no-exit-codes", "--format", "json",
         *options, *map(str, sorted(folder.glob("*.yml")))],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def summary(findings: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(audit, file, the line's text) of each finding."""
    rows = []
    for finding in findings:
        where = finding["locations"][0]
        path = Path(where["symbolic"]["key"]["Local"]["verbatim_path"])
        line = path.read_text().splitlines()[where["concrete"]["location"]["start_point"]["row"]]
        rows.append((finding["ident"], path.name, line.strip()))
    return sorted(rows)


def test_zizmor_finds_nothing_in_any_workflow() -> None:
    assert summary(zizmor(WORKFLOWS)) == []


def test_the_only_findings_ignored_are_the_two_reviewed_triggers() -> None:
    # Each is a dangerous trigger used the safe way, said in the comment above it: the deploy runs
    # only for a CI run of a push to this repository's main; the preview runs the base branch's code
    # and reads the pull request's files as data. Any other ignore comment would show up here.
    assert summary(zizmor(WORKFLOWS, "--no-ignores")) == [
        ("dangerous-triggers", "deploy.yml", "on:"),
        ("dangerous-triggers", "preview.yml", "on:"),
    ]
    assert list(load("deploy.yml")[True]) == ["workflow_run", "workflow_dispatch"]
    assert list(load("preview.yml")[True]) == ["pull_request_target"]


# Each change breaks one audit: zizmor is an oracle that can fail on these files.
ZIZMOR_MUTATIONS = [
    ("template-injection", "preview.yml", '"PR #$PR $HEAD_SHA"', f'"{expr("github.event.pull_request.title")}"'),
    ("unpinned-uses", "deploy.yml", "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1", "actions/checkout@v7"),
    ("artipacked", "ci.yml", "persist-credentials: false  # no step here pushes: git keeps no token", "fetch-depth: 1"),
    ("secrets-outside-env", "preview.yml", "    environment: preview\n", ""),
    ("excessive-permissions", "deploy.yml", "permissions: {}  # the job", "permissions: write-all  # the job"),
    ("dangerous-triggers", "preview.yml", "  # zizmor: ignore[dangerous-triggers]", "  # reviewed"),
    ("github-env", "deploy.yml", '>> "$GITHUB_OUTPUT"', '>> "$GITHUB_ENV"'),
]  # fmt: skip


@pytest.mark.parametrize(("audit", "name", "old", "new"), ZIZMOR_MUTATIONS, ids=[m[0] for m in ZIZMOR_MUTATIONS])
def test_zizmor_catches_a_workflow_that_breaks_its_audit(
    tmp_path: Path, audit: str, name: str, old: str, new: str
) -> None:
    shutil.copytree(WORKFLOWS, tmp_path / "workflows")
    target = tmp_path / "workflows" / name
    text = target.read_text()
    assert old in text, old
    target.write_text(text.replace(old, new, 1))
    assert audit in {ident for ident, _, _ in summary(zizmor(tmp_path / "workflows"))}


# ------------------------------------------------------------------ our own rules

SECRET = re.compile(r"\$\{\{[^}]*\b(?:secrets\.\w+|github\.token)\b")
# Commands that download and install (or resolve) packages.
INSTALL = re.compile(
    r"\b(?:pip3? install|uv (?:sync|pip|add|tool|lock)|npm (?:install|i|ci)|npx|apt-get install|gem install)\b"
)
# The secrets each command reads: what a step running it may be given, and nothing else.
READS = {
    "inv deploy": {"NETLIFY_AUTH_TOKEN", "METRICS_TOKEN", "REGISTRY_PASSWORD"},
    "inv preview": {"NETLIFY_AUTH_TOKEN"},
    "inv status": {"NETLIFY_AUTH_TOKEN"},
    "gh pr comment": {"GH_TOKEN"},
}
# git commands that would put the pull request's code in the work tree.
CHECKS_OUT = re.compile(
    r"\bgit\s+(?:checkout|switch|worktree|reset|restore|merge|pull|rebase|cherry-pick|apply|am|stash)\b"
    r"|\bgh\s+pr\s+checkout\b"
)
PINNED_USES = re.compile(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}")
UV_BOOTSTRAP = re.compile(r'pip install "uv==\d+\.\d+\.\d+"')


def label(step: Mapping[str, Any]) -> str:
    return str(step.get("name") or step.get("uses") or str(step.get("run", ""))[:50])


def problems(workflows: Mapping[str, Any]) -> list[str]:
    """Every way the workflows let a secret near what it should not reach."""
    found: list[str] = []
    bootstraps: set[str] = set()
    for file, workflow in workflows.items():
        for key, value in (workflow.get("env") or {}).items():
            if SECRET.search(str(value)):
                found.append(f"{file}: workflow-level env {key} holds a secret")
        for job_id, job in workflow["jobs"].items():
            where = f"{file} job {job_id}"
            for key, value in (job.get("env") or {}).items():
                if SECRET.search(str(value)):
                    found.append(f"{where}: job-level env {key} holds a secret (give it to the step that uses it)")
            locked_at: int | None = None
            first_secret: int | None = None
            for index, step in enumerate(job.get("steps", [])):
                run = str(step.get("run", ""))
                at = f"{where} step {label(step)!r}"
                if OPEN in run:
                    found.append(f"{at}: an expression in run: (pass it through env)")
                if SECRET.search(json.dumps(step.get("with") or {})):
                    found.append(f"{at}: a secret as an action's input")
                held = {key for key, value in (step.get("env") or {}).items() if SECRET.search(str(value))}
                for key in sorted(held):
                    read = any(key in names and command in run for command, names in READS.items())
                    if not read and not re.search(r"\$\{?" + key + r"\b", run):
                        found.append(f"{at}: gets {key} but does not use it")
                if held and first_secret is None:
                    first_secret = index
                for command in re.findall(r"\buv sync\b[^\n;&|]*", run):
                    if "--locked" not in command:
                        found.append(f"{at}: uv sync without --locked")
                    elif locked_at is None:
                        locked_at = index
                for command in re.findall(r"\buv run\b[^\n;&|]*", run):
                    if not re.search(r"--no-sync|--locked|--frozen", command):
                        found.append(f"{at}: uv run without --no-sync (it would resolve again)")
                for command in re.findall(r"\bpip3? install\b[^\n;&|]*", run):
                    if not UV_BOOTSTRAP.fullmatch(command.strip()):
                        found.append(f"{at}: pip install of something else than an exact uv: {command.strip()!r}")
                    bootstraps.add(command.strip())
                if first_secret is not None and INSTALL.search(run):
                    found.append(f"{at}: installs packages while a secret is in reach")
                uses = str(step.get("uses", ""))
                if uses and not PINNED_USES.fullmatch(uses):
                    found.append(f"{at}: {uses} is not pinned to a commit")
                if (
                    uses.startswith("actions/checkout@")
                    and (step.get("with") or {}).get("persist-credentials") is not False
                ):
                    found.append(f"{at}: the checkout keeps git credentials (persist-credentials: false)")
            if first_secret is not None and (locked_at is None or locked_at > first_secret):
                found.append(f"{where}: a secret is in reach before the tooling is installed with uv sync --locked")
    if len(bootstraps) > 1:
        found.append(f"uv is installed at different versions: {sorted(bootstraps)}")
    if "preview.yml" in workflows:
        found += preview_problems(workflows["preview.yml"])
    return found


def preview_problems(workflow: Mapping[Any, Any]) -> list[str]:
    """The preview holds an account-wide token: it runs only the base branch's code."""
    found = []
    if set(workflow[True]) != {"pull_request_target"}:  # YAML 1.1 reads the key `on` as true
        found.append("preview.yml: not on pull_request_target alone (the pull request's own workflow would run)")
    for job_id, job in workflow["jobs"].items():
        if "github.event.pull_request.head.repo.full_name == github.repository" not in str(job.get("if", "")):
            found.append(f"preview.yml job {job_id}: runs for forks' pull requests too")
        for step in job["steps"]:
            run = str(step.get("run", ""))
            at = f"preview.yml step {label(step)!r}"
            if str(step.get("uses", "")).startswith("actions/checkout@") and {"ref", "repository"} & set(
                step.get("with") or {}
            ):
                found.append(f"{at}: checks out something else than the base branch")
            if CHECKS_OUT.search(run):
                found.append(f"{at}: puts the pull request's code in the work tree")
            head = any("github.event.pull_request.head." in str(v) for v in (step.get("env") or {}).values())
            reads_site = ("-m cnd_toolkit.netlify.snapshot", "inv preview", "gh pr comment")
            if head and not any(use in run for use in reads_site):
                found.append(f"{at}: uses the pull request's head for something else than reading its site")
    return found


def all_workflows() -> dict[str, Any]:
    return {name: load(name) for name in NAMES}


def test_secrets_reach_only_the_steps_that_use_them_after_a_locked_install() -> None:
    assert problems(all_workflows()) == []


def test_the_secrets_the_tasks_read_are_the_catalogues_secrets() -> None:
    # READS names what `inv deploy|preview|status` take from the environment: the settings
    # catalogue (cnd_toolkit/settings.py) marks each secret, so a step given one gets a real secret.
    for command, names in READS.items():
        if command.startswith("inv "):
            assert all(settings.BY_NAME[name].secret for name in names), command
    given = {
        key
        for workflow in all_workflows().values()
        for job in workflow["jobs"].values()
        for step in job["steps"]
        for key, value in (step.get("env") or {}).items()
        if SECRET.search(str(value))
    }
    assert given == {"NETLIFY_AUTH_TOKEN", "METRICS_TOKEN", "REGISTRY_PASSWORD", "GH_TOKEN"} | {
        "DEPLOY_SSH_KEY",
        "DEPLOY_KNOWN_HOSTS",
    }


Mutation = Callable[[dict[str, Any]], None]


def step_of(workflows: dict[str, Any], file: str, text: str) -> dict[str, Any]:
    job = next(iter(workflows[file]["jobs"].values()))
    found: dict[str, Any] = next(s for s in job["steps"] if text in str(s.get("run", "")) + str(s.get("uses", "")))
    return found


def to_job_env(w: dict[str, Any]) -> None:
    step = step_of(w, "deploy.yml", "inv deploy")
    w["deploy.yml"]["jobs"]["deploy"]["env"]["NETLIFY_AUTH_TOKEN"] = step["env"].pop("NETLIFY_AUTH_TOKEN")


def to_workflow_env(w: dict[str, Any]) -> None:
    step = step_of(w, "preview.yml", "inv preview")
    w["preview.yml"]["env"] = {"NETLIFY_AUTH_TOKEN": step["env"].pop("NETLIFY_AUTH_TOKEN")}


def unlocked(w: dict[str, Any]) -> None:
    step = step_of(w, "deploy.yml", "uv sync")
    step["run"] = step["run"].replace("uv sync --locked", "uv sync")


def pr_checkout(w: dict[str, Any]) -> None:
    step = step_of(w, "preview.yml", "actions/checkout@")
    step["with"]["ref"] = expr("github.event.pull_request.head.sha")


def gh_checkout(w: dict[str, Any]) -> None:
    steps = w["preview.yml"]["jobs"]["preview"]["steps"]
    steps.insert(3, {"env": {"PR": expr("github.event.pull_request.number")}, "run": 'gh pr checkout "$PR"'})


def git_switch(w: dict[str, Any]) -> None:
    step = step_of(w, "preview.yml", "cnd_toolkit.netlify.snapshot")
    step["run"] = 'git switch --detach "$HEAD_SHA"\n' + step["run"]


def plain_pull_request(w: dict[str, Any]) -> None:
    w["preview.yml"][True] = {"pull_request": None}


def forks_too(w: dict[str, Any]) -> None:
    w["preview.yml"]["jobs"]["preview"]["if"] = "github.event.pull_request.user.login != 'dependabot[bot]'"


def expression_in_run(w: dict[str, Any]) -> None:
    step = step_of(w, "preview.yml", "inv preview")
    step["run"] += f' --title "{expr("github.event.pull_request.title")}"'


def secret_first(w: dict[str, Any]) -> None:
    steps = w["deploy.yml"]["jobs"]["deploy"]["steps"]
    ssh = next(s for s in steps if "DEPLOY_SSH_KEY" in s.get("env", {}))
    steps.remove(ssh)
    steps.insert(1, ssh)


def install_after(w: dict[str, Any]) -> None:
    w["deploy.yml"]["jobs"]["deploy"]["steps"].append({"run": "uv pip install httpie && http --version"})


def unused_secret(w: dict[str, Any]) -> None:
    step = step_of(w, "preview.yml", "cnd_toolkit.netlify.snapshot")
    step["env"]["NETLIFY_AUTH_TOKEN"] = expr("secrets.NETLIFY_AUTH_TOKEN")


def extra_secret(w: dict[str, Any]) -> None:
    step_of(w, "deploy.yml", "inv status")["env"]["METRICS_TOKEN"] = expr("secrets.METRICS_TOKEN")


def resyncing_run(w: dict[str, Any]) -> None:
    step = step_of(w, "deploy.yml", "inv deploy")
    step["run"] = "uv run inv deploy"


def tag_pinned(w: dict[str, Any]) -> None:
    step_of(w, "ci.yml", "actions/setup-python@")["uses"] = "actions/setup-python@v6"


def credentials_kept(w: dict[str, Any]) -> None:
    del step_of(w, "deploy.yml", "actions/checkout@")["with"]["persist-credentials"]


def unpinned_uv(w: dict[str, Any]) -> None:
    step = step_of(w, "preview.yml", "uv sync")
    step["run"] = step["run"].replace('pip install "uv==', 'pip install "uv>=')


def secret_as_input(w: dict[str, Any]) -> None:
    step_of(w, "ci.yml", "actions/cache@")["with"]["token"] = expr("secrets.NETLIFY_AUTH_TOKEN")


def head_elsewhere(w: dict[str, Any]) -> None:
    steps = w["preview.yml"]["jobs"]["preview"]["steps"]
    steps.insert(4, {"env": {"REF": expr("github.event.pull_request.head.ref")}, "run": 'echo "building $REF"'})


MUTATIONS: list[tuple[str, Mutation, str]] = [
    ("a secret moved to the job's env", to_job_env, "job-level env NETLIFY_AUTH_TOKEN holds a secret"),
    ("a secret moved to the workflow's env", to_workflow_env, "workflow-level env NETLIFY_AUTH_TOKEN"),
    ("--locked dropped", unlocked, "uv sync without --locked"),
    ("a checkout of the pull request's head", pr_checkout, "checks out something else than the base branch"),
    ("gh pr checkout", gh_checkout, "puts the pull request's code in the work tree"),
    ("git switch to the head", git_switch, "puts the pull request's code in the work tree"),
    ("on pull_request", plain_pull_request, "not on pull_request_target alone"),
    ("previews for forks", forks_too, "runs for forks' pull requests too"),
    ("an expression in run:", expression_in_run, "an expression in run:"),
    ("a secret before the locked install", secret_first, "before the tooling is installed with uv sync --locked"),
    ("an install after a secret", install_after, "installs packages while a secret is in reach"),
    ("a secret given to a step that does not use it", unused_secret, "gets NETLIFY_AUTH_TOKEN but does not use it"),
    ("a secret the task does not read", extra_secret, "gets METRICS_TOKEN but does not use it"),
    ("uv run that may resolve", resyncing_run, "uv run without --no-sync"),
    ("an action pinned by tag", tag_pinned, "is not pinned to a commit"),
    ("a checkout that keeps credentials", credentials_kept, "keeps git credentials"),
    ("an unpinned uv", unpinned_uv, "pip install of something else than an exact uv"),
    ("a secret as an action's input", secret_as_input, "a secret as an action's input"),
    ("the head used for something else", head_elsewhere, "uses the pull request's head for something else"),
]


@pytest.mark.parametrize(("mutate", "expected"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_each_rule_fails_on_a_workflow_that_breaks_it(mutate: Mutation, expected: str) -> None:
    workflows = copy.deepcopy(all_workflows())
    mutate(workflows)
    found = problems(workflows)
    assert any(expected in problem for problem in found), found


# ------------------------------------------------------------------ what each workflow does


def test_ci_runs_lint_tests_and_smoke_on_pushes_and_pull_requests_with_caching() -> None:
    ci = load("ci.yml")
    triggers = ci[True]  # YAML 1.1 reads the key `on` as true
    assert "push" in triggers and "pull_request" in triggers
    steps = ci["jobs"]["check"]["steps"]
    runs = " ".join(str(step.get("run", "")) for step in steps)
    for session in ("nox -s lint", "nox -s tests", "nox -s smoke"):
        assert f"uv run --no-sync {session}" in runs  # nox as uv.lock pins it
    assert "uv sync --locked" in runs  # a pyproject.toml changed without `inv relock` fails here
    assert any(str(step.get("uses", "")).startswith("actions/cache@") for step in steps)
    assert ci["permissions"] == {} and ci["jobs"]["check"]["permissions"] == {"contents": "read"}


def test_ci_installs_every_tool_the_tests_need() -> None:
    """Under CI a test whose tool is missing fails (cnd_toolkit.testing's ``unavailable``): the
    workflow installs each one, so none fails for want of it."""
    tree = ast.parse((TEMPLATE / "tests" / "conftest.py").read_text())
    (TOOLS,) = [
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and ast.unparse(n).startswith("TOOLS =")
    ]

    runs = [str(step.get("run", "")) for step in load("ci.yml")["jobs"]["check"]["steps"]]
    installed = {
        package
        for run in runs
        for line in run.splitlines()
        if "apt-get install" in line
        for package in line.split("apt-get install", 1)[1].split()
        if not package.startswith("-")
    }
    assert set(TOOLS.values()) - installed == set()


def test_deploys_never_overlap_wait_for_reviewers_and_pin_the_host_key() -> None:
    workflow = load("deploy.yml")
    # Only after CI passed on main (or by hand), and the very commit CI tested.
    assert workflow[True]["workflow_run"] == {"workflows": ["ci"], "types": ["completed"], "branches": ["main"]}
    assert "push" not in workflow[True] and "workflow_dispatch" in workflow[True]
    assert load("ci.yml")["name"] == "ci"
    condition = workflow["jobs"]["deploy"]["if"]
    assert "github.event.workflow_run.conclusion == 'success'" in condition
    # Not a fork's pull request whose branch happens to be called main; by hand, only main.
    assert "github.event.workflow_run.event == 'push'" in condition
    assert "github.event.workflow_run.head_repository.full_name == github.repository" in condition
    assert "github.event_name == 'workflow_dispatch' && github.ref == 'refs/heads/main'" in condition
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
    assert job["permissions"] == {"contents": "read", "packages": "write"}  # GHCR
    # The tree stays clean for the deploy's check: uv.lock is committed, so nothing hides it.
    assert ".git/info/exclude" not in text
    # The key leaves the runner whatever happened.
    last = job["steps"][-1]
    assert last["if"] == "always()" and "rm -f ~/.ssh/id_ed25519" in last["run"]
    # Secrets reach the steps through the environment, never on a command line or in a file we print.
    for step in job["steps"]:
        assert "secrets." not in str(step.get("run", "")), step


def test_a_preview_is_a_draft_of_the_pull_requests_site_with_the_base_branchs_code() -> None:
    workflow = load("preview.yml")
    assert list(workflow[True]) == ["pull_request_target"]
    job = workflow["jobs"]["preview"]
    assert "head.repo.full_name == github.repository" in job["if"]
    runs = [str(step.get("run", "")) for step in job["steps"]]
    assert any("inv preview" in run for run in runs) and not any("inv deploy" in run for run in runs)  # a draft
    assert any("gh pr comment" in run for run in runs) and job["permissions"]["pull-requests"] == "write"
    # The pull request's site is read from git (data) before the step that holds the token deploys it.
    snapshot = next(i for i, run in enumerate(runs) if "python -m cnd_toolkit.netlify.snapshot" in run)
    draft = next(i for i, run in enumerate(runs) if "inv preview --site" in run)
    assert snapshot < draft and "NETLIFY_AUTH_TOKEN" not in job["steps"][snapshot].get("env", {})
    checkout = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # the pull request's commits are in the clone to be read
