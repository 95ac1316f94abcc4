"""Is an image built from the source as it is now? A digest of the build inputs, kept in a label.

``inv build`` labels the image with the digest of what it sends to the engine (every file of the
build context, as ``.dockerignore`` filters it). ``inv run`` and
``inv dev`` compare that label with the digest of the working tree and rebuild when they differ.
Contents, not modification times or dates: a ``touch`` or a checkout of the same content does not
rebuild, and a change that keeps the file's time (an editor, ``git stash pop``) still does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from cnd_toolkit.project import build_context_files

SOURCE_LABEL = "dev.copier-netlify-docker.source-digest"
# The base image `inv build --base-image` was given ("": $BASE_IMAGE or the Dockerfile's), so a
# rebuild by `inv run` uses the same one.
BASE_IMAGE_LABEL = "dev.copier-netlify-docker.base-image"


def source_digest(root: Path) -> str:
    """``sha256:<hex>`` over the build context's paths, contents and exec bits."""
    total = hashlib.sha256()
    for path in build_context_files(root):
        relative = path.relative_to(root).as_posix()
        executable = "x" if path.stat().st_mode & 0o111 else "-"
        content = hashlib.sha256(path.read_bytes()).hexdigest()
        total.update(f"{relative}\0{executable}\0{content}\0".encode())
    return f"sha256:{total.hexdigest()}"


def stale_reason(image: str, labels: Mapping[str, str] | None, digest: str, base_image: str = "") -> str:
    """Why ``image`` (with ``labels``, None when it does not exist) needs a build, or ``""``:
    missing, built from other source than ``digest``, or from another base than ``base_image``
    (the BASE_IMAGE setting; empty: the Dockerfile's)."""
    if labels is None:
        return f"{image} does not exist yet"
    built_from = labels.get(SOURCE_LABEL)
    if not built_from:
        return f"{image} was built without a source digest, so it may be older than the source"
    if built_from != digest:
        return f"the source changed since {image} was built"
    built_on = labels.get(BASE_IMAGE_LABEL, "")
    if built_on != base_image:
        was = built_on or "the Dockerfile's base image"
        now = f"BASE_IMAGE is {base_image}" if base_image else "BASE_IMAGE is not set (the Dockerfile's)"
        return f"{image} was built from {was}, and {now}"
    return ""
