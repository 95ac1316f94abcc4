"""Facts about the project the tooling works on: names, ports, version, git revision.

The project is the folder of the ``tasks.py`` that loads the tasks (:func:`use`); run otherwise
(``python -m cnd_toolkit...``), ``$CND_PROJECT_ROOT``, else the nearest folder at or above the
working directory whose ``pyproject.toml`` has a ``[tool.cnd]`` table. That table holds what the
tooling cannot read elsewhere, from your Copier answers: ``image`` (the registry path, IMAGE's
default), ``python`` (the Python of the image: a BASE_IMAGE of another Python is refused) and
``port`` (the port it listens on).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnd_toolkit.errors import OpsError


def _has_table(pyproject: Path) -> bool:
    """Whether ``pyproject`` names a ``[tool.cnd]`` table (read as text: a file broken since is still
    the project's, and its error is reported by :func:`load`)."""
    try:
        return "[tool.cnd]" in pyproject.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a name too long, a link loop: the error comes when it is read
        return path.absolute()


def find_root(start: Path | None = None) -> Path:
    """The project's folder: ``$CND_PROJECT_ROOT``, else the nearest folder at or above ``start`` (the
    working directory) whose pyproject.toml has a ``[tool.cnd]`` table, else ``start`` itself."""
    named = os.environ.get("CND_PROJECT_ROOT", "").strip()
    if named:
        return _resolved(Path(named))
    here = _resolved(start or Path.cwd())
    for folder in (here, *here.parents):
        if _has_table(folder / "pyproject.toml"):
            return folder
    return here


ROOT = find_root()


def use(root: Path) -> None:
    """Work on the project in ``root`` from now on (the folder of the ``tasks.py`` that loads the tasks)."""
    global ROOT
    ROOT = root


def _tool_table(root: Path) -> dict[str, Any]:
    path = root / "pyproject.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OpsError(
            f"{path} cannot be read ({exc.strerror or exc}): run the tasks in a project made by copier-netlify-docker"
        ) from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise OpsError(f"{path} is not valid TOML: {exc}") from None
    table = data.get("tool", {}).get("cnd")
    if not isinstance(table, dict):
        raise OpsError(
            f"{path} has no [tool.cnd] table: this is not a project made by copier-netlify-docker, or the table "
            "was removed. Put it back, with your Copier answers (.copier-answers.yml: image, python_version, "
            f"port): [tool.cnd] image = {_EXAMPLE['image']}, python = {_EXAMPLE['python']}, port = {_EXAMPLE['port']}"
        )
    return {"pyproject": data, **table}


@dataclass(frozen=True)
class Project:
    root: Path
    slug: str
    version: str
    registry_image: str  # the IMAGE setting's default (your answer); local builds use local_image
    container_port: int
    graceful_timeout: int
    python_version: str = ""  # the image's Python (your python_version answer)

    @property
    def local_image(self) -> str:
        """The repository name local builds are tagged with (``<slug>:<tag>``)."""
        return self.slug


def load(root: Path | None = None) -> Project:
    root = root or ROOT
    table = _tool_table(root)
    pyproject = table["pyproject"]
    path = root / "pyproject.toml"
    unknown = sorted(set(table) - {"pyproject", *_EXAMPLE})
    if unknown:
        raise OpsError(f"{path}: [tool.cnd] has no setting {unknown[0]!r}: it takes image, python and port")
    for key, (kind, shape) in _SHAPES.items():
        value = table.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or not shape(value):
            raise OpsError(f"{path}: [tool.cnd] {key} must be {_WHAT[key]}, for example {_EXAMPLE[key]}")
    try:
        slug, version = pyproject["project"]["name"], pyproject["project"]["version"]
    except (KeyError, TypeError):
        raise OpsError(f"{path}: [project] needs a name and a version") from None
    return Project(
        root=root,
        slug=str(slug),
        version=str(version),
        registry_image=table["image"],
        container_port=table["port"],
        # gunicorn.conf.py's default; what a container really gets is read from it (cnd_toolkit.docker).
        graceful_timeout=20,
        python_version=table["python"],
    )


_EXAMPLE = {"image": '"ghcr.io/acme/orders"', "python": '"3.12"', "port": "8000"}
_IMAGE = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+")
_SHAPES: dict[str, tuple[type, Any]] = {
    "image": (str, lambda v: bool(_IMAGE.fullmatch(v))),  # as Copier's image question takes it
    "python": (str, lambda v: bool(re.fullmatch(r"3\.[0-9]{1,2}", v))),
    "port": (int, lambda v: 1024 <= v <= 65535 and v != 9101),  # as Copier's port question takes it
}
_WHAT = {
    "image": "a registry path without a tag, in lowercase",
    "python": "a Python version such as 3.12",
    "port": "a whole number from 1024 to 65535, not 9101 (the app's metrics listener)",
}


def leftover_ops(root: Path | None = None) -> list[str]:
    """The Python files left in ``ops/``, where projects rendered before the tooling was this package
    had it: ``copier update`` removes the template's files there and keeps the ones a team added.
    (Other files there, a runbook say, are the team's business.)"""
    folder = (root or ROOT) / "ops"
    try:
        if not folder.is_dir() or folder.is_symlink():
            return []
        found = [path for path in folder.rglob("*.py") if path.is_file() and "__pycache__" not in path.parts]
    except (OSError, RuntimeError):
        return []
    return sorted(str(path.relative_to(folder.parent)) for path in found)


def git_revision(root: Path | None = None) -> str:
    """The commit checked out in ``root`` (``-dirty`` if it has changes), or ``unknown``."""
    root = root or ROOT
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def untracked_files(root: Path | None = None) -> list[str]:
    """Files in ``root`` that git neither tracks nor ignores (they would ship, but no commit has them)."""
    root = root or ROOT
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--others", "--exclude-standard", "-z"],
            cwd=root,
            capture_output=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [name for name in listed.decode("utf-8", "replace").split("\0") if name]


def git_ignored(root: Path, name: str) -> bool:
    """Whether git ignores the file ``name`` in ``root`` (outside a repository: as if it did)."""
    try:
        done = subprocess.run(["git", "check-ignore", "-q", "--", name], cwd=root, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return True
    if done.returncode not in (0, 1):  # not a repository: nothing can be committed
        return True
    return done.returncode == 0 and not tracked_files(root, [name])


def tracked_files(root: Path, names: list[str]) -> list[str]:
    """Those of ``names`` (paths relative to ``root``) that git tracks; none outside a repository."""
    if not names:
        return []
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", *names], cwd=root, capture_output=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [name for name in listed.decode("utf-8", "replace").split("\0") if name]


def source_date(root: Path | None = None) -> dt.datetime:
    """When the source of the image last changed: the value of the ``created`` label.

    A date derived from the source, not the clock, so that a rebuild with no change hits the
    cache in every step and gives the same image id (the idea of ``SOURCE_DATE_EPOCH``, which
    wins when set). With a clean git tree it is the commit time of HEAD. With uncommitted
    changes to tracked files it is the newer of that and the newest modification time among
    the files in the build context; without git, that modification time alone. It moves when
    you edit those files, and stays put when you rebuild without editing.
    """
    root = root or ROOT
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            return dt.datetime.fromtimestamp(int(epoch), dt.UTC)
        except (ValueError, OverflowError, OSError):
            raise OpsError(f"SOURCE_DATE_EPOCH={epoch!r} is not a Unix time in seconds; fix it or unset it") from None
    revision = git_revision(root)
    committed = 0
    if revision != "unknown":
        with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
            committed = int(
                subprocess.run(
                    ["git", "log", "-1", "--format=%ct", "HEAD"],
                    cwd=root,
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=10,
                ).stdout.strip()
            )
    if committed and not revision.endswith("-dirty"):
        return dt.datetime.fromtimestamp(committed, dt.UTC)
    edited = max((path.stat().st_mtime for path in build_context_files(root)), default=0.0)
    return dt.datetime.fromtimestamp(max(committed, int(edited)), dt.UTC)


def build_context_files(root: Path | None = None) -> list[Path]:
    """The files a build sends to the engine: ``root`` filtered by its ``.dockerignore``.

    The Docker SDK's own matcher, the one ``inv build`` sends the context with.
    """
    root = root or ROOT
    from docker.utils.build import exclude_paths

    ignore = root / ".dockerignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    patterns = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    included: set[str] = exclude_paths(str(root), patterns)
    return sorted(path for path in (root / name for name in included) if path.is_file() and not path.is_symlink())


def checkout_id(root: Path) -> str:
    """A short digest of this checkout's path: the ``checkout`` label of the images it builds."""
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]


def source_url(image: str) -> str:
    """The repository URL for the OCI ``source`` label, where the registry path implies one."""
    registry, _, path = image.partition("/")
    return f"https://github.com/{path}" if registry == "ghcr.io" else ""


def build_args(project: Project, base_image: str = "", revision: str | None = None, image: str = "") -> dict[str, str]:
    """The Dockerfile's build arguments: base image, version and OCI label metadata.

    ``image``: the registry path (the IMAGE setting) the ``source`` label derives from.
    """
    args = {
        "CHECKOUT": checkout_id(project.root),
        "VERSION": project.version,
        "REVISION": revision if revision is not None else git_revision(project.root),
        "CREATED": source_date(project.root).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "SOURCE": source_url(image or project.registry_image),
    }
    base = base_image or os.environ.get("BASE_IMAGE", "")
    if base:
        args["BASE_IMAGE"] = base
    return args
