"""copier.yml: questions, validators, derived defaults, the answers file, no secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.generated import REPO, render

CONFIG = yaml.safe_load((REPO / "copier.yml").read_text())
# What Copier asks (a value it computes and never asks, `when: false`, is not a question).
QUESTIONS = {k: v for k, v in CONFIG.items() if not k.startswith("_") and v.get("when") is not False}
COMPUTED = {k: v for k, v in CONFIG.items() if not k.startswith("_") and v.get("when") is False}


def test_every_question_has_type_help_and_default() -> None:
    for name, question in QUESTIONS.items():
        assert {"type", "help", "default"} <= set(question), name
        if question["type"] == "str" and "choices" not in question:
            assert "validator" in question, f"free-text question {name} needs a validator"


def test_computed_values_are_never_asked_nor_recorded(project: Path) -> None:
    """The toolkit's pin is computed from the template's commit at each render, so that `copier
    update` moves it: never asked, never written to the answers file."""
    assert set(COMPUTED) == {"toolkit_requirement"}
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert not set(COMPUTED) & set(answers)


def test_no_secret_is_asked() -> None:
    for name, question in QUESTIONS.items():
        assert not question.get("secret"), name
        assert not any(word in name for word in ("token", "password", "secret", "key")), name


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"project_name": "   "}, "project_name must not be empty"),
        ({"project_name": "x" * 61}, "keep it to 60 or fewer"),
        ({"project_slug": "My_Service"}, 'project_slug "My_Service" is invalid'),
        ({"project_slug": "1service"}, "starting with a letter"),
        ({"project_slug": "svc-"}, "must not end with a dash"),
        ({"description": "two\nlines"}, "description contains '\\n': use one line of plain text"),
        ({"author_name": " "}, "author_name must not be empty"),
        ({"author_email": "not-an-email"}, 'author_email "not-an-email" is not an email address'),
        ({"python_version": "3.9"}, "python_version"),
        ({"base_image": "Python 3.12"}, 'base_image "Python 3.12" is not an image reference'),
        ({"port": 80}, "port must be between 1024 and 65535, not 80: the app runs as a non-root user"),
        ({"port": 70000}, "port must be between 1024 and 65535"),
        ({"port": 9101}, "port 9101 is the app's metrics listener (METRICS_PORT"),
        ({"web_concurrency": 0}, "web_concurrency must be between 1 and 64"),
        ({"threads": 0}, "threads must be between 1 and 64"),
        ({"timeout": 0}, "timeout must be between 1 and 3600"),
        ({"netlify_site_name": "-bad-"}, 'netlify_site_name "-bad-" is invalid'),
        ({"backend_url": "http://api.example.com"}, "must be an https origin"),
        ({"backend_url": "https://api.example.com/"}, "without a path or trailing slash"),
        ({"backend_url": "https://api.example.com/api"}, "must be an https origin"),
        ({"image": "ghcr.io/acme/svc:latest"}, "no tag"),
        ({"image": "GHCR.io/Acme/svc"}, "use lowercase"),
    ],
)
def test_invalid_answers_are_rejected_with_a_clear_message(
    tmp_path: Path, answers: dict[str, Any], message: str
) -> None:
    target = tmp_path / "out"
    with pytest.raises(ValueError, match=r"Validation error|Invalid choice|not a valid") as caught:
        render(target, answers, git=False)
    assert message in str(caught.value)
    assert not target.exists(), "a rejected answer must not leave a half-written project"


def test_valid_unusual_answers_are_accepted(tmp_path: Path) -> None:
    project = render(
        tmp_path / "p",
        {"backend_url": "https://api.example.com:8443", "image": "registry.example.com:5000/team/svc", "port": 65535},
        git=False,
    )
    assert "ARG BASE_IMAGE=python:3.12-slim" in (project / "Dockerfile").read_text()


def test_defaults_derive_from_earlier_answers(tmp_path: Path) -> None:
    project = render(tmp_path / "p", {"project_name": "Acme Orders API!", "author_name": "Acme Corp"}, git=False)
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["project_slug"] == "acme-orders-api"
    assert answers["netlify_site_name"] == "acme-orders-api"
    assert answers["image"] == "ghcr.io/acme-corp/acme-orders-api"
    assert answers["base_image"] == "python:3.12-slim"


def test_python_version_drives_the_base_image(tmp_path: Path) -> None:
    project = render(tmp_path / "p", {"python_version": "3.13"}, git=False)
    assert "ARG BASE_IMAGE=python:3.13-slim" in (project / "Dockerfile").read_text()


def test_answers_file_supports_copier_update(project: Path) -> None:
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["_src_path"]
    assert answers["_commit"]
    assert set(QUESTIONS) <= set(answers)


def test_copier_update_brings_template_changes_and_keeps_answers(tmp_path: Path) -> None:
    import subprocess

    import copier

    def git(cwd: Path, *args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=cwd,
            check=True,
            capture_output=True,
        )

    # A clone of the template's working tree, so the test can commit a "new release" to it.
    template = tmp_path / "template-repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(template)], check=True)
    for path in REPO.glob("**/*"):
        relative = path.relative_to(REPO)
        if path.is_file() and not {".git", ".cache", ".nox"} & set(relative.parts):
            target = template / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    git(template, "add", "-A")
    git(template, "commit", "-q", "--allow-empty", "-m", "v1")
    git(template, "tag", "v1.0.0")

    project = tmp_path / "project"
    copier.run_copy(str(template), str(project), data={"port": 9000}, defaults=True, quiet=True)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "generated")

    certs_readme = template / "template" / "certs" / "README.md"
    certs_readme.write_text(certs_readme.read_text() + "\nA line added in v1.1.\n")
    git(template, "commit", "-qam", "v1.1")
    git(template, "tag", "v1.1.0")

    # The toolkit is pinned to the commit the project was rendered from, in both places that install it.
    v1 = git_output(template, "rev-parse", "HEAD~1")
    pin = f"cnd-toolkit @ git+{template.as_uri()}@{v1}#subdirectory=toolkit"
    assert pin_of(project) == (pin, pin)

    copier.run_update(str(project), defaults=True, overwrite=True, quiet=True)
    assert "A line added in v1.1." in (project / "certs" / "README.md").read_text()
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["port"] == 9000
    assert answers["_commit"] == "v1.1.0"
    # The update moved the pin, and the pinned requirement installs (from the template's git, offline).
    v11 = git_output(template, "rev-parse", "HEAD")
    pin = f"cnd-toolkit @ git+{template.as_uri()}@{v11}#subdirectory=toolkit"
    assert pin_of(project) == (pin, pin)
    target = tmp_path / "installed"
    subprocess.run(
        ["uv", "pip", "install", "--quiet", "--no-deps", "--target", str(target), pin],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "cnd_toolkit" / "tasks.py").is_file() and (target / "cnd_toolkit" / "py.typed").is_file()


def git_output(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def pin_of(project: Path) -> tuple[str, str]:
    """The toolkit requirement in pyproject.toml's `toolkit` group, and in netlify.toml's build command."""
    import tomllib

    [in_pyproject] = tomllib.loads((project / "pyproject.toml").read_text())["dependency-groups"]["toolkit"]
    command = tomllib.loads((project / "netlify.toml").read_text())["build"]["command"]
    [in_netlify] = [part for part in command.split("'") if part.startswith("cnd-toolkit @ ")]
    return in_pyproject, in_netlify


def test_copier_update_from_a_project_with_ops_moves_it_to_the_toolkit(tmp_path: Path) -> None:
    """A project rendered before the tooling was a package (it had ops/ and a 1,000-line tasks.py),
    updated to this template: an untouched one loses ops/ and works; one whose team edited ops/ and
    added a file there is told what to do, keeps the added file, and its tasks warn about it."""
    import copier

    def git(cwd: Path, *args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=cwd,
            check=True,
            capture_output=True,
        )

    # The template's last commit with ops/, then the working tree as a newer commit of the same clone.
    in_head = subprocess.run(["git", "cat-file", "-e", "HEAD:template/ops/__init__.py"], cwd=REPO).returncode == 0
    old = "HEAD" if in_head else git_output(REPO, "rev-list", "-1", "HEAD", "--", "template/ops") + "^"
    template = tmp_path / "template-repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(template)], check=True)
    git(template, "checkout", "-q", "-b", "new", old)
    git(template, "tag", "old")
    projects = {}
    for name in ("untouched", "edited"):
        project = tmp_path / name
        copier.run_copy(str(template), str(project), defaults=True, quiet=True, vcs_ref="old")
        assert (project / "ops" / "release" / "deploy.py").is_file()
        git(project, "init", "-q", "-b", "main")
        git(project, "add", "-A")
        git(project, "commit", "-q", "-m", "generated")
        projects[name] = project
    edited = projects["edited"]
    deploy = edited / "ops" / "release" / "deploy.py"
    deploy.write_text(deploy.read_text() + "\n# our tweak\n")
    (edited / "ops" / "ours.py").write_text('"""A module of our own."""\n')
    git(edited, "add", "-A")
    git(edited, "commit", "-q", "-m", "our changes")

    subprocess.run(["git", "rm", "-rq", "."], cwd=template, check=True)
    for path in REPO.glob("**/*"):
        relative = path.relative_to(REPO)
        if path.is_file() and not {".git", ".cache", ".nox", "__pycache__"} & set(relative.parts):
            target = template / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    git(template, "add", "-A")
    git(template, "commit", "-q", "-m", "toolkit")
    git(template, "tag", "toolkit")

    env = {k: v for k, v in os.environ.items() if k != "CND_PROJECT_ROOT"}
    for name, project in projects.items():
        updated = subprocess.run(
            [sys.executable, "-m", "copier", "update", "--defaults", "--vcs-ref", "toolkit"],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert updated.returncode == 0, updated.stderr
        assert "git diff HEAD -- ops/ tasks.py" in updated.stderr  # what to do with edits to ops/
        assert len((project / "tasks.py").read_text().splitlines()) < 60
        assert "from cnd_toolkit.tasks import collection" in (project / "tasks.py").read_text()
        assert "both modified" in updated.stderr  # where a team had edited tasks.py: a conflict to resolve
        assert pin_of(project)[0].endswith(f"@{git_output(template, 'rev-parse', 'toolkit')}#subdirectory=toolkit")
        # A working project: the toolkit (this interpreter's) lists its tasks and checks it clean.
        listed = subprocess.run(
            [sys.executable, "-m", "invoke", "--list"], cwd=project, capture_output=True, text=True, env=env
        )
        assert listed.returncode == 0 and "deploy" in listed.stdout, listed.stderr
        checked = subprocess.run(
            [sys.executable, "-m", "invoke", "check"], cwd=project, capture_output=True, text=True, env=env
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
        if name == "untouched":
            assert not (project / "ops").exists()
            assert "ops/" not in listed.stderr + checked.stderr
        else:
            assert sorted(p.name for p in (project / "ops").rglob("*.py")) == ["ours.py"]
            for output in (listed.stderr, checked.stderr):
                assert "warning: ops/ is left from before the tooling was the cnd-toolkit package" in output
                assert "ops/ours.py" in output
            removed = git_output(project, "diff", "HEAD", "--", "ops/release/deploy.py")
            assert "+# our tweak" not in removed and "-# our tweak" in removed  # the edit is in git


def copier_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real `copier` command line, as a user types it (the README shows what it prints)."""
    return subprocess.run(
        [sys.executable, "-m", "copier", "copy", "--defaults", "--vcs-ref", "HEAD", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("project_name=Acme\nARG X=1", "project_name contains '\\n': use one line of plain text"),
        ("author_name=a\\b", "author_name contains '\\\\': use one line of plain text"),
        ("port=80", "port must be between 1024 and 65535"),
        ("backend_url=http://x", 'backend_url "http://x" must be an https origin'),
    ],
)
def test_a_bad_answer_ends_the_cli_with_its_message_on_the_last_line(
    tmp_path: Path, answer: str, expected: str
) -> None:
    # Copier prints its own traceback for a bad --data answer; the README tells users to read the
    # last line, which must be our message, whole and specific.
    done = copier_cli("--data", answer, str(REPO), str(tmp_path / "out"))
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    question = answer.split("=", 1)[0]
    assert last.startswith(f"ValueError: Validation error for question '{question}': "), last
    assert expected in last, last
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_after_copy_the_next_steps_say_how_to_start_a_git_repository(tmp_path: Path) -> None:
    target = tmp_path / "my new service"
    done = copier_cli(str(REPO), str(target))
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout + done.stderr
    assert f"cd '{target}'" in out  # quoted for the shell: the path has spaces
    # uv.lock is made before the first commit, so it is in it: the tree is clean for `inv deploy`.
    assert 'git init -b main && uv lock && git add -A && git commit -qm "Initial commit"' in out
    assert "uv sync --locked" in out
    assert "inv dev" in out and "nox" in out
    assert "inv deploy --env local" in out  # the first deploy needs nothing but the engine
    assert not (target / ".git").exists(), "Copier runs no tasks (they would need --trust)"


def test_a_template_given_as_a_relative_path_is_named_with_the_command_that_works(tmp_path: Path) -> None:
    """The tooling's pin needs an absolute source, and Copier's Jinja cannot make one: the message
    after the copy says so, first, with the command to copy from the absolute path."""
    done = copier_cli(REPO.name, str(tmp_path / "svc"), cwd=REPO.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout + done.stderr
    assert f'STOP: the template was given as the relative path "{REPO.name}"' in out
    assert f'copier copy "$(realpath {REPO.name})"' in out and "Note: the tooling is pinned" not in out
    absolute = copier_cli(str(REPO), str(tmp_path / "svc2"))
    assert "STOP" not in absolute.stdout + absolute.stderr


# Python's `$` matches before a final newline; a YAML `|` block in a --data-file ends with one.
ANCHORED = {
    "project_slug": "acme-orders",
    "author_email": "team@example.com",
    "base_image": "python:3.12-slim",
    "netlify_site_name": "acme-orders",
    "backend_url": "https://api.example.com",
    "image": "ghcr.io/acme/acme-orders",
}


@pytest.mark.parametrize("question", sorted(ANCHORED))
@pytest.mark.parametrize("tail", ["\n", "\n\n", "\r\n", "\nx"], ids=["LF", "LFLF", "CRLF", "LF-text"])
def test_a_line_break_at_the_end_of_an_answer_is_refused(tmp_path: Path, question: str, tail: str) -> None:
    target = tmp_path / "out"
    with pytest.raises(ValueError, match=f"Validation error for question '{question}'"):
        render(target, {question: ANCHORED[question] + tail}, git=False)
    assert not target.exists() or not any(target.iterdir())


def test_the_anchored_answers_are_valid_without_the_line_break(tmp_path: Path) -> None:
    render(tmp_path / "out", ANCHORED, git=False)  # the refusals above are the line break's doing


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"description": "   "}, "description must not be empty"),
        (
            {"python_version": "3.12", "base_image": "python:3.13-slim"},
            "is Python 3.13, but python_version is 3.12: answer python_version=3.13",
        ),
        ({"python_version": "3.11", "base_image": "reg.example.com/python:3.12-slim-bookworm"}, "is Python 3.12"),
    ],
)
def test_more_refusals(tmp_path: Path, answers: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="Validation error") as caught:
        render(tmp_path / "out", answers, git=False)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "base", ["python:3.12.7-slim", "registry.example.com/team/base:2024", "python@sha256:" + "a" * 64]
)
def test_base_images_that_agree_or_say_nothing_are_accepted(tmp_path: Path, base: str) -> None:
    render(tmp_path / "out", {"base_image": base}, git=False)
