"""cnd_toolkit.docker.images.push to a real registry (Debian's docker-registry, started here on loopback)."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cnd_toolkit.docker import images

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def small_image(engine: Any) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a.txt").write_text("pushed\n")
        (Path(tmp) / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /\n")
        images.build_image(engine, Path(tmp), ["ops-test-push:one"])
    yield "ops-test-push:one"
    engine.images.remove("ops-test-push:one", force=True)


def test_push_returns_the_digest_the_registry_serves(engine: Any, registry: str, small_image: str) -> None:
    lines: list[str] = []
    repository = f"{registry}/acme/pushed"
    progress: list[tuple[str, int, int]] = []
    reference = images.push(
        engine, small_image, repository, "rev1", on_line=lines.append, on_progress=lambda *a: progress.append(a)
    )
    assert reference.startswith(f"{repository}@sha256:")
    assert progress, "no byte counts reached the progress callback"
    assert all(what == "push rev1" and 0 <= done <= total for what, done, total in progress), progress[:5]
    digest = reference.split("@", 1)[1]
    manifest = httpx.get(
        f"http://{registry}/v2/acme/pushed/manifests/rev1",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    assert manifest.headers["Docker-Content-Digest"] == digest
    assert any("Pushed" in line or "exists" in line for line in lines), lines
    assert not any(line.startswith("Pushing") for line in lines)  # no byte-count flood
    again = images.push(engine, small_image, repository, "rev1", on_line=lines.append)
    assert again == reference
    engine.images.remove(f"{repository}:rev1")


def test_an_unreachable_registry_is_one_clear_error(engine: Any, small_image: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    repository = f"127.0.0.1:{closed}/acme/nowhere"
    with pytest.raises(images.PushFailed) as caught:
        images.push(engine, small_image, repository, "x", password="s3cret-pass")
    message = str(caught.value)
    assert message.startswith(f"docker push {repository}:x failed: ") and "\n" not in message
    assert "s3cret-pass" not in message
    engine.images.remove(f"{repository}:x")
