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

import os
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
    :class:`HookFailed` when it fails (a KeyboardInterrupt stops it and propagates)."""
    hook = path(root, name)
    shown_name = f"{FOLDER}/{name}"
    if not os.path.lexists(hook):
        return False
    if not hook.is_file():
        raise HookFailed(f"{shown_name} is not a file; a hook is an executable file (or remove it)")
    if not os.access(hook, os.X_OK):
        raise HookFailed(f"{shown_name} is not executable: `chmod +x {shown_name}` (or remove it)")
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
        )
    except OSError as exc:  # a missing interpreter (#!/no/such), a format the kernel cannot run
        raise HookFailed(f"{shown_name} could not be run: {exc.strerror or exc}") from None
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        process.kill()

    timer = threading.Timer(timeout, stop)
    timer.start()
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            say(f"  {name}: " + redact.scrub(shown(raw.decode("utf-8", "replace").rstrip("\r\n"))))
        code = process.wait()
    except BaseException:  # Ctrl-C: the hook got SIGINT from the terminal too; make sure it is gone
        process.kill()
        process.wait()
        raise
    finally:
        timer.cancel()
    if timed_out.is_set():
        raise HookFailed(f"{shown_name} did not finish within {timeout:g} s and was stopped")
    if code != 0:
        how = f"was stopped by signal {-code}" if code < 0 else f"exited with {code}"
        raise HookFailed(f"{shown_name} {how}")
    return True
