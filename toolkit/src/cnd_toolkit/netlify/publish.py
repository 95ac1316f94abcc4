"""The Netlify half of a deploy: digests of the publish directory, a draft, uploads, ready, publish.

What is deployed is what the one Netlify config model (:mod:`cnd_toolkit.netlify.config`) says: its
publish directory, with ``_redirects`` as Netlify's build would write it for this deploy's
``BACKEND_URL`` (:func:`cnd_toolkit.netlify.redirects.render`), and a ``netlify.toml`` at the deploy's
root holding the served part of the project's netlify.toml (:func:`served_config`). Both are
rendered in memory: the working tree is never changed by a deploy.

Why the ``netlify.toml``: an API deploy has no repository, so Netlify applies netlify.toml's
rules to it only if the deploy carries the file. netlify-cli's ``netlify deploy`` uploads its
resolved config the same way (``hashConfig``); without it every deploy would ship without the
security headers and ``[[redirects]]`` that ``inv dev`` shows. Only what Netlify applies at its
CDN goes in, never the build settings (the uploaded file is public on the deploy).

Only the files Netlify lists as required (by SHA1) are uploaded, so an unchanged site uploads
nothing and a one-file change uploads one file. Uploads run a few at a time, each retried by the
client on 429 and 5xx. A draft is only published by :func:`publish`, which the pipeline calls
after the draft's smoke test passed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from cnd_toolkit.errors import ConfigError
from cnd_toolkit.netlify import config, redirects
from cnd_toolkit.netlify.api import Deploy, NetlifyClient, NetlifyError
from cnd_toolkit.netlify.check import check_toml_for_netlify, deployed_name, publish_tree
from cnd_toolkit.wait import NotReady, TimedOut, poll

# Netlify's own deploy filter (and netlify-cli's): dotfiles are not deployed, except .well-known;
# nor are macOS archive folders (cnd_toolkit.netlify.check.deployed_name). Links out of the publish
# directory and names Netlify cannot serve (#, ?, backslashes, control characters) stop a deploy
# (cnd_toolkit.netlify.check.publish_tree).
UPLOAD_PARALLELISM = 5
READY_TIMEOUT = 600.0
# Seconds the uploads of one deploy may take in all: each call has its own deadline, and the phase
# one too, so a server that answers every upload slowly cannot hold a deploy (and its lock) for
# hours. A floor, and a second per this many bytes (a slow uplink's pace, with room).
UPLOAD_PHASE_SECONDS = 300.0
UPLOAD_PHASE_BYTES_PER_SECOND = 32 * 1024
# States in which the files are in place and Netlify is finishing the deploy.
PENDING_STATES = frozenset(
    {"new", "enqueued", "building", "uploading", "uploaded", "preparing", "prepared", "processing"}
    | {"processed", "retrying"}
)


# The deploy's copy of netlify.toml, at its root (where netlify-cli puts its resolved config).
CONFIG_FILE = "netlify.toml"
# What Netlify applies at its CDN from netlify.toml: redirects (and rewrites and proxies), headers,
# and the Image CDN's settings. Everything else is for the build (command, environment, plugins,
# publish directory, functions) or for `netlify dev`, and stays out of the deploy: it would change
# nothing that is served, and [build.environment] is no business of a public file.
SERVED_KEYS = ("redirects", "headers", "images")
CONFIG_HEADER = (
    "# The served part of this project's netlify.toml, uploaded with the deploy (as netlify-cli uploads its\n"
    "# resolved config): Netlify applies a netlify.toml to an API deploy only when the deploy carries one.\n"
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SiteFiles:
    """The deploy's files: path (no leading slash) -> bytes and SHA1."""

    bodies: Mapping[str, bytes]
    digests: Mapping[str, str]

    @property
    def size(self) -> int:
        return sum(len(body) for body in self.bodies.values())


@dataclass(frozen=True)
class Published:
    """What :func:`deploy_draft` did: the deploy, how many files it uploaded, and how long it took."""

    deploy: Deploy
    files: int
    uploaded: int
    uploaded_bytes: int
    seconds: float


def deployable(relative: str) -> bool:
    """Whether Netlify deploys the file at ``relative`` (a posix path inside the publish directory)."""
    return all(deployed_name(part) for part in relative.split("/"))


def site_files(root: Path, backend_url: str) -> SiteFiles:
    """The publish directory of the project at ``root``, as Netlify would receive it for ``backend_url``.

    ``backend_url`` is an https origin, as Netlify's build step requires, or an http one on
    this machine's loopback (a local stack, the tests).

    Raises :class:`ConfigError` for an error in the configuration (a rule that cannot be used, a
    netlify.toml Netlify's TOML parser cannot read, rules in a ``[context.*]`` table), a publish
    directory that is missing or holds a netlify.toml, a link that leads out of it (every one
    named), or file names Netlify cannot serve (every one named). A link to a file inside it is
    deployed as that file.
    """
    site = config.load(root)
    # A netlify.toml Netlify's own TOML parser rejects is lost whole on Netlify, rules and all:
    # its served part, readable on its own, would ship rules Netlify never applies to the project.
    errors = site.errors + [p for p in check_toml_for_netlify(site) if p.severity == "error"]
    if errors:
        raise ConfigError(f"{errors[0]} (run `inv check`)")
    publish = site.publish
    if not publish.is_dir():
        raise ConfigError(f"publish directory {publish.name}/ does not exist; create it or fix netlify.toml [build]")
    tree = publish_tree(publish)
    refused = []
    if tree.links:
        listed = ", ".join(f"{publish.name}/{path!r} ({why})" for path, why in tree.links)
        refused.append(
            f"{len(tree.links)} link(s) in {publish.name}/ would publish what they point at: {listed}; "
            "replace each link with a real file, or remove it"
        )
    if tree.names:
        listed = ", ".join(f"{publish.name}/{path!r} ({what})" for path, what in tree.names)
        refused.append(
            f"Netlify cannot serve {len(tree.names)} file name(s) in {publish.name}/: {listed}; "
            "rename them without #, ?, backslashes or control characters"
        )
    if CONFIG_FILE in tree.files:
        refused.append(
            f"{publish.name}/{CONFIG_FILE} would take the place of the {CONFIG_FILE} a deploy uploads (netlify.toml's "
            f"redirects and headers, at the deploy's root); rename or remove {publish.name}/{CONFIG_FILE}"
        )
    if refused:
        raise ConfigError("; ".join(refused) + " (nothing was deployed)")
    bodies = {relative: path.read_bytes() for relative, path in tree.files.items()}
    served = served_config(site)
    if served is not None:
        bodies[CONFIG_FILE] = served
    try:
        existing = bodies.get("_redirects", b"").decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{publish.name}/_redirects is not UTF-8; save it as UTF-8") from None
    try:
        url = redirects.check_backend_url(backend_url, allow_local=True)
        bodies["_redirects"] = redirects.render(existing, url).encode("utf-8")
    except redirects.BackendUrlError as exc:
        raise ConfigError(str(exc)) from None
    digests = {name: hashlib.sha1(body).hexdigest() for name, body in bodies.items()}  # SHA1: Netlify's choice
    return SiteFiles(bodies, digests)


def served_config(site: config.NetlifyConfig) -> bytes | None:
    """The part of ``site``'s netlify.toml that Netlify applies at its CDN, as a netlify.toml
    (None when there is none): ``[[redirects]]``, ``[[headers]]`` and ``[images]`` exactly as the
    project's file has them, rules and keys in its order (Netlify keeps the first matching
    redirect), written the same way each time, so an unchanged served part has the same SHA1
    and a change to the build settings changes nothing a deploy uploads.

    Raises :class:`ConfigError` for redirects or headers set in a ``[context.*]`` table: neither
    this deploy nor the local edge resolves them per deploy context, so they would be served
    nowhere the way they read; netlify.toml's rules belong at its top level.
    """
    contexts = site.data.get("context")
    for name, table in (contexts if isinstance(contexts, dict) else {}).items():
        for key in SERVED_KEYS:
            if isinstance(table, dict) and key in table:
                line = site.line_of("context", name, key, 0)
                raise ConfigError(
                    f"netlify.toml:{line}: [context.{name}] sets {key}; a deploy (and `inv dev`) applies "
                    f"netlify.toml's {key} from its top level only, the same in every context: move them there "
                    "or remove them"
                )
    served: dict[str, Any] = {key: site.data[key] for key in SERVED_KEYS if key in site.data}
    if not served:
        return None
    return (CONFIG_HEADER + tomli_w.dumps(served)).encode("utf-8")


def deploy_draft(
    client: NetlifyClient,
    site_id: str,
    files: SiteFiles,
    *,
    title: str = "",
    branch: str = "",
    ready_timeout: float = READY_TIMEOUT,
    poll_interval: float = 1.0,
    on_progress: Progress | None = None,
    on_count: Callable[[str, int, int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    upload_phase_seconds: float | None = None,
) -> Published:
    """Create a draft deploy of ``files``, upload what Netlify asks for, and wait until it is ready.

    Nothing is published: the live site is unchanged whatever happens here. With ``branch``, a
    branch deploy instead of a draft (what a split test divides traffic to; served on its own at
    ``<branch>--<site>``). Raises a :class:`NetlifyError` (the deploy's ``error_message`` when
    Netlify failed it).
    """
    say = on_progress or (lambda line: None)
    started = time.perf_counter()
    deploy = client.create_deploy(site_id, files.digests, draft=not branch, title=title, branch=branch)
    if files.digests and not deploy.required and deploy.state in {"new", "enqueued", "preparing"}:
        # An async deploy (over 100 files) lists what it needs once Netlify has looked at the digests.
        listed = {"prepared", "uploading", "uploaded", "ready"}
        deploy = _wait(client, site_id, deploy.id, ready_timeout, poll_interval, sleep, until=listed)
    wanted = set(deploy.required)
    unknown = wanted - set(files.digests.values())
    if unknown:
        raise NetlifyError(f"Netlify asked for {len(unknown)} file(s) this deploy does not have (deploy {deploy.id})")
    # One path per SHA1: Netlify stores files by content, and a deploy stops taking uploads once
    # every required SHA1 has arrived, so a second copy (an empty file, a repeated image) is refused.
    first_path: dict[str, str] = {}
    for path, sha in files.digests.items():
        if sha in wanted:
            first_path.setdefault(sha, path)
    paths = list(first_path.values())
    say(f"Netlify draft {deploy.id}: {len(files.digests)} files, {len(paths)} to upload")
    uploaded_bytes = 0
    if paths:
        done = 0
        size = sum(len(files.bodies[path]) for path in paths)
        phase = upload_phase_seconds if upload_phase_seconds is not None else upload_deadline(size)
        ends = time.monotonic() + phase
        pool = ThreadPoolExecutor(max_workers=UPLOAD_PARALLELISM, thread_name_prefix="netlify-upload")
        try:
            futures = {pool.submit(client.upload_file, deploy.id, path, files.bodies[path]): path for path in paths}
            for future in futures:
                try:
                    future.result(timeout=max(ends - time.monotonic(), 0.0))
                except FutureTimeout:
                    raise NetlifyError(
                        f"Netlify took over {phase:.0f} s for the uploads of deploy {deploy.id} ({done} of "
                        f"{len(paths)} done); nothing was published: try again, or check https://www.netlifystatus.com"
                    ) from None
                done += 1
                uploaded_bytes += len(files.bodies[futures[future]])
                if on_count:
                    on_count("Netlify uploads", done, len(paths))
                if done == len(paths) or done % 50 == 0:
                    say(f"uploaded {done}/{len(paths)}")
        finally:  # an upload still running ends at its own call's deadline, in the background
            pool.shutdown(wait=False, cancel_futures=True)
    deploy = _wait(client, site_id, deploy.id, ready_timeout, poll_interval, sleep, until={"ready"})
    return Published(deploy, len(files.digests), len(paths), uploaded_bytes, time.perf_counter() - started)


def upload_deadline(size: int) -> float:
    """Seconds the uploads of ``size`` bytes may take in all (:data:`UPLOAD_PHASE_SECONDS`)."""
    return UPLOAD_PHASE_SECONDS + size / UPLOAD_PHASE_BYTES_PER_SECOND


def publish(client: NetlifyClient, site_id: str, deploy_id: str) -> Deploy:
    """Make ``deploy_id`` the live deploy: a draft goes live, an older deploy comes back (rollback)."""
    return client.restore_deploy(site_id, deploy_id)


def _wait(
    client: NetlifyClient,
    site_id: str,
    deploy_id: str,
    timeout: float,
    interval: float,
    sleep: Callable[[float], None],
    *,
    until: set[str],
) -> Deploy:

    def settled() -> Deploy:
        deploy = client.get_deploy(site_id, deploy_id)
        if deploy.state in until:
            if deploy.state == "ready" and not deploy.url:
                raise NetlifyError(
                    f"Netlify says deploy {deploy_id} is ready but gives no URL for it; nothing was published"
                )
            return deploy
        if deploy.state == "error":
            reason = client.quoted(deploy.error_message) if deploy.error_message else "no reason given"
            raise NetlifyError(f"Netlify failed deploy {deploy_id}: {reason}; nothing was published")
        if deploy.state not in PENDING_STATES:
            raise NetlifyError(f"Netlify deploy {deploy_id} is {deploy.state!r}; nothing was published")
        raise NotReady(repr(deploy.state))

    try:
        # First asked again after a tenth of a second, then twice as long each time up to
        # ``interval``: a deploy Netlify has nothing to do for (every file known) is seen at once,
        # and a long one costs no more requests than a fixed interval would.
        return poll(settled, timeout=timeout, interval=min(0.1, interval), max_interval=interval, sleep=sleep)
    except TimedOut as exc:
        raise NetlifyError(
            f"Netlify deploy {deploy_id} was still {exc.reason} after {timeout:.0f}s; nothing was published"
        ) from None
