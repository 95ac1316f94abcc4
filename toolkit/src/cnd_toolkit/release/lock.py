"""The deploy lock: one deploy of a project at a time on its Docker host.

Held as a Docker volume named after the project, created through the Docker API (so it works on
any engine ``DOCKER_HOST`` names, with no shell on the host). Creating a volume is atomic on the
engine: of two deploys that create it at the same moment, the engine makes it for one and hands
the other the one that exists, whose labels name someone else. The labels say who holds it
(user, machine, process, revision) and since when. A deploy releases it on success, on failure
and on Ctrl-C; one killed outright (SIGKILL, a lost machine) leaves it, and ``inv lock --release``
clears it after saying whose it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import os
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import docker.errors

from cnd_toolkit.errors import OpsError

LABEL = "dev.copier-netlify-docker.lock"


class LockHeld(OpsError):
    """Another deploy holds the lock; the message names the holder and how long it has held it."""


@dataclass(frozen=True)
class Holder:
    token: str
    who: str
    since: dt.datetime
    revision: str
    action: str

    @classmethod
    def from_labels(cls, labels: dict[str, str]) -> Holder:
        try:
            since = dt.datetime.fromisoformat(labels.get(f"{LABEL}.since", ""))
        except ValueError:
            since = dt.datetime.fromtimestamp(0, dt.UTC)
        return cls(
            token=labels.get(f"{LABEL}.token", ""),
            who=labels.get(f"{LABEL}.who", "someone"),
            since=since,
            revision=labels.get(f"{LABEL}.revision", ""),
            action=labels.get(f"{LABEL}.action", "deploy"),
        )

    def describe(self, now: dt.datetime | None = None, *, hint: bool = True) -> str:
        """Who, what, for how long; with ``hint``, that `inv lock --release` is safe when the holder is dead."""
        age = ((now or dt.datetime.now(dt.UTC)) - self.since).total_seconds()
        revision = f" of {self.revision[:12]}" if self.revision else ""
        gone = "; that process is gone, so `inv lock --release` is safe" if hint and self.dead_here() else ""
        return f"{self.who} ({self.action}{revision}, for {_age(age)}, since {self.since:%Y-%m-%d %H:%M:%S} UTC){gone}"

    def dead_here(self) -> bool:
        """The holder ran on this machine (``user@host pid N``) and its process no longer exists."""
        found = re.fullmatch(r"[^@]*@(?P<host>\S+) pid (?P<pid>\d+)", self.who)
        if found is None or found["host"] != socket.gethostname():
            return False
        try:
            os.kill(int(found["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, OverflowError):
            return False
        return False


def volume_name(slug: str) -> str:
    return f"{slug}-deploy-lock"


def whoami() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def holder(client: docker.DockerClient, slug: str) -> Holder | None:
    """Who holds the project's lock, or None."""
    try:
        volume = client.volumes.get(volume_name(slug))
    except docker.errors.NotFound:
        return None
    return Holder.from_labels(dict(volume.attrs.get("Labels") or {}))


def acquire(client: docker.DockerClient, slug: str, *, revision: str = "", action: str = "deploy") -> Holder:
    """Take the lock, or raise :class:`LockHeld` naming who has it."""
    token = uuid.uuid4().hex
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    labels = {
        LABEL: slug,
        f"{LABEL}.token": token,
        f"{LABEL}.who": whoami(),
        f"{LABEL}.since": now.isoformat(),
        f"{LABEL}.revision": revision,
        f"{LABEL}.action": action,
    }
    try:
        volume = client.volumes.create(volume_name(slug), labels=labels)
        found = dict(volume.attrs.get("Labels") or {})
    except docker.errors.APIError as exc:  # engines that refuse to hand back a volume with other labels
        if exc.status_code != 409:
            raise
        found = dict(client.volumes.get(volume_name(slug)).attrs.get("Labels") or {})
    held = Holder.from_labels(found)
    if held.token != token:
        raise LockHeld(
            f"another {held.action} of {slug} holds the lock on this Docker host: {held.describe()}; "
            "wait for it, or if it is dead (its machine is gone, it was killed), clear it with `inv lock --release`"
        )
    return held


def release(client: docker.DockerClient, slug: str, token: str | None = None) -> Holder | None:
    """Remove the lock (only if ``token`` holds it, when given); returns whose it was, or None."""
    current = holder(client, slug)
    if current is None or (token is not None and current.token != token):
        return None
    with contextlib.suppress(docker.errors.NotFound):
        client.volumes.get(volume_name(slug)).remove(force=True)
    return current


@contextlib.contextmanager
def held(client: docker.DockerClient, slug: str, *, revision: str = "", action: str = "deploy") -> Iterator[Holder]:
    """Hold the lock for the block; released however the block ends (an error, Ctrl-C, SIGTERM)."""
    mine = acquire(client, slug, revision=revision, action=action)
    try:
        yield mine
    finally:
        release(client, slug, mine.token)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
