"""Images: build (streamed, interruptible), tag, push, and remove what the project's builds left."""

from __future__ import annotations

import contextlib
import re
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from cnd_toolkit import logs, options, redact, source
from cnd_toolkit import project as proj
from cnd_toolkit.docker.containers import MANAGED_LABEL, managed_containers, remove
from cnd_toolkit.errors import BuildFailed, Interrupted, OpsError
from cnd_toolkit.logs import LineSink, Progress
from cnd_toolkit.wait import NotReady, TimedOut, poll

# Set by the Dockerfile on every image a build of the project makes (value: the project slug).
PROJECT_LABEL = "dev.copier-netlify-docker.project"
# ... and the checkout that built it (cnd_toolkit.project.checkout_id): clones of one project share the
# slug, and neither's `inv clean` or rebuild removes the other's images.
CHECKOUT_LABEL = "dev.copier-netlify-docker.checkout"
# On the containers of deployed releases (cnd_toolkit.release.rollout): `inv clean` leaves them alone.
RELEASE_LABEL = "dev.copier-netlify-docker.app"
PULL_HINT = (
    "The base image could not be pulled. Build from an image the engine has or can reach: "
    "`inv build --base-image IMAGE` or BASE_IMAGE=IMAGE (see the README: builds behind a TLS proxy, or offline)."
)


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    tags: list[str]
    seconds: float
    # Images earlier builds left, removed after this one (see remove_leftovers): short ids.
    replaced: list[str] = field(default_factory=list)


# The classic builder's log: a step's image id, the container a step runs in, a step taken from cache.
_STEP_IMAGE = re.compile(r"^ ---> ([0-9a-f]{12})\Z")
_STEP_CONTAINER = re.compile(r"^ ---> Running in ([0-9a-f]{12})\Z")


@dataclass
class _BuildTrace:
    """What a build made so far, read from its log, so an interrupted one can be undone."""

    created: list[str] = field(default_factory=list)  # step images this build committed (not cached)
    seen: set[str] = field(default_factory=set)  # every step image of this build, from cache or not
    container: str = ""  # the step container of the step under way
    cached: bool = False

    def read(self, line: str) -> None:
        if line.startswith("Step "):
            self.cached, self.container = False, ""
        elif line == " ---> Using cache":
            self.cached = True
        elif found := _STEP_CONTAINER.match(line):
            self.container = found[1]
        elif found := _STEP_IMAGE.match(line):
            self.seen.add(found[1])
            if not self.cached:
                self.created.append(found[1])


def build_image(
    client: docker.DockerClient,
    context: Path,
    tags: list[str],
    buildargs: Mapping[str, str] | None = None,
    *,
    nocache: bool = False,
    labels: Mapping[str, str] | None = None,
    on_line: LineSink | None = None,
    tail_lines: int = 40,
) -> BuildResult:
    """Build ``context`` and tag the image with every name in ``tags``, streaming the log to ``on_line``.

    On failure raises :class:`BuildFailed` with the tail of the build log, so the error is
    readable without scrolling back through the whole build. Interrupted (KeyboardInterrupt: a
    signal), it ends the build, removes the step container and the step images it made, and
    raises :class:`Interrupted`. After a build, what earlier builds left and nothing uses goes
    (see :func:`remove_leftovers`), so rebuilds do not pile up untagged images.
    """
    started = time.perf_counter()
    tail: deque[str] = deque(maxlen=tail_lines)
    trace = _BuildTrace()
    image_id = ""
    before = {name: tagged_id(client, name) for name in tags}
    stream: Iterator[dict[str, Any]] | None = None
    try:
        stream = client.api.build(
            path=str(context),
            tag=tags[0],
            buildargs=dict(buildargs or {}),
            labels=dict(labels or {}),
            nocache=nocache,
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in stream:
            if "stream" in chunk:
                # Cleaned: the classic builder colours a step's stderr with escape codes.
                for line in logs.clean_lines(chunk["stream"]):
                    if line.strip():
                        trace.read(line)
                        tail.append(line)
                        if on_line:
                            on_line(line)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk or "errorDetail" in chunk:
                message = logs.clean_line(chunk.get("error") or chunk["errorDetail"].get("message", "unknown error"))
                if tail and " FROM " in tail[-1]:
                    message = f"{message.strip()}\n{PULL_HINT}"
                raise BuildFailed(f"docker build failed: {message.strip()}", detail="\n".join(tail))
    except docker.errors.APIError as exc:
        raise BuildFailed(f"docker build failed: {exc.explanation or exc}", detail="\n".join(tail)) from None
    except KeyboardInterrupt:
        _end_stream(stream)
        raise Interrupted(_undo_build(client, trace, tags, before)) from None
    if not image_id:
        raise BuildFailed("docker build finished without producing an image", detail="\n".join(tail))
    for name in tags[1:]:
        repository, _, tag = name.rpartition(":")
        client.api.tag(image_id, repository, tag)
    replaced = remove_leftovers(client, image_id, set(before.values()) - {"", image_id}, trace.seen)
    return BuildResult(image_id=image_id, tags=list(tags), seconds=time.perf_counter() - started, replaced=replaced)


def _end_stream(stream: Iterator[dict[str, Any]] | None) -> None:
    """Close the build's HTTP response now (not when it is garbage): the engine then cancels the build."""
    frame = getattr(stream, "gi_frame", None)
    response = frame.f_locals.get("response") if frame is not None else None  # the SDK's _stream_helper
    with contextlib.suppress(Exception):
        if response is not None:
            response.close()
    with contextlib.suppress(Exception):
        if stream is not None and hasattr(stream, "close"):
            stream.close()


def _undo_build(
    client: docker.DockerClient, trace: _BuildTrace, tags: list[str], before: Mapping[str, str], wait: float = 15
) -> str:
    """Remove what an interrupted build left (its step container, the step images it made); say what is true."""
    if trace.container:
        # forcerm: the engine removes the step container once it has cancelled the step. Waited
        # for, so the images under it can go; removed here if the engine is slow about it.
        step = trace.container

        def gone() -> None:
            try:
                client.api.inspect_container(step)
            except docker.errors.APIError:  # not found (removed), or the engine cannot say: stop asking
                return
            raise NotReady("the step container is still there")

        try:
            poll(gone, timeout=wait, interval=0.2, max_interval=0.2)
        except TimedOut:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_container(step, force=True, v=True)
    removed = 0
    for image in reversed(trace.created):  # the newest first: each is the parent of the next
        try:
            client.api.remove_image(image, noprune=True)
            removed += 1
        except docker.errors.APIError:  # tagged meanwhile, or a parent still in use: leave it
            continue
    changed = [name for name in tags if tagged_id(client, name) != before.get(name, "")]
    outcome = f"{', '.join(changed)} now names the new image" if changed else "nothing was tagged"
    made = f"; removed the {removed} step image{'s' if removed != 1 else ''} it had made" if removed else ""
    return f"Build interrupted; {outcome}{made}"


def tagged_id(client: docker.DockerClient, name: str) -> str:
    """The id of the image ``name`` names, or ``""``."""
    try:
        return client.images.get(name).id or ""
    except docker.errors.NotFound:
        return ""


def remove_leftovers(client: docker.DockerClient, image_id: str, untagged: Iterable[str], used: set[str]) -> list[str]:
    """After a build of ``image_id``: remove what earlier builds of the project left, if unused.

    Candidates: ``untagged`` (the images the tags named before this build), and the project's
    dangling images (no tag, no child: the builder stage of an earlier build, a failed build's
    last step) that this build did not use (``used``: short ids of its step images, from cache or
    made). Kept: an image with a tag, one without this project's ``PROJECT_LABEL``, and one that a
    container (running or stopped) or another image is built on. Removing one also removes its
    untagged parents that nothing else shares. Returns the short ids removed.
    """
    try:
        built = client.images.get(image_id).labels or {}
    except docker.errors.NotFound:
        return []
    slug, checkout = built.get(PROJECT_LABEL, ""), built.get(CHECKOUT_LABEL, "")
    if not slug:
        return []
    selector: dict[str, str | list[str] | bool] = {"label": f"{PROJECT_LABEL}={slug}", "dangling": True}
    candidates = set(untagged) | {i.id or "" for i in client.images.list(filters=selector)}
    removed: list[str] = []
    for candidate in sorted(candidates - {"", image_id}):
        if _short(candidate) in used:
            continue
        try:
            found = client.images.get(candidate)
        except docker.errors.NotFound:
            continue
        labels = found.labels or {}
        if found.tags or labels.get(PROJECT_LABEL) != slug or labels.get(CHECKOUT_LABEL, "") != checkout:
            continue
        if client.api.containers(all=True, quiet=True, filters={"ancestor": candidate}):
            continue
        try:
            client.api.remove_image(candidate, noprune=False)
        except docker.errors.APIError:  # another image was built FROM it: it stays
            continue
        removed.append(_short(candidate))
    return removed


@dataclass
class Cleaned:
    """What :func:`clean_project` removed, and what it left in place with the reason."""

    containers: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def clean_project(
    client: docker.DockerClient, slug: str, on_line: LineSink | None = None, checkout: str | None = None
) -> Cleaned:
    """Remove every container and image this project's builds and runs left on the engine.

    Images: everything carrying ``PROJECT_LABEL=slug``, which the Dockerfile sets in both
    stages: tagged images (under any name, a registry path included), the previous image a
    rebuild left untagged, the builder stage's image, and the step images of a failed build.
    Images tagged ``<slug>:*`` from before the label existed go too. Removing one also removes
    its untagged parents, down to the base image, which is not the project's.
    Containers: those these tasks started, and stopped ones made from the project's images
    (exited runs, a failed build's step). A running container these tasks did not start is
    left alone, and so is its image; both are reported in ``kept``. With ``checkout``, only what
    this checkout built (its ``CHECKOUT_LABEL``), and what carries none (a `docker build .` here).
    """
    say = on_line or (lambda line: None)

    def ours(labels: dict[str, str] | None) -> bool:
        return checkout is None or (labels or {}).get(CHECKOUT_LABEL, "") in {"", checkout}

    done = Cleaned()
    selector: dict[str, str | list[str] | bool] = {"label": f"{PROJECT_LABEL}={slug}"}
    containers = {c.id: c for c in client.containers.list(all=True, filters=selector)}
    containers.update({c.id: c for c in managed_containers(client, slug)})
    for container in containers.values():
        if not ours(container.labels):
            continue
        if RELEASE_LABEL in container.labels:  # a deployed release: `inv deploy`'s, not a local run's
            continue
        if container.status == "running" and MANAGED_LABEL not in container.labels:
            done.kept.append(
                f"container {container.short_id} ({container.name}) is running and was not started by these tasks"
            )
            continue
        remove(container)
        done.containers.append(container.short_id)
        say(f"removed container {container.short_id}")
    refused: set[str] = set()
    # Rounds: removing a child image can leave its parent top-level (a derived image's base).
    for _ in range(10):
        images = {i.id or "": i for i in client.images.list(filters=selector)}
        images.update({i.id or "": i for i in client.images.list(name=slug)})
        pending = [(image_id, i) for image_id, i in images.items() if image_id not in refused and ours(i.labels)]
        if not pending:
            break
        for image_id, image in pending:
            for reference in image.tags or [image_id]:
                try:
                    client.api.remove_image(reference, noprune=False)
                except docker.errors.NotFound:
                    continue
                except docker.errors.APIError as exc:
                    refused.add(image_id)
                    reason = " ".join(str(exc.explanation or exc).split())
                    done.kept.append(f"image {reference if image.tags else _short(image_id)}: {reason}")
                    break
                name = reference if image.tags else f"{_short(image_id)} (untagged)"
                done.images.append(name)
                say(f"removed image {name}")
    return done


def image_labels(client: docker.DockerClient, image: str) -> dict[str, str] | None:
    """The labels of ``image``, or None when the engine does not have it."""
    try:
        found = client.images.get(image)
    except docker.errors.ImageNotFound:
        return None
    return dict(found.labels or {})


def project_tags(project: proj.Project, tag: str = "") -> list[str]:
    """The names a build of the project gets: ``<slug>:<tag or version>`` and ``<slug>:latest``."""
    return [f"{project.local_image}:{tag or options.version_tag(project.version)}", f"{project.local_image}:latest"]


# The Python version an official-style image names in its tag: python:3.12-slim, mirror/python:3.11.
_PYTHON_TAG = re.compile(r"(?:^|/)python:(3[.][0-9]+)")
# The python image by a tag that names no minor version (latest, 3, 3-slim, slim, bookworm): it
# moves to each new Python as it is released.
_PYTHON_FLOATING = re.compile(
    r"(?:^|/)python(?::(?P<tag>latest|3|3-[a-z0-9.-]+|(?:slim|alpine[0-9.]*|bookworm|bullseye|trixie|buster)"
    r"(?:-[a-z0-9.-]+)?))?(?:@sha256:[0-9a-f]{64})?\Z"
)


def python_mismatch(base_image: str, python: str = "", client: docker.DockerClient | None = None) -> str:
    """One line when ``base_image`` is another Python than the project's (Copier's check of the
    base_image answer, applied to BASE_IMAGE and --base-image, as a warning: the image may still
    run, as requirements.lock is universal, but it is not what the project was made for), else
    ``""``. By its tag; else, when the engine has the image, by the ``PYTHON_VERSION`` the
    official images set; else a python image whose tag names no version is named as one that moves.
    ``python``: the project's (pyproject.toml's ``[tool.cnd] python``) unless given."""
    python = python or proj.load().python_version
    found = _PYTHON_TAG.search(base_image)
    fix = (
        f"use a Python {python} image (python:{python}-slim), or re-render the project with "
        "`copier update --data python_version=...`"
    )
    if found:
        if found.group(1) == python:
            return ""
        return (
            f"the base image {base_image} is Python {found.group(1)}, but this project is Python {python} (its "
            f"requirements.lock and tooling were made for it): use a Python {python} image, or re-render the "
            f"project with `copier update --data python_version={found.group(1)}`"
        )
    declared = _declared_python(client, base_image) if client is not None and base_image else ""
    if declared:
        if declared == python:
            return ""
        return (
            f"the base image {base_image} is Python {declared} (its PYTHON_VERSION), but this project is Python "
            f"{python} (its requirements.lock and tooling were made for it): {fix}"
        )
    floating = _PYTHON_FLOATING.search(base_image)
    if floating:
        tag = floating.group("tag") or "latest"
        return (
            f"the base image {base_image} does not say which Python it is: its tag ({tag}) moves to each new "
            f"Python, and this project is Python {python}; use python:{python}-slim (or another tag naming {python})"
        )
    return ""


def _declared_python(client: docker.DockerClient, image: str) -> str:
    """The major.minor of the ``PYTHON_VERSION`` an image's environment sets ("" if the engine does not
    have the image, or it sets none)."""
    try:
        environment = client.images.get(image).attrs.get("Config", {}).get("Env") or []
    except (docker.errors.DockerException, OSError):
        return ""
    for entry in environment:
        name, _, value = str(entry).partition("=")
        found = re.match(r"(3[.][0-9]+)", value.strip()) if name == "PYTHON_VERSION" else None
        if found:
            return found.group(1)
    return ""


def build_project(
    client: docker.DockerClient,
    project: proj.Project,
    *,
    tag: str = "",
    base_image: str = "",
    no_cache: bool = False,
    revision: str | None = None,
    on_line: LineSink | None = None,
    say: LineSink | None = None,
) -> BuildResult:
    """Build the project's image as ``inv build`` does: tags, build arguments, and the labels that
    tell later tasks which source and base image it was built from."""
    problem = python_mismatch(base_image, client=client)
    if problem and say:  # a warning, as the image may still work: the lock is universal
        say(f"warning: {problem}")
    tags = project_tags(project, tag)
    args = proj.build_args(project, base_image, revision=revision)
    if say:
        say(f"Building {', '.join(tags)} (revision {args['REVISION'][:12]})")
    # What `inv run` compares with the working tree to know whether the image is current.
    labels = {source.SOURCE_LABEL: source.source_digest(project.root), source.BASE_IMAGE_LABEL: base_image}
    return build_image(client, project.root, tags, args, nocache=no_cache, labels=labels, on_line=on_line)


def build_if_stale(
    client: docker.DockerClient,
    project: proj.Project,
    image: str,
    *,
    base_image: str = "",
    on_line: LineSink | None = None,
    say: LineSink | None = None,
) -> BuildResult | None:
    """Build ``image`` when it is missing, was built from other source than the working tree's,
    or from another base image than ``base_image`` (the BASE_IMAGE setting; empty: the
    Dockerfile's). Returns the build, or None when the image was current."""
    labels = image_labels(client, image)
    reason = source.stale_reason(image, labels, source.source_digest(project.root), base_image)
    if not reason:
        return None
    if say:
        say(f"{reason}: building it first (--no-build skips this)")
    return build_project(client, project, base_image=base_image, on_line=on_line, say=say)


class PushFailed(OpsError):
    """``docker push`` failed; the message says why (auth, unreachable registry, refused)."""


def registry_message(said: object, password: str) -> str:
    """What an engine or registry said (an error's text, or the error itself), as one clean line
    without the password in any form: an engine or registry may echo the credentials it was sent
    (the base64 ``X-Registry-Auth`` header, the login's JSON body). Scrubbed before the line is
    cleaned and shortened, so neither can leave a part of it."""
    if isinstance(said, docker.errors.APIError):
        said = said.explanation or said
    secrets = {"REGISTRY_PASSWORD": password} if password else {}
    text = redact.scrub(str(said), secrets)
    return redact.scrub(logs.clean_line(text), secrets)


def push(
    client: docker.DockerClient,
    image: str,
    repository: str,
    tag: str,
    *,
    username: str = "",
    password: str = "",
    on_line: LineSink | None = None,
    on_progress: Progress | None = None,
) -> str:
    """Push ``image`` as ``repository:tag``; return the pushed digest reference ``repository@sha256:...``.

    Progress goes to ``on_line`` a line per layer and state (not every byte count), and to
    ``on_progress`` as bytes sent of the layers being uploaded. The password is passed to the
    engine only, never printed.
    """
    client.api.tag(image, repository, tag)
    auth = {"username": username, "password": password} if username or password else None
    digest = ""
    seen: set[tuple[str, str]] = set()
    layers: dict[str, tuple[int, int]] = {}  # bytes sent and size of each layer being uploaded
    try:
        for chunk in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth):
            if "error" in chunk or "errorDetail" in chunk:
                said = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message", "")
                message = registry_message(said, password)
                hint = ""
                if "denied" in message or "unauthorized" in message or "authentication required" in message:
                    hint = "; check REGISTRY_USERNAME and REGISTRY_PASSWORD (a token that may push to IMAGE)"
                elif "connection refused" in message or "no such host" in message or "timeout" in message:
                    hint = "; check IMAGE's registry host, and that it is reachable from the Docker host"
                raise PushFailed(f"docker push {repository}:{tag} failed: {message}{hint}")
            status, layer = str(chunk.get("status", "")), str(chunk.get("id", ""))
            detail = chunk.get("progressDetail") or {}
            if on_progress and status == "Pushing" and detail.get("total"):
                total = int(detail["total"])  # the engine's count can pass a small layer's size: capped
                layers[layer] = (min(int(detail.get("current") or 0), total), total)
                on_progress(f"push {tag}", sum(c for c, _ in layers.values()), sum(t for _, t in layers.values()))
            if status and (layer, status) not in seen and not status.startswith("Pushing"):
                seen.add((layer, status))
                if on_line:  # what the registry says, which may be anything
                    on_line(registry_message(f"{layer}: {status}" if layer else status, password))
            aux = chunk.get("aux") or {}
            if aux.get("Digest"):
                digest = str(aux["Digest"])
    except docker.errors.APIError as exc:  # the engine refused the push itself (its answer may echo the auth)
        raise PushFailed(f"docker push {repository}:{tag} failed: {registry_message(exc, password)}") from None
    if not digest:
        raise PushFailed(f"docker push {repository}:{tag} finished without a digest")
    return f"{repository}@{digest}"
