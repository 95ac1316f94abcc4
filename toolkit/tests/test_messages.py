"""Messages a person reads every day, as they read them: the lines `inv` prints last, `inv -l`,
and what a deploy's preflight says to do. None of these needs a Docker engine."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from api import create_app
from cnd_toolkit import monitor, smoke
from cnd_toolkit import project as proj
from cnd_toolkit import settings as settings_mod
from cnd_toolkit.errors import SmokeFailed
from cnd_toolkit.release import deploy

from tests.conftest import git_project

# -- inv deploy without Netlify settings ----------------------------------------------------------


def test_a_deploy_without_netlify_settings_names_backend_only_among_its_fixes(tmp_path: Path) -> None:
    """A project whose site is not on Netlify yet can still ship its API: the preflight says how."""
    here = git_project(tmp_path)
    environ = {"BACKEND_URL": "http://127.0.0.1", "IMAGE": "registry.acme.dev/acme/x"}
    for netlify in ({}, {"NETLIFY_SITE_ID": "site-1"}, {"NETLIFY_AUTH_TOKEN": "nfp_token_abcdef0123456789"}):
        settings = settings_mod.load(tmp_path, environ={**environ, **netlify}, defaults={})
        with pytest.raises(deploy.PreflightFailed) as caught:
            deploy.preflight(here, settings, deploy.Options())
        lines = str(caught.value).splitlines()
        assert any("NETLIFY_" in line and "is not set" in line for line in lines), lines
        assert [line for line in lines if "--backend-only" in line] == [
            "  - or deploy the container alone, without Netlify: `inv deploy --backend-only` "
            "(NETLIFY_DEPLOY=off makes that this target's default)"
        ], lines
        assert deploy.preflight(here, settings, deploy.Options(netlify=False))  # the fix works as said
    # Only where it helps: --netlify-only cannot be mended by it, and a deploy with Netlify set
    # but another setting missing is not told to leave Netlify out.
    settings = settings_mod.load(tmp_path, environ={"BACKEND_URL": "http://127.0.0.1"}, defaults={})
    with pytest.raises(deploy.PreflightFailed) as caught:
        deploy.preflight(here, settings, deploy.Options(backend=False))
    assert "--backend-only" not in str(caught.value)
    netlify = {"NETLIFY_SITE_ID": "site-1", "NETLIFY_AUTH_TOKEN": "nfp_token_abcdef0123456789"}
    settings = settings_mod.load(tmp_path, environ={"BACKEND_URL": "http://127.0.0.1", **netlify}, defaults={})
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
    found = monitor.snapshot(
        _engine(previous, live), "svc", watched=(monitor.Watched.swarm if swarm else monitor.Watched.host)("svc")
    )
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
    found = monitor.snapshot(_engine(crashed), "svc", watched=monitor.Watched.host("svc"))
    assert not found.ok
    assert found.lines() == ["svc-green: exited (exit code 137, OOM-killed)"]
    assert found.problems == [
        "no release of svc runs on this Docker host; the last one, svc-green, stopped (OOM-killed)"
    ]
    # A release that runs and fails its check is still named unhealthy, and is a problem.
    sick = _container("svc-blue", "running", "2026-01-02T11:00:00.1Z", "unhealthy", ExitCode=0)
    found = monitor.snapshot(_engine(crashed, sick), "svc", watched=monitor.Watched.host("svc"))
    assert found.problems == ["svc-blue is unhealthy: its health check fails"]
    assert found.lines()[0].startswith("svc-blue: running, health unhealthy")
    assert found.lines()[1] == "svc-green: stopped, kept for rollback"


# -- a failed smoke run ----------------------------------------------------------------------------


@pytest.fixture
def lenient_api() -> Iterator[str]:
    """This project's API taking bodies up to 8 MiB: the smoke suite's 2 MiB body gets a 400 (not
    JSON), not the 413 it expects. One test fails, at one known line; the others pass."""
    from werkzeug.serving import make_server

    app = create_app({"MAX_REQUEST_BYTES": 8 * 1024 * 1024, "LOG_FLUSH_SECONDS": 0})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="lenient-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)


def _line_of(text: str) -> str:
    """``tests/smoke/test_smoke.py:N``, where ``text`` is in the smoke suite."""
    source = (proj.ROOT / "tests" / "smoke" / "test_smoke.py").read_text().splitlines()
    return f"tests/smoke/test_smoke.py:{next(i for i, line in enumerate(source, 1) if text in line)}"


def test_a_failed_smoke_run_ends_with_the_failed_tests_and_their_assertion_lines(lenient_api: str) -> None:
    """`inv smoke` as typed: pytest's report scrolls by first, and the last lines name each failed
    test and the assertion that failed, whatever came before them (for an image, its log tail)."""
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "smoke", "--url", lenient_api],
        cwd=proj.ROOT, env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "short test summary info" in result.stdout  # pytest's own report, first
    last = result.stderr.strip().splitlines()[-2:]
    where = _line_of("assert too_big.status_code == 413")
    assert last == [
        f"error: smoke tests failed against {lenient_api}: 1 of 7 (pytest's report above has each in full)",
        f"  test_errors_are_json at {where}: assert too_big.status_code == 413 (assert 400 == 413)",
    ], result.stderr


def test_the_failures_come_from_pytests_report_whatever_failed(tmp_path: Path, lenient_api: str) -> None:
    """Each way a test can fail: an assert in the test, one in a helper it calls, an exception,
    a fixture that fails; and a run that stopped before pytest wrote its report."""
    suite = tmp_path / "tests" / "smoke"
    suite.mkdir(parents=True)
    (suite / "test_kinds.py").write_text(
        "import pytest\n"
        "def helper(code):\n"
        "    assert code == 0, 'exec said no'\n"
        "def test_passes():\n"
        "    pass\n"
        "def test_status():\n"
        "    status = 400\n"
        "    assert status == 413\n"
        "def test_in_a_helper():\n"
        "    helper(3)\n"
        "def test_key():\n"
        "    {}['X-Request-ID']\n"
        "@pytest.fixture\n"
        "def refused():\n"
        "    raise ConnectionError('refused')\n"
        "def test_fixture(refused):\n"
        "    pass\n"
    )
    here = dataclasses.replace(proj.load(), root=tmp_path)
    with pytest.raises(SmokeFailed) as caught:
        smoke.smoke_url(here, lenient_api)
    assert str(caught.value).splitlines() == [
        f"smoke tests failed against {lenient_api}: 4 of 5 (pytest's report above has each in full)",
        "  test_status at tests/smoke/test_kinds.py:8: assert status == 413 (assert 400 == 413)",
        "  test_in_a_helper at tests/smoke/test_kinds.py:3: assert code == 0, 'exec said no' "
        "(AssertionError: exec said no)",
        "  test_key at tests/smoke/test_kinds.py:12: {}['X-Request-ID'] (KeyError: 'X-Request-ID')",
        "  test_fixture (failed on setup) at tests/smoke/test_kinds.py:15: raise ConnectionError('refused') "
        "(ConnectionError: refused)",
    ]
    # A module that does not import: named, with its error.
    (suite / "test_kinds.py").write_text("import no_such_module\n")
    with pytest.raises(SmokeFailed) as caught:
        smoke.smoke_url(here, lenient_api)
    assert str(caught.value).splitlines()[1:] == [
        "  tests.smoke.test_kinds (collection failure) at tests/smoke/test_kinds.py:1: "
        "ModuleNotFoundError: No module named 'no_such_module'"
    ]
    # pytest stopped before it ran a test (the suite's conftest does without a base URL): nothing
    # in its report, and the message says where to look.
    (suite / "conftest.py").write_text(
        "import pytest\n@pytest.fixture\ndef base_url():\n    pytest.exit('no base URL', returncode=4)\n"
    )
    (suite / "test_kinds.py").write_text("def test_page(base_url):\n    pass\n")
    with pytest.raises(SmokeFailed) as caught:
        smoke.smoke_url(here, lenient_api)
    assert str(caught.value) == f"smoke tests failed against {lenient_api} (pytest exit code 4; its report is above)"


# -- inv -l, and what Invoke itself refuses ------------------------------------------------------


def _inv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=proj.ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _on_a_terminal(columns: int, *args: str) -> list[str]:
    """What `inv ARGS` prints on a terminal ``columns`` wide (Invoke asks the terminal its width)."""
    import fcntl
    import struct
    import termios

    main, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    child = subprocess.Popen(
        [sys.executable, "-m", "invoke", *args], cwd=proj.ROOT, stdin=subprocess.DEVNULL, stdout=terminal
    )
    os.close(terminal)
    chunks = []
    try:
        while select.select([main], [], [], 60)[0]:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(main)
        child.wait(60)
    assert child.returncode == 0
    return b"".join(chunks).decode().replace("\r\n", "\n").splitlines()


def _summaries() -> dict[str, str]:
    """Each task's summary: the first paragraph of its docstring, read from cnd_toolkit/tasks.py (not
    imported), whose collection the project's tasks.py lists."""
    import importlib.util

    spec = importlib.util.find_spec("cnd_toolkit.tasks")
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
            "task" in ast.unparse(decorator).split("(")[0] for decorator in node.decorator_list
        ):
            paragraph = (ast.get_docstring(node) or "").split("\n\n")[0]
            found[node.name] = paragraph
    return found


@pytest.mark.parametrize("columns", [80, 200])
def test_inv_l_shows_each_tasks_summary_whole_as_one_sentence(columns: int) -> None:
    """Invoke lists the first line of each docstring, wrapped to the terminal: a summary that ran
    on to a second line was cut mid-sentence ("CPU and"). Each is one short sentence, on one line
    of the list even at 80 columns."""
    summaries = _summaries()
    listed = json.loads(_inv("--list", "--list-format=json").stdout)["tasks"]
    assert len(summaries) == len(listed) >= 20
    for summary in summaries.values():
        assert "\n" not in summary, f"the summary runs on to a second line: {summary!r}"
        assert summary.endswith(".") and summary[0].isupper(), summary
    assert sorted(task["help"] for task in listed) == sorted(summaries.values())
    lines = _on_a_terminal(columns, "-l")
    assert lines[0] == "Available tasks:" and lines[-1] == "", lines
    entries = [line for line in lines[1:] if line.strip()]
    assert max(len(line) for line in entries) <= columns
    shown = {line.split()[0]: " ".join(line.split()[1:]) for line in entries}
    assert len(entries) == len(listed), "\n".join(lines)  # no task's summary was wrapped
    assert shown == {task["name"]: task["help"] for task in listed}


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        (["maintenance"], "usage: inv maintenance STATE [--env ENV]; STATE: on (JSON 503 with Retry-After) or off"),
        (["maintenance", "--env", "staging"], "usage: inv maintenance STATE [--env ENV]; STATE: on (JSON 503"),
        (["scale"], "usage: inv scale REPLICAS [--env ENV]; REPLICAS: the number of tasks, 1-100"),
        (["canary"], "usage: inv canary ACTION [--env ENV]; ACTION: status, promote (every request to the canary)"),
        (["logs", "--lines"], "error: inv logs --lines needs a value: the last N lines, merged (default 200; 0: all)"),
        (["deploy", "--target"], "error: inv deploy --target needs a value: host (one Docker host, blue/green) or"),
        (["maintenance", "on", "--env"], "error: inv maintenance --env needs a value: settings from .env.NAME"),
    ],
)
def test_what_invoke_refuses_while_parsing_is_one_line_saying_how_to_type_it(typed: list[str], said: str) -> None:
    """Invoke's own words were "'maintenance' did not receive required positional arguments:
    'state'" and "Flag <Argument: lines (l)> needed value and was not given one!"."""
    result = _inv(*typed)
    assert (result.returncode, result.stdout) == (2, ""), result.stdout + result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(said), line


def test_a_value_a_task_refuses_is_one_line_and_help_still_works() -> None:
    result = _inv("edge", "--port", "abc")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == ["error: --port 'abc' is not a port; use 1-65535 (or 0 for a free one)"]
    for task in ("build", "run"):  # before any engine is asked (none is, here: DOCKER_HOST leads nowhere)
        result = subprocess.run(
            [sys.executable, "-m", "invoke", task, "--tag", "v1\x1b[2J"], cwd=proj.ROOT, capture_output=True,
            text=True, timeout=120, check=False, env={**os.environ, "DOCKER_HOST": "tcp://127.0.0.1:9"},
        )  # fmt: skip
        assert result.returncode == 1 and result.stdout == "", result.stdout
        assert result.stderr.startswith("error: --tag 'v1\\x1b[2J' is not an image tag; use letters"), result.stderr
    # `inv TASK --help` where the task's first argument is positional: Invoke hands over "--help".
    for name in ("maintenance", "scale", "canary"):
        result = _inv(name, "--help")
        assert result.returncode == 0 and "Docstring:" in result.stdout, result.stdout + result.stderr


def test_a_smoke_failure_inside_a_library_points_at_the_suites_own_line(capfd: pytest.CaptureFixture[str]) -> None:
    """Against a closed port every request raises inside httpx: the summary names the test's own
    line (tests/smoke/...), not httpx's `raise`, for each failed test."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    done = smoke.run_suite(proj.load(), f"http://127.0.0.1:{closed}", extra=["-q"])
    capfd.readouterr()
    assert done.code != 0 and done.failures, done
    for failure in done.failures:
        assert failure.where.startswith("tests/smoke/"), failure
        assert "http.get" in failure.line, failure


def _project_copy(tmp_path: Path) -> Path:
    """The rendered project in ``tmp_path/site``, without its settings files, to run tasks in."""
    import shutil

    site = tmp_path / "site"
    shutil.copytree(proj.ROOT, site, ignore=shutil.ignore_patterns(".git", ".venv", ".nox", "__pycache__", ".env*"))
    return site


@pytest.mark.parametrize("seed", range(3))
def test_what_a_task_prints_holds_no_control_character_whatever_the_files_hold(tmp_path: Path, seed: int) -> None:
    """Setting names in .env and rules in public/_redirects with seeded hostile text (escape
    sequences, C0 and C1 controls, bidi overrides): `inv check` quotes them, as escapes only."""
    import random
    import re

    rng = random.Random(seed)
    site = _project_copy(tmp_path)
    hostile = ["\x1b[2J", "\x1b]0;title\x07", "\x9b31m", "\x08", "\u202e", "\x85", "\x1b", "\x7f", "\u2028"]
    names = [setting.name for setting in settings_mod.SETTINGS]
    lines = [f"{rng.choice(names)}{rng.choice(hostile)}{rng.choice(hostile)}=1" for _ in range(6)]
    (site / ".env").write_text("\n".join(lines) + "\n")
    rules = [f"/a{rng.choice(hostile)} /b{rng.choice(hostile)} 30{rng.choice('1278')}" for _ in range(6)]
    (site / "public" / "_redirects").write_text("\n".join(rules) + "\n")
    # TOML's quoted keys hold escapes too: an unknown section and key named with them.
    escaped = "".join(f"\\u{ord(c):04x}" for c in rng.choice(hostile))
    with (site / "netlify.toml").open("a") as toml:
        toml.write(f'\n["x{escaped}"]\ny = 1\n[context."p{escaped}"]\n"k{escaped}" = "v"\n')
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "check"], cwd=site, capture_output=True, text=True, timeout=120, check=False
    )
    printed = done.stdout + done.stderr
    assert "is not a setting" in printed or "cannot read this line" in printed, printed  # .env was read
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]", printed), repr(printed)


def test_inv_edge_shows_the_first_warnings_and_counts_the_rest(tmp_path: Path) -> None:
    """A _redirects of 60 rules pasted twice (60 warnings): `inv edge` starts with the first
    MAX_WARNINGS of them and one line counting the rest, not a screen of repeats."""
    import random

    from cnd_toolkit.netlify import config

    site = _project_copy(tmp_path)
    rules = [f"/r{i}/* /t{i}/:splat {random.Random(i).choice([301, 302])}" for i in range(60)]
    (site / "public" / "_redirects").write_text("\n".join(rules + rules) + "\n")
    warnings = len(config.load(site).warnings)
    edge = subprocess.Popen(
        [sys.executable, "-m", "invoke", "edge", "--port", "0", "--backend", "http://127.0.0.1:9"],
        cwd=site, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip
    printed = []
    try:
        assert edge.stdout is not None
        for line in edge.stdout:
            printed.append(line)
            if line.startswith("Serving") or len(printed) > 500:
                break
    finally:
        edge.terminate()
        edge.wait(timeout=30)
    shown = [line for line in printed if "is repeated at" in line]
    cap = settings_mod.MAX_WARNINGS
    assert warnings > cap and len(shown) == cap, printed
    assert f"{warnings - cap:,} more warnings: `inv check` lists them\n" in printed, printed


@pytest.mark.parametrize(
    ("line", "said", "code"),
    [
        ("APP_ENV=PORT", "error APP_ENV (.env:1) lists PORT, which the image sets for itself", 1),
        ("APP_ENV=ld_preload,PYTHONPATH", "lists ld_preload, PYTHONPATH, which the image sets for itself", 1),
        ("APP_ENV=A B", "error APP_ENV (.env:1) lists 'A B', not variable names", 1),
        ("APP_ENV=PORT\u200b", "lists 'PORT\\u200b', not variable names", 1),
        ("APP_ENV=SET_IN_CI_ONLY", "lists SET_IN_CI_ONLY, set nowhere", 0),  # a warning: CI may set it
        ("GUNICORN_CMD_ARGS=--bind 0.0.0.0:1", ".env:1: GUNICORN_CMD_ARGS is the image's own", 0),
        ("BACKEND_URL=https://api.acme.dev/v1", "is not an https origin without a path", 1),
    ],
)
def test_inv_check_says_what_a_deploy_would_refuse_in_the_settings(
    tmp_path: Path, line: str, said: str, code: int
) -> None:
    site = _project_copy(tmp_path)
    (site / ".env").write_text(line + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "check"], cwd=site, capture_output=True, text=True, timeout=120, check=False,
        env={k: v for k, v in os.environ.items() if k not in {"APP_ENV", "BACKEND_URL"}},
    )  # fmt: skip
    printed = done.stdout + done.stderr
    assert said in printed and done.returncode == code, printed
