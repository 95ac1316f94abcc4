"""Shared by the tests: what to do when a real part is missing; reading and removing images."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnd_toolkit.testing import unavailable  # noqa: F401 (the one rule, shared with the toolkit's tests)


def as_a_terminal_starts_it() -> None:
    """In a child before exec: SIGINT and SIGHUP at their defaults, as from a terminal.

    A test run started under `nohup` or as `cmd &` passes them on ignored, and the tooling rightly
    keeps an ignored signal ignored; a test that sends one must not inherit that.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


PROJECT_LABEL = "dev.copier-netlify-docker.project"


@dataclass
class LayerScan:
    """What ``docker save`` of an image holds: every path in every layer, and where markers occur."""

    paths: set[str] = field(default_factory=set)
    hits: dict[str, list[str]] = field(default_factory=dict)
    layers: int = 0


def scan_layers(engine: Any, image: str, scratch: Path, markers: Iterable[str]) -> LayerScan:
    """Open ``docker save IMAGE`` and read every entry of every layer tar, base layers included.

    Records each path (without a leading ``./`` or ``/``) and, for regular files, which of
    ``markers`` their bytes contain, so a file is found by content even if renamed or linked.
    """
    wanted = [m.encode() for m in markers]
    scan = LayerScan()
    archive = scratch / f"{image.replace('/', '_').replace(':', '_')}.tar"
    with archive.open("wb") as out:
        for chunk in engine.images.get(image).save(named=False):
            out.write(chunk)
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer in manifest[0]["Layers"]:
            scan.layers += 1
            with tarfile.open(fileobj=outer.extractfile(layer), mode="r|*") as inner:
                for member in inner:
                    path = member.name.removeprefix("./").lstrip("/")
                    scan.paths.add(path)
                    if not member.isfile() or not wanted:
                        continue
                    data = inner.extractfile(member).read()  # type: ignore[union-attr]
                    for marker in wanted:
                        if marker in data:
                            scan.hits.setdefault(marker.decode(), []).append(path)
    archive.unlink()
    return scan


def project_images(engine: Any, slug: str, *, all_images: bool = True) -> list[Any]:
    """Images carrying the project's label (intermediate step images too with ``all_images``)."""
    images: list[Any] = engine.images.list(all=all_images, filters={"label": f"{PROJECT_LABEL}={slug}"})
    return images


def remove_project(engine: Any, slug: str) -> None:
    """Remove every container and image of the project ``slug``, whatever a test left (teardown)."""
    import docker.errors

    for container in engine.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={slug}"}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    for _ in range(5):
        images = engine.images.list(filters={"label": f"{PROJECT_LABEL}={slug}"}) + engine.images.list(name=slug)
        if not images:
            return
        for image in images:
            for reference in image.tags or [image.id]:
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    engine.images.remove(reference, force=True)


def proxy_image(engine: Any, base: str) -> str:
    """PROXY_IMAGE, caddy:2 or the Caddy image the generated tests build from Debian (TEST-ENVIRONMENT)."""
    import io

    import docker.errors

    for candidate in (os.environ.get("PROXY_IMAGE", ""), "caddy:2", "local/caddy:2"):
        try:
            if candidate and engine.images.get(candidate):
                return candidate
        except docker.errors.ImageNotFound:
            continue
    dockerfile = (
        f"FROM {base}\nRUN apt-get update && apt-get install -y --no-install-recommends caddy "
        "&& rm -rf /var/lib/apt/lists/*\n"
        'CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]\n'
    )
    engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag="local/caddy:2", rm=True)
    return "local/caddy:2"
