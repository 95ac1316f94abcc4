"""Build an offline Python base image from Debian packages.

Where no registry can be reached (air-gapped networks, CI behind a TLS-intercepting proxy),
``docker pull python:3.12-slim`` fails. This builds an equivalent base image from the Debian
mirror the machine already uses: ``debootstrap`` a minimal root file system with Python, copy
the host's CA bundle into it (so pip inside builds trusts the same proxy the host trusts), and
``docker import`` it. Generated projects use it through ``BASE_IMAGE``.

Usage: ``python -m tools.base_image [--suite bookworm] [--tag local/python:3.11-bookworm]``
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = "python3,python3-venv,python3-pip,python-is-python3,ca-certificates"


@dataclass(frozen=True)
class Suite:
    name: str
    python: str

    @property
    def tag(self) -> str:
        return f"local/python:{self.python}-{self.name}"


# Debian suites and the Python each ships; the tag says both, like the official images do.
SUITES = {"bookworm": Suite("bookworm", "3.11"), "trixie": Suite("trixie", "3.13")}


class BaseImageError(RuntimeError):
    """A step of the base-image build failed; the message says which and what to do."""


def apt_mirror(sources_dir: Path = Path("/etc/apt/sources.list.d")) -> str:
    """The first Debian mirror this machine's apt is set up to use."""
    candidates = sorted(sources_dir.glob("*.sources")) if sources_dir.is_dir() else []
    for path in candidates:
        for line in path.read_text().splitlines():
            match = re.match(r"^URIs:\s*(\S+)", line)
            if match and "security" not in match.group(1):
                return match.group(1)
    legacy = sources_dir.parent / "sources.list"
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1] if not parts[1].startswith("[") else parts[2]
    return DEFAULT_MIRROR


def image_exists(tag: str) -> bool:
    import docker

    client = docker.from_env()
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def build(suite: Suite, tag: str | None = None, mirror: str | None = None, force: bool = False) -> str:
    """Build (or reuse) the base image for ``suite`` and return its tag."""
    import docker

    tag = tag or suite.tag
    if not force and image_exists(tag):
        print(f"{tag}: already built (use --force to rebuild)")
        return tag
    if shutil.which("debootstrap") is None:
        raise BaseImageError("debootstrap is not installed; run: apt-get install -y debootstrap")
    if os.geteuid() != 0:
        raise BaseImageError("debootstrap needs root; run this as root (or in CI)")
    mirror = mirror or apt_mirror()
    with tempfile.TemporaryDirectory(prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        print(f"{tag}: debootstrap {suite.name} from {mirror} ...", flush=True)
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", suite.name, str(rootfs), mirror],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            raise BaseImageError(f"debootstrap {suite.name} failed:\n{tail}")
        _slim(rootfs)
        if HOST_CA_BUNDLE.is_file():
            # The host bundle is Debian's CAs plus any proxy CA the machine trusts; using it as
            # the image's bundle is what makes pip work behind a TLS-intercepting proxy.
            shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
        data = _tar(rootfs)
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    changes = [
        "ENV LANG=C.UTF-8",
        f"ENV SSL_CERT_FILE={bundle}",
        f"ENV PIP_CERT={bundle}",
        f"ENV REQUESTS_CA_BUNDLE={bundle}",
        "ENV PYTHONDONTWRITEBYTECODE=1",
        'CMD ["python3"]',
        f"LABEL org.opencontainers.image.title=python org.opencontainers.image.version={suite.python}"
        f" org.opencontainers.image.description=Python-{suite.python}-from-Debian-{suite.name}",
    ]
    client = docker.from_env()
    repo, _, version = tag.partition(":")
    client.api.import_image_from_data(data, repository=repo, tag=version or "latest", changes=changes)
    image = client.images.get(tag)
    print(f"{tag}: built, {image.attrs['Size'] / 1e6:.0f} MB")
    return tag


def _slim(rootfs: Path) -> None:
    """Drop what a base image does not need: package caches, apt lists, docs, man pages."""
    for rel in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info"):
        target = rootfs / rel
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


def _tar(rootfs: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for child in sorted(rootfs.iterdir()):
            tar.add(child, arcname=child.name)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "suites", nargs="*", default=["bookworm"], choices=sorted(SUITES), help="Debian suites to build"
    )
    parser.add_argument("--mirror", help="Debian mirror (default: the one apt uses here)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    args = parser.parse_args(argv)
    try:
        for name in args.suites:
            build(SUITES[name], mirror=args.mirror, force=args.force)
    except BaseImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # docker.errors.DockerException and friends
        if type(exc).__module__.startswith("docker"):
            print(f"error: Docker engine: {exc}\nStart one (dockerd) or set DOCKER_HOST.", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
