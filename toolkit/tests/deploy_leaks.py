"""Where a real `inv deploy` could leave a secret, read back for the deploy tests (issue 21, 12):
what it printed, ``docker inspect`` of every container, service, config, volume and network it
made (each inspected as it is made: the smoke container is gone by the end), the image it
pushed, the files it wrote (a listing from before compared with one from after, in the project,
its temporary folder and ~/.docker), the files in the shared proxy's volumes, and every file it
uploaded to Netlify."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors

from tests.secret_values import no_leaks

NAMESPACE = "dev.copier-netlify-docker."  # every label the tooling sets starts with it
# The tool environments in a project (nox's, uv's): the deploy writes nothing there, and they are large.
TOOL_DIRS = {".nox", ".venv", ".git"}


def _ours(labels: Mapping[str, str] | None, name: str, names: Iterable[str]) -> bool:
    return any(key.startswith(NAMESPACE) for key in labels or {}) or any(name.startswith(n) for n in names)


@dataclass
class EngineWatch:
    """Inspects every object the engine makes while it is open whose labels are the tooling's or
    whose name starts with one of ``names``. Stop it with :meth:`close`, which waits until the
    engine's event stream has passed a marker made after everything else (events come in order)."""

    engine: Any
    names: tuple[str, ...]
    inspected: dict[str, Any] = field(default_factory=dict)  # "kind name-or-id" -> attrs
    _marker: str = field(default_factory=lambda: f"deploy-leaks-marker-{uuid.uuid4().hex[:8]}")

    def __post_init__(self) -> None:
        self._seen_marker = threading.Event()
        self._stream = self.engine.events(
            decode=True,
            since=int(time.time()) - 1,
            filters={"type": ["container", "service", "config", "volume", "network"]},
        )
        self._thread = threading.Thread(target=self._watch, name="engine-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        getters = {
            "container": self.engine.containers.get,
            "service": self.engine.services.get,
            "config": self.engine.configs.get,
            "volume": self.engine.volumes.get,
            "network": self.engine.networks.get,
        }
        for event in self._stream:
            kind, actor = event.get("Type", ""), event.get("Actor") or {}
            ident = str(actor.get("ID", ""))
            if kind == "volume" and ident == self._marker:
                self._seen_marker.set()
                return
            if kind not in getters or event.get("Action") in {"destroy", "remove", "die", "kill", "stop"}:
                continue
            self.record(kind, getters[kind], ident)

    def record(self, kind: str, get: Any, ident: str) -> None:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            found = get(ident)
            attrs = found.attrs
            labels = attrs.get("Labels") or (attrs.get("Config") or {}).get("Labels") or {}
            spec = attrs.get("Spec") or {}
            labels = {**labels, **(spec.get("Labels") or {})}
            name = str(getattr(found, "name", "") or spec.get("Name", "") or ident).lstrip("/")
            if _ours(labels, name, self.names):
                self.inspected[f"{kind} {name}"] = attrs

    def close(self) -> None:
        """Wait for the stream to pass the marker; then inspect what is left of ours now, too."""
        self.engine.volumes.create(self._marker)
        try:
            assert self._seen_marker.wait(120), "the engine's event stream did not reach the marker"
        finally:
            self._stream.close()
            self.engine.volumes.get(self._marker).remove(force=True)
        for container in self.engine.containers.list(all=True):
            self.record("container", self.engine.containers.get, container.id)
        for volume in self.engine.volumes.list():
            self.record("volume", self.engine.volumes.get, volume.name)
        for network in self.engine.networks.list():
            self.record("network", self.engine.networks.get, network.id)
        if (self.engine.info().get("Swarm") or {}).get("ControlAvailable"):
            for service in self.engine.services.list():
                self.record("service", self.engine.services.get, service.id)
            for config in self.engine.configs.list():
                self.record("config", self.engine.configs.get, config.id)


def listing(roots: Iterable[Path]) -> dict[Path, tuple[int, int]]:
    """Each file under ``roots`` (tool environments aside) with its modification time and size."""
    found = {}
    for root in roots:
        if not root.is_dir():
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not (Path(folder) == root and d in TOOL_DIRS)]
            for name in files:
                path = Path(folder, name)
                with contextlib.suppress(OSError):
                    stat = path.stat()
                    found[path] = (stat.st_mtime_ns, stat.st_size)
    return found


def written(before: Mapping[Path, tuple[int, int]], after: Mapping[Path, tuple[int, int]]) -> list[Path]:
    """The files that are new or changed between two listings."""
    return sorted(path for path, stamp in after.items() if before.get(path) != stamp)


def archive_texts(container: Any, path: str) -> dict[str, str]:
    """Every file under ``path`` in ``container`` (its volumes too), as text."""
    stream, _ = container.get_archive(path)
    texts = {}
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        for member in archive.getmembers():
            if member.isfile():
                data = archive.extractfile(member)
                if data is not None:
                    texts[member.name] = data.read().decode("utf-8", "surrogateescape")
    return texts


def image_holds(engine: Any, image: str, secrets: Mapping[str, str]) -> list[str]:
    """The secrets whose bytes (as they are, or JSON-escaped) are anywhere in ``docker save`` of
    ``image``: every layer, the config, the history."""
    needles = {
        name: [value.encode(), json.dumps(value)[1:-1].encode()]
        for name, value in secrets.items()
        if name != "REGISTRY_USERNAME"
    }
    longest = max(len(n) for forms in needles.values() for n in forms)
    found: set[str] = set()
    tail = b""
    for chunk in engine.images.get(image).save(named=False):
        window = tail + chunk
        found |= {name for name, forms in needles.items() if any(form in window for form in forms)}
        tail = window[-longest:]
    return sorted(found)


def run_inv_deploy(
    project_root: Path, environ: Mapping[str, str], tmp: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """`inv deploy` as a person runs it, with ``environ`` (plus this interpreter's scripts on PATH)
    and a temporary folder of its own."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**environ, "TMPDIR": str(tmp), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"}
    return subprocess.run(
        [sys.executable, "-m", "invoke", "deploy", *args],
        cwd=project_root, env=env, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip


def find_leaks(
    secrets: Mapping[str, str],
    *,
    output: str,
    inspected: Mapping[str, Any],
    files: Iterable[Path],
    texts: Mapping[str, str],
) -> dict[str, dict[str, list[str]]]:
    """Where each secret can be read: ``"what" -> {secret: how}``, empty when nowhere."""
    places: dict[str, str] = {"the deploy's output": output}
    places |= {f"docker inspect of the {what}": json.dumps(attrs) for what, attrs in inspected.items()}
    for path in files:
        with contextlib.suppress(OSError):
            places[f"the file {path}"] = path.read_bytes().decode("utf-8", "surrogateescape")
    places |= texts
    return {where: found for where, text in places.items() if (found := no_leaks(text, dict(secrets)))}


@dataclass
class Deployed:
    """What a real `inv deploy` left where a secret could be: see :func:`deploy_and_read`."""

    output: str
    inspected: dict[str, Any]
    files: list[Path]
    texts: dict[str, str]


def deploy_and_read(
    engine: Any,
    root: Path,
    environ: Mapping[str, str],
    tmp: Path,
    *,
    names: tuple[str, ...],
    netlify: Any,
    proxy_container: Any,
) -> Deployed:
    """Run `inv deploy --allow-dirty` in ``root`` with ``environ`` (it must succeed), watching the
    engine for objects whose names start with ``names`` or carry the tooling's labels; then read
    the files it wrote, the shared proxy's volumes (``proxy_container()`` finds its container) and every
    file ``netlify`` (a LocalNetlify) received."""
    state = [root, tmp, Path.home() / ".docker"]
    before = listing(state)
    watch = EngineWatch(engine, names)
    try:
        result = run_inv_deploy(root, environ, tmp, "--allow-dirty")
    finally:
        watch.close()
    files = written(before, listing(state))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Deployed" in output and netlify.published() is not None, output[-4000:]
    proxy = proxy_container()
    assert proxy is not None, "the deploy left no proxy to read"
    texts = {
        f"the proxy's {path}": text
        for folder in ("/etc/caddy", "/data")
        for path, text in archive_texts(proxy, folder).items()
    }
    texts |= {
        f"Netlify's copy of the file {sha}": blob.decode("utf-8", "surrogateescape")
        for site in netlify.sites.values()
        for sha, blob in site.blobs.items()
    }
    return Deployed(output, dict(watch.inspected), files, texts)
