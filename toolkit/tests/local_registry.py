"""Debian's docker-registry (the CNCF distribution registry) on loopback, for pushes in tests and
the template's benchmark. The engine pushes to 127.0.0.0/8 registries without TLS."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

INSTALL = "apt-get install docker-registry"


class RegistryUnavailable(RuntimeError):
    """docker-registry is missing, or did not answer."""


@contextmanager
def serve(timeout: float = 60) -> Iterator[str]:
    """A fresh, empty registry on a free loopback port; yields its address (``127.0.0.1:PORT``)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RegistryUnavailable(f"docker-registry is not installed ({INSTALL})")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yml"
        storage = f"storage:\n  filesystem:\n    rootdirectory: {tmp}/data\n"
        config.write_text(f"version: 0.1\n{storage}http:\n  addr: 127.0.0.1:{port}\n")
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RegistryUnavailable(f"docker-registry did not answer within {timeout:.0f}s")
                time.sleep(0.1)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)
