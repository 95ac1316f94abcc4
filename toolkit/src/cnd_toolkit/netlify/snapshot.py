"""A commit's Netlify site as data: its ``netlify.toml`` and publish folder, read from git's objects.

The pull-request workflow previews a pull request's site with the base branch's tooling: it never
checks the pull request out and runs nothing of it. This module (run as
``python -m cnd_toolkit.netlify.snapshot REVISION DEST``) writes the pull request's ``netlify.toml`` and
the publish folder that file names into ``DEST`` as plain files, straight from git's objects, and
``inv preview --site DEST`` deploys them (:func:`checked_site` guards that directory).

What a commit holds is untrusted here, so: blobs are written byte for byte (no checkout, so no
``.gitattributes`` filters, ``export-subst`` or LFS smudge run), only regular files are written
(a symbolic link, a submodule, or a name with ``..``, ``.git`` or an empty part is refused, every
one named, and nothing is written), and the revision must name a commit (never an option).
Standard library only, like the rest of :mod:`cnd_toolkit.netlify`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cnd_toolkit.errors import ConfigError
from cnd_toolkit.netlify import config

CONFIG_FILE = "netlify.toml"
REGULAR = {"100644", "100755"}
LINK, SUBMODULE = "120000", "160000"


class SnapshotError(ConfigError):
    """A revision whose site cannot be taken as plain files; the message names each path."""


@dataclass(frozen=True)
class Entry:
    mode: str
    kind: str
    oid: str
    path: str


@dataclass(frozen=True)
class Snapshot:
    """What :func:`write` wrote: the commit, the publish folder (relative) and the files."""

    commit: str
    publish: str
    files: tuple[str, ...]

    def describe(self, dest: Path) -> str:
        config_note = f"{CONFIG_FILE} and " if CONFIG_FILE in self.files else "no netlify.toml, "
        count = len(self.files) - (CONFIG_FILE in self.files)
        return f"wrote {config_note}{count} file(s) of {self.publish}/ at {self.commit[:12]} to {dest}"


def _git(repo: Path, *args: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], input=data, capture_output=True, check=False, timeout=300
    )  # fmt: skip
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SnapshotError(f"git {args[0]} failed in {repo}: {reason[-1] if reason else 'no message'}")
    return done.stdout


def resolve(repo: Path, revision: str) -> str:
    """The full id of the commit ``revision`` names in ``repo`` (a sha, a branch, ``HEAD~1``)."""
    if not revision or revision.startswith("-") or any(ch in revision for ch in "\0\n\r"):
        raise SnapshotError(f"{revision!r} is not a revision; give a commit id or a branch name")
    done = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", "--end-of-options", revision + "^{commit}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        raise SnapshotError(
            f"revision {revision!r} is not a commit in {repo}; fetch it first "
            "(a workflow's checkout needs fetch-depth: 0 to have the pull request's commits)"
        )
    return done.stdout.strip()


def entries(repo: Path, commit: str) -> list[Entry]:
    """Every entry of the commit's tree, recursively, as git stores it (paths not quoted)."""
    listed = _git(repo, "ls-tree", "-r", "-z", "--full-tree", commit)
    found = []
    for record in listed.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, oid = meta.decode("ascii").split(" ")
        found.append(Entry(mode, kind, oid, raw_path.decode("utf-8", "surrogateescape")))
    return found


def _refusal(entry: Entry, inside: str) -> str:
    """Why ``entry`` cannot be written as a plain file under the destination, or ``""``."""
    parts = entry.path.split("/")
    if any(part in {"", ".", ".."} or part.lower() == ".git" for part in parts):
        return f"{entry.path!r} (a name with an empty, '.', '..' or '.git' part)"
    if entry.mode == LINK:
        return f"{entry.path!r} (a symbolic link; a preview takes files only: commit the file itself)"
    if entry.mode == SUBMODULE or entry.kind != "blob":
        return f"{entry.path!r} (a submodule, whose files are not in this repository)"
    if entry.mode not in REGULAR:
        return f"{entry.path!r} (mode {entry.mode}, not a regular file)"
    if entry.path == inside:
        return f"{entry.path!r} (the publish folder is a file at this revision)"
    return ""


def _blobs(repo: Path, oids: Sequence[str]) -> dict[str, bytes]:
    """The bytes of each blob, read in one ``git cat-file --batch``."""
    unique = list(dict.fromkeys(oids))
    if not unique:
        return {}
    out = _git(repo, "cat-file", "--batch", data="".join(f"{oid}\n" for oid in unique).encode())
    bodies: dict[str, bytes] = {}
    at = 0
    for oid in unique:
        end = out.index(b"\n", at)
        header = out[at:end].decode("ascii").split(" ")
        if len(header) != 3 or header[0] != oid or header[1] != "blob":
            raise SnapshotError(f"git cat-file gave {' '.join(header)!r} for blob {oid}; the clone may be damaged")
        size = int(header[2])
        bodies[oid] = out[end + 1 : end + 1 + size]
        at = end + 1 + size + 1  # the content is followed by a newline
    return bodies


def _write(dest: Path, path: str, body: bytes) -> None:
    target = dest.joinpath(*PurePosixPath(path).parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL and O_NOFOLLOW: a file is made here, never written through something already there.
    handle = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(handle, "wb") as stream:
        stream.write(body)


def write(repo: Path, revision: str, dest: Path) -> Snapshot:
    """Write the ``netlify.toml`` and publish folder of ``revision`` in ``repo`` into ``dest``.

    ``dest`` must not exist or be empty. The publish folder is the one the revision's own
    ``netlify.toml`` names (``public`` when it names none), read with the one config model.
    Raises :class:`SnapshotError` naming every path that is not a plain file; nothing is
    written then.
    """
    commit = resolve(repo, revision)
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise SnapshotError(f"{dest} already exists and is not an empty folder; give a new one")
    tree = entries(repo, commit)
    dest.mkdir(parents=True, exist_ok=True)
    config_entry = next((entry for entry in tree if entry.path == CONFIG_FILE), None)
    refused = []
    if config_entry is None and any(entry.path.startswith(CONFIG_FILE + "/") for entry in tree):
        # Read as "no netlify.toml", the preview would ship without the project's headers.
        refused.append(f"{CONFIG_FILE!r} (a folder, not the site's configuration file)")
    if config_entry is not None:
        reason = _refusal(config_entry, "")
        if reason:
            refused.append(reason)
        else:
            _write(dest, CONFIG_FILE, _blobs(repo, [config_entry.oid])[config_entry.oid])
    # The publish folder as the revision's netlify.toml names it; a bad value is reported by
    # site_files later (it falls back to public/, as the config model does).
    publish = config.publish_dir(dest).relative_to(dest).as_posix()
    prefix = "" if publish == "." else publish + "/"
    wanted = [entry for entry in tree if entry.path.startswith(prefix) or entry.path == publish]
    refused += [reason for reason in (_refusal(entry, publish) for entry in wanted) if reason]
    refused += _clashes([entry.path for entry in wanted])
    files = [entry for entry in wanted if entry.path != CONFIG_FILE]
    try:
        if refused:
            raise SnapshotError(
                f"{len(refused)} path(s) at {commit[:12]} cannot be previewed: {', '.join(refused)}"
                " (nothing was written)"
            )
        bodies = _blobs(repo, [entry.oid for entry in files])
        for entry in files:
            try:
                _write(dest, entry.path, bodies[entry.oid])
            except OSError as exc:  # a name too long, or two names one file system takes as one
                raise SnapshotError(
                    f"cannot write {entry.path!r} of {commit[:12]}: {exc.strerror or exc} (nothing was written)"
                ) from None
    except SnapshotError:
        for child in list(dest.iterdir()):  # only plain files and folders were made here: no link to follow
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        raise
    names = ([CONFIG_FILE] if config_entry is not None else []) + [entry.path for entry in files]
    return Snapshot(commit, publish, tuple(names))


def _clashes(paths: Sequence[str]) -> list[str]:
    """Paths a crafted tree names twice, or as a file and as a folder: one would overwrite the other."""
    counts = Counter(paths)
    folders = {path.rsplit("/", depth)[0] for path in counts for depth in range(1, path.count("/") + 1)}
    twice = {path for path, count in counts.items() if count > 1} | (set(counts) & folders)
    return [f"{path!r} (named twice in the tree)" for path in sorted(twice)]


def checked_site(site: Path) -> Path:
    """``site`` as a folder ``inv preview --site`` may deploy: it exists, and no link in it leads out.

    The config model reads ``netlify.toml``, ``_redirects`` and ``_headers`` before the deploy's
    own link check sees the publish folder, so a link out of ``site`` (to ``/proc/self/environ``,
    a key, ``..``) is refused here first, every one named.
    """
    if not site.is_dir():
        raise ConfigError(f"--site {site} is not a folder; give the folder that holds netlify.toml and public/")
    top = site.resolve()
    out = []
    for folder, dirs, names in os.walk(top):
        for name in sorted(dirs + names):
            path = Path(folder, name)
            if not path.is_symlink():
                continue
            try:
                target = path.resolve(strict=False)
            except (OSError, RuntimeError):
                out.append(f"{path.relative_to(top).as_posix()!r} (a loop)")
                continue
            if target != top and top not in target.parents:
                out.append(f"{path.relative_to(top).as_posix()!r} (leads to {os.readlink(path)!r})")
    if out:
        raise ConfigError(
            f"{len(out)} link(s) in --site {site} lead out of it: {', '.join(out)}; "
            "replace each with a real file (nothing was deployed)"
        )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnd_toolkit.netlify.snapshot",
        description="Write a revision's netlify.toml and publish folder into DEST as plain files.",
    )
    parser.add_argument("revision", help="a commit id or branch name")
    parser.add_argument("dest", type=Path, help="a folder that does not exist yet (or is empty)")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the git repository (default: here)")
    args = parser.parse_args(argv)
    try:
        done = write(args.repo, args.revision, args.dest)
    except SnapshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(done.describe(args.dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
