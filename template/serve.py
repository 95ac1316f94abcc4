"""Start gunicorn with gunicorn.conf.py; the image's CMD. Extra arguments go to gunicorn.

Before gunicorn starts, two checks turn a broken start into one line on stderr and an exit code,
instead of a traceback from every worker:

- exit 2, configuration: a bad gunicorn variable (``PORT``, ``WEB_CONCURRENCY``, ...) or a bad
  ``APP_*`` variable. ``serve.py: APP_LOG_LEVEL='loud' is not a level; use DEBUG, ...``
- exit 3, the app: it does not import or build. ``serve.py: api/routes.py:12: SyntaxError: invalid syntax``

Every such line starts with ``serve.py: ``. The app is checked in a forked child, so this
process (gunicorn's master, PID 1 in the container, where SIGTERM arrives) never imports it:
workers load it themselves, and a reloading worker sees new code.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import signal
import sys
import traceback
from pathlib import Path
from typing import NoReturn

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "gunicorn.conf.py"
EXIT_CONFIG = 2
EXIT_APP = 3


def fail(message: str, code: int) -> NoReturn:
    print(f"serve.py: {' '.join(message.split())}", file=sys.stderr, flush=True)
    sys.exit(code)


def check_settings() -> None:
    try:
        runpy.run_path(str(CONFIG))
    except SystemExit as exc:  # gunicorn.conf.py names the variable in its message
        if isinstance(exc.code, str):
            fail(exc.code, EXIT_CONFIG)
        raise


def _location(exc: BaseException) -> str:
    """``file:line: `` of the error in this project's code (api/...), as a path relative to here."""
    if isinstance(exc, SyntaxError) and exc.filename:
        path, line = exc.filename, exc.lineno
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if _ours(f.filename)]
        if not frames:
            return ""
        path, line = frames[-1].filename, frames[-1].lineno
    with contextlib.suppress(ValueError):
        path = str(Path(path).resolve().relative_to(HERE))
    return f"{path}:{line}: "


def _ours(filename: str) -> bool:
    path = Path(filename).resolve()
    return path.is_relative_to(HERE) and "site-packages" not in path.parts


def describe(exc: BaseException) -> str:
    """One line: where (file:line), the exception's type and its message."""
    message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    return f"{_location(exc)}{type(exc).__name__}: {message}".strip()


def _check_app_here() -> int:
    try:
        from api import create_app

        create_app()
    except BaseException as exc:
        if type(exc).__name__ == "ConfigError":  # api.config: the message names the variable
            print(f"serve.py: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
            return EXIT_CONFIG
        print(f"serve.py: {' '.join(describe(exc).split())}", file=sys.stderr, flush=True)
        return EXIT_APP
    return 0


def check_app() -> None:
    """Import and build the app once, in a child process; exit as it says."""
    pid = os.fork()
    if pid == 0:
        code = EXIT_APP
        # The check counts no metrics: its process would leave files among the workers'.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        try:
            code = _check_app_here()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code < 0:
        fail(f"the app check was killed by signal {-code}", EXIT_APP)
    if code:
        sys.exit(code)  # the child printed the line


def prepare_metrics() -> None:
    """The workers share their Prometheus values through files in PROMETHEUS_MULTIPROC_DIR (the
    image: /tmp/metrics, on tmpfs; elsewhere a new temporary directory). Files a previous run
    left there would add its counts to this one's: they go before any worker starts."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if not path:  # outside the image: a directory of this run's own, removed when it ends
        import atexit
        import shutil
        import tempfile

        path = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="metrics-")
        master = os.getpid()
        # Workers are forked from this process and run its exit hooks too: only the master removes it.
        atexit.register(lambda: os.getpid() == master and shutil.rmtree(path, ignore_errors=True))
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable by this user")
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.remove(os.path.join(path, name))
    except OSError as exc:
        fail(f"PROMETHEUS_MULTIPROC_DIR={path!r}: {exc.strerror or exc}; it must be a writable directory", EXIT_CONFIG)


def stop_while_starting() -> None:
    """Until gunicorn puts its own handlers in place, SIGTERM and SIGINT end the start-up at once.
    This process is PID 1 in the container, and the kernel drops a signal that PID 1 has no handler
    for: a `docker stop` during the checks (a deploy's Ctrl-C, a rollback) would otherwise wait out
    the whole stop timeout and end in SIGKILL."""

    def stop(signum: int, _frame: object) -> None:
        os._exit(128 + signum)  # as a shell reports a process ended by the signal

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


if __name__ == "__main__":
    stop_while_starting()
    check_settings()
    # Libraries imported once, here: the app check and gunicorn's workers are forked from this
    # process and find them loaded, where each would import them again (Flask takes 0.13 s; four
    # workers on two cores, most of a start). Never the app's own code (api/): see the top.
    import flask  # noqa: F401  (the app's other heavy libraries can go here too)

    check_app()
    prepare_metrics()
    import prometheus_client  # noqa: F401  (only now: it reads PROMETHEUS_MULTIPROC_DIR as it loads)
    from gunicorn.app.wsgiapp import run

    sys.argv = ["gunicorn", "--config", str(CONFIG), *sys.argv[1:]]
    run()
