"""A project's deploy hooks: executables in ``hooks/`` that ``inv deploy`` runs at three moments.

- ``hooks/pre-build``: before the image is built. A failure stops the deploy; nothing changed.
- ``hooks/pre-switch``: once the new release is up and healthy, before it takes any request
  (on a swarm: before the service update starts; for a canary: before its first share). A
  failure stops the deploy before the switch: the new release is removed and the live one keeps
  serving. Database migrations belong here (``docker exec "$CND_RELEASE" ...`` on one host).
- ``hooks/post-deploy``: after the deploy was recorded (and Netlify published). A failure is
  reported, and ``inv deploy`` exits non-zero, but the release stays live.

As Kamal's ``.kamal/hooks``: a hook is any executable file with that exact name (a missing one is
skipped; one that is not executable is an error, not skipped), run from the project's folder
with the release's facts in ``CND_*`` variables (:func:`facts`) on top of the environment the
deploy runs in, without the deploy's secrets (``settings.child_environment``). Its output is
shown line by line, with any secret the deploy knows masked. It gets ``HOOK_TIMEOUT`` seconds;
Ctrl-C stops it with the deploy.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import signal
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path

from cnd_toolkit import redact, settings
from cnd_toolkit.errors import OpsError, shown
from cnd_toolkit.logs import LineSink

NAMES = ("pre-build", "pre-switch", "post-deploy")
FOLDER = "hooks"
HOOK_TIMEOUT = 600.0


class HookFailed(OpsError):
    """A hook exited non-zero, timed out, or could not be run."""


def facts(
    *,
    slug: str,
    version: str,
    revision: str,
    target: str,
    backend_url: str,
    image: str = "",
    release: str = "",
    live: str = "",
    netlify_url: str = "",
) -> dict[str, str]:
    """The ``CND_*`` variables a hook gets: what is known of the release at its moment."""
    return {
        "CND_PROJECT": slug,
        "CND_VERSION": version,
        "CND_REVISION": revision,
        "CND_TARGET": target,  # host or swarm
        "CND_BACKEND_URL": backend_url,
        "CND_IMAGE": image,  # the image the release runs (after the build)
        "CND_RELEASE": release,  # the new release's container (pre-switch on one host) or service
        "CND_LIVE_RELEASE": live,  # what serves until the switch ("" on a first deploy)
        "CND_NETLIFY_URL": netlify_url,  # post-deploy, when Netlify published
    }


def path(root: Path, name: str) -> Path:
    if name not in NAMES:
        raise ValueError(f"no hook {name!r}: the hooks are {', '.join(NAMES)}")
    return root / FOLDER / name


def problems(root: Path) -> list[str]:
    """What would stop a hook of the project from running, for the deploy's preflight: each hook
    that exists but is not an executable file, or names an interpreter (``#!``) that is missing;
    and a file whose name is close to a hook's (``pre-switch.sh``, ``pre_switch``), which the deploy
    would skip silently: a migration that never runs."""
    found = []
    folder = root / FOLDER
    others = sorted(entry.name for entry in folder.iterdir()) if folder.is_dir() else []
    for other in others:
        if other in NAMES or other.endswith(".sample"):
            continue
        meant = other.split(".")[0].lower().replace("_", "-").replace(" ", "-")
        close = [meant] if meant in NAMES else difflib.get_close_matches(meant, NAMES, n=1, cutoff=0.75)
        if close:
            found.append(
                f"{FOLDER}/{shown(other)} is not a hook the deploy runs (it runs {', '.join(NAMES)}: those exact "
                f"names, no extension); rename it to {FOLDER}/{close[0]}, or remove it"
            )
    for name in NAMES:
        hook, shown_name = path(root, name), f"{FOLDER}/{name}"
        if not os.path.lexists(hook):
            continue
        if not hook.is_file():
            found.append(f"{shown_name} is not a file; a hook is an executable file (or remove it)")
        elif not os.access(hook, os.X_OK):
            found.append(f"{shown_name} is not executable: `chmod +x {shown_name}` (or remove it)")
        else:
            with hook.open("rb") as opened:
                first = opened.readline(512)
            interpreter = (
                first[2:].split()[0].decode("utf-8", "replace") if first.startswith(b"#!") and first[2:].split() else ""
            )
            if interpreter and not os.access(interpreter, os.X_OK):
                found.append(
                    f"{shown_name} starts with #!{shown(interpreter)}, which is not an executable on this machine"
                )
    return found


def run(
    root: Path,
    name: str,
    known: Mapping[str, str],
    *,
    say: LineSink,
    environ: Mapping[str, str] | None = None,
    timeout: float = HOOK_TIMEOUT,
) -> bool:
    """Run hook ``name`` of the project in ``root`` if it exists; whether it ran. Raises
    :class:`HookFailed` when it fails. The hook runs in a process group of its own, which is
    stopped whole at the timeout, on Ctrl-C or SIGTERM (then the exception propagates), and once
    the hook has exited (what it left running in the background goes with it)."""
    hook = path(root, name)
    shown_name = f"{FOLDER}/{name}"
    if not os.path.lexists(hook):
        return False
    for problem in problems(root):
        if problem.startswith(shown_name + " "):
            raise HookFailed(problem)
    say(f"Running {shown_name}")
    environment = {**settings.child_environment(environ), "CND_HOOK": name, **known}
    try:
        process = subprocess.Popen(
            [str(hook)],
            cwd=root,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stopped whole, and a terminal's Ctrl-C reaches us first
        )
    except OSError as exc:  # a format the kernel cannot run
        raise HookFailed(f"{shown_name} could not be run: {exc.strerror or exc}") from None

    def relay() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            say(f"  {name}: " + redact.scrub(shown(raw.decode("utf-8", "replace").rstrip("\r\n"))))

    reader = threading.Thread(target=relay, name=f"hook-{name}", daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(process)
        raise HookFailed(f"{shown_name} did not finish within {timeout:g} s and was stopped") from None
    except BaseException:  # Ctrl-C, SIGTERM: the hook and whatever it started go too
        _stop_group(process)
        raise
    reader.join(LINGER)  # its last lines; a background process it left may hold the pipe open
    _stop_group(process)
    reader.join(LINGER)  # the pipe's last writers are gone now: the reader ends
    if code != 0:
        how = f"was stopped by signal {-code}" if code < 0 else f"exited with {code}"
        raise HookFailed(f"{shown_name} {how}")
    return True


LINGER = 2.0  # how long the output of a finished hook is read before its process group is stopped


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
