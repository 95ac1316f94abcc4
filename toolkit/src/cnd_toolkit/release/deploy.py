"""`inv deploy`: preflight, lock, build, smoke, push, roll out, Netlify draft, smoke, publish, record.

Nothing changes on the host or at Netlify before the preflight passes. Until the switch the live
release serves untouched; a draft whose smoke test fails is never published. Each phase's time
is kept for the closing table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from cnd_toolkit import logs, smoke
from cnd_toolkit import project as proj
from cnd_toolkit import settings as settings_mod
from cnd_toolkit.docker import containers, engine, images
from cnd_toolkit.errors import Interrupted, OpsError, SmokeFailed
from cnd_toolkit.logs import LineSink, Progress
from cnd_toolkit.netlify import api, publish, snapshot, split
from cnd_toolkit.release import (
    backends,
    caddy,
    canary,
    canary_rollout,
    hooks,
    lock,
    proxy,
    records,
    rollout,
    swarm,
    swarm_canary,
)
from cnd_toolkit.release import preflight as host_checks
from cnd_toolkit.release import traffic as traffic_mod
from cnd_toolkit.release.backends import Backend, CanaryNow, Live
from cnd_toolkit.settings import Settings


class PreflightFailed(OpsError):
    """Something the deploy needs is missing; nothing was changed. The message lists each item."""


@dataclass(frozen=True)
class Options:
    backend: bool = True
    netlify: bool = True
    allow_dirty: bool = False
    new_host: bool = False  # the project moves to another BACKEND_URL host on this Docker host
    canary: bool = False  # the API's new release gets a growing share of the requests, gated on metrics
    manual: bool = False  # with canary: stop after the first step for `inv canary promote|abort`


@dataclass
class Report:
    revision: str
    release: Live | None = None
    image: str = ""
    netlify: publish.Published | None = None
    phases: dict[str, float] = field(default_factory=dict)
    reference: str = ""  # what `docker run` takes for the release: the pushed digest, or the local image id
    netlify_skipped: str = ""  # the line saying why Netlify was not deployed (NETLIFY_DEPLOY=off), and how to see it
    # with --canary: its steps and whether it was promoted (on a swarm, Swarm's tasks are the steps)
    canary: canary_rollout.Outcome | swarm_canary.Outcome | None = None
    started: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def target(project: proj.Project, settings: Settings) -> rollout.Target:
    return rollout.Target(
        slug=project.slug,
        backend_url=settings["BACKEND_URL"].rstrip("/"),
        container_port=project.container_port,
        proxy=target_proxy(settings),
        health_timeout=settings.number("HEALTH_TIMEOUT"),
        keep_releases=settings.number("KEEP_RELEASES"),
        memory_mb=settings.number("RELEASE_MEMORY_MB"),
        cpus=settings.number("RELEASE_CPU_PERCENT") / 100,
        sticky=settings["CANARY_STICKY"] == "cookie",
        request_buffer=caddy.request_buffer(body_limit(settings)),
    )


def body_limit(settings: Settings) -> int:
    """The release's APP_MAX_REQUEST_BYTES (the app's default when it is not set, or not a number,
    which the release's start-up then refuses). Read as a server variable, which every release gets,
    without :meth:`Settings.runtime_environment`'s APP_ENV check: `inv status`, `releases` and
    `remove` open the backend too, and a bad APP_ENV is the deploy's to refuse, not theirs."""
    value = settings.values.get("APP_MAX_REQUEST_BYTES", "").strip()
    return settings_mod.whole_number(value, 1, 10**12) or caddy.DEFAULT_BODY_LIMIT


def effective_options(settings: Settings, options: Options) -> Options:
    """``options`` as the settings narrow them: NETLIFY_DEPLOY=off ships the backend only."""
    if settings["NETLIFY_DEPLOY"] == "off" and options.netlify:
        if not options.backend:
            source = settings.sources.get("NETLIFY_DEPLOY", "default")
            raise PreflightFailed(
                f"cannot deploy yet:\n  - --netlify-only, but NETLIFY_DEPLOY=off ({source}): this target ships "
                "no front end; deploy it with another --env, or set NETLIFY_DEPLOY=on"
            )
        return dataclasses.replace(options, netlify=False)
    return options


def netlify_skipped(settings: Settings, options: Options) -> str:
    """The line saying the front end was not deployed because of NETLIFY_DEPLOY, and how to see it."""
    if settings["NETLIFY_DEPLOY"] != "off" or not options.backend:
        return ""
    flag = f" --env {settings.env_name}" if settings.env_name else ""
    return (
        f"Netlify: not deployed (NETLIFY_DEPLOY=off, {settings.sources.get('NETLIFY_DEPLOY', 'default')}). "
        f"To see the site in front of this release: `inv edge{flag}` (public/ with netlify.toml's rules, "
        f"/api/* to {settings['BACKEND_URL']})"
    )


def pushes(settings: Settings) -> bool:
    return settings["REGISTRY_PUSH"] != "off"


def committed_secrets(project: proj.Project, settings: Settings) -> list[str]:
    """One line per deploy secret written in a settings file git does not ignore (`.env.local` is
    committed; other tools teach keeping secrets in a file of that name), whether or not it is the
    value in use (an exported one may win over it): the file is in the repository, or would be
    at the next ``git add -A``."""
    files = [f".env.{settings.env_name}"] if settings.env_name else []
    files += [".env"]
    found = []
    # The deploy's secrets, and the app's: a name APP_ENV passes on that says it is a secret.
    app_secrets = {
        n for n in settings_mod.app_env_names(settings.values.get("APP_ENV", "")) if settings_mod.looks_secret(n)
    }
    withheld = settings_mod.withheld_names() | app_secrets
    for name in files:
        path = project.root / name
        if not path.is_file() or proj.git_ignored(project.root, name):
            continue
        try:
            entries = settings_mod.read_env_file(path)
        except OpsError:
            continue  # the settings' own load says what is wrong with it
        for key, (value, line) in sorted(entries.items()):
            if key in withheld and value:
                found.append(
                    f"{key} is written in {name}:{line}, a file git does not ignore: it is in the repository, or "
                    "will be at the next commit. Take it out and set it in the environment or a git-ignored file "
                    "(.env); revoke it if a commit with it was pushed"
                )
    return found


def preflight(project: proj.Project, settings: Settings, options: Options) -> str:
    """Check what the deploy needs, before anything changes; return the revision to deploy."""
    needed = ["BACKEND_URL"]
    if options.backend and pushes(settings):
        needed += ["IMAGE"]
    if options.netlify:
        needed += ["NETLIFY_AUTH_TOKEN", "NETLIFY_SITE_ID"]
    problems = settings.missing(needed)
    if options.backend and options.netlify and settings.missing(["NETLIFY_AUTH_TOKEN", "NETLIFY_SITE_ID"]):
        # A project whose front end is not on Netlify yet still deploys its API.
        flag = f" --env {settings.env_name}" if settings.env_name else ""
        problems.append(
            f"or deploy the container alone, without Netlify: `inv deploy --backend-only{flag}` "
            "(NETLIFY_DEPLOY=off makes that this target's default)"
        )
    problems += settings.deploy_problems(needed)  # the netlify.toml placeholder host, a tagged IMAGE
    if options.backend:
        problems += settings.app_env_problems()  # a deploy secret in APP_ENV: refused before the build
        problems += settings.app_env_unset()  # a name APP_ENV lists that nothing sets
    if options.backend and settings["BACKEND_URL"]:
        try:
            caddy.site_address(settings["BACKEND_URL"])
        except OpsError as exc:
            problems.append(str(exc))
        else:
            problems += host_checks.backend_url(settings["BACKEND_URL"], local_target=settings.env_name == "local")
            problems += host_checks.loopback_port(settings)
    if options.backend and not pushes(settings) and settings["DEPLOY_TARGET"] == "swarm":
        problems.append(
            f"REGISTRY_PUSH=off ({settings.sources.get('REGISTRY_PUSH', 'default')}) goes with DEPLOY_TARGET=host: "
            "a swarm's nodes pull the image from IMAGE's registry; set REGISTRY_PUSH=on and IMAGE"
        )
    problems += committed_secrets(project, settings)
    problems += hooks.problems(project.root)  # a hook that cannot run is found now, not at its moment
    revision = proj.git_revision(project.root)
    if revision == "unknown":
        problems.append("this is not a git repository with a commit: `git init && git add -A && git commit`")
    elif revision.endswith("-dirty") and not options.allow_dirty:
        problems.append("the working tree has uncommitted changes: commit them, or deploy anyway with --allow-dirty")
    elif options.allow_dirty and not revision.endswith("-dirty") and proj.untracked_files(project.root):
        revision += "-dirty"  # what ships is not what the commit holds
    elif not options.allow_dirty and (untracked := proj.untracked_files(project.root)):
        shown = ", ".join(untracked[:5]) + (f" and {len(untracked) - 5} more" if len(untracked) > 5 else "")
        problems.append(
            f"files git does not track would ship with this revision ({shown}): "
            "commit, delete or git-ignore them, or deploy anyway with --allow-dirty"
        )
    if problems:
        raise PreflightFailed("cannot deploy yet:\n  - " + "\n  - ".join(problems))
    return revision


def host_problems(backend: Backend, settings: Settings, say: LineSink) -> list[str]:
    """What the backend's deploy needs from the Docker host, each problem with its fix: the engine
    in the mode DEPLOY_TARGET needs, the shared proxy matching this project's settings (or, for
    a first deploy, its image and its ports), and the registry when the image is pushed."""
    problems: list[str] = []
    if settings.env_name == "local" and not backend.is_local():
        problems.append(
            f"--env local deploys to this machine, but the Docker engine is "
            f"{engine.engine_address(settings['DOCKER_HOST'])} ({settings.sources.get('DOCKER_HOST', 'environment')}), "
            "another one: unset DOCKER_HOST for this deploy"
        )
    try:
        problems += backend.check_host(say)
    except OpsError as exc:
        problems.append(str(exc))
    if pushes(settings):
        problems += backend.registry_problems(
            settings["IMAGE"], settings["REGISTRY_USERNAME"], settings["REGISTRY_PASSWORD"]
        )
    return problems


def check_site(sites: dict[str, str], slug: str, backend_url: str, *, new_host: bool = False) -> None:
    """The BACKEND_URL host is this project's on the shared proxy (whose site files are ``sites``):
    not another project's, and not a new one for this project unless asked (``new_host``), since
    moving it takes the old one off."""
    address = caddy.site_address(backend_url)
    mine = caddy.site_file_name(slug)
    for name, text in sorted(sites.items()):
        if name != mine and caddy.served_address(text) == address:
            other = name.removesuffix(".caddy")
            raise PreflightFailed(
                f"{backend_url} is served on this Docker host by the project {other}: "
                "each project needs a BACKEND_URL host of its own"
            )
    current = caddy.served_address(sites.get(mine, ""))
    if current and current != address and not new_host:
        raise PreflightFailed(
            f"this Docker host serves {slug} at {current}, and this deploy's BACKEND_URL is {backend_url}, "
            f"which would take {current} off the air. A second target of the project (staging beside production) "
            "needs a Docker host of its own: containers, records and the lock are the project's on a host. "
            f"To move {slug} to the new address, deploy with --new-host"
        )


def deploy(
    project: proj.Project,
    settings: Settings,
    options: Options,
    *,
    say: LineSink,
    on_line: LineSink | None = None,
    on_progress: Progress | None = None,
    connect: Callable[[str], docker.DockerClient] | None = None,
    backend: Backend | None = None,
) -> Report:
    """The whole pipeline. ``say`` gets a line per step, ``on_line`` the build and push output,
    ``on_progress`` the bytes pushed and the files uploaded to Netlify as they go. The releases run
    on ``backend`` (else DEPLOY_TARGET's, on the engine ``connect`` gives for DOCKER_HOST)."""
    options = effective_options(settings, options)
    revision = preflight(project, settings, options)
    report = Report(revision, netlify_skipped=netlify_skipped(settings, options))
    phases = rollout.Timings(report.phases)
    with phases.phase("preflight"):
        if backend is None:
            client = (connect or (lambda address: engine.connect(address)))(settings["DOCKER_HOST"])
            try:
                backend = open_backend(project, settings, client)
            except OpsError as exc:  # not the engine DEPLOY_TARGET needs (a swarm's manager)
                raise PreflightFailed(f"cannot deploy yet:\n  - {exc}") from None
        if options.backend:
            problems = host_problems(backend, settings, say)
            if problems:
                raise PreflightFailed("cannot deploy yet:\n  - " + "\n  - ".join(problems))
        if options.canary and options.backend:  # before the build, not after it
            try:
                backend.check_canary(replicas(settings))
            except OpsError as exc:
                raise PreflightFailed(str(exc)) from None
        going = backend.canary_now()  # --netlify-only too: it would ship the canary's front end
        if going is not None:
            holder = backend.lock_holder()
            if holder is not None:
                raise PreflightFailed(
                    f"a canary deploy of {project.slug} is running ({going.canary} at {going.share:.0f}%; "
                    f"the lock: {holder.describe()}): wait for it to end, or watch it with `inv canary status`"
                )
            raise PreflightFailed(
                f"a canary of {project.slug} is in progress ({going.canary} at {going.share:.0f}%): "
                "`inv canary promote` or `inv canary abort` first"
            )
        if options.backend:  # the host's proxy, as this project would use it
            check_site(backend.sites(), project.slug, settings["BACKEND_URL"], new_host=options.new_host)
    files = None
    if options.netlify:  # a bad site, a wrong token or an unknown site stops here, before anything changes
        files = publish.site_files(project.root, settings["BACKEND_URL"])
        with netlify_client(settings) as netlify:
            netlify.get_site(settings["NETLIFY_SITE_ID"])
    with backend.hold_lock(revision=revision):
        say(f"Deploy lock taken on {engine.engine_address(settings['DOCKER_HOST'])}")
        try:
            if options.backend:
                _backend(
                    backend, project, settings, revision, report, phases, say, on_line, on_progress, options=options
                )
            if files is not None:
                in_maintenance = backend.in_maintenance()
                if report.canary is not None and not report.canary.promoted:
                    say(
                        "Netlify keeps its live deploy while the API's canary is watched: after `inv canary "
                        "promote`, `inv deploy --netlify-only` ships the front end"
                    )
                else:
                    plan = canary_plan(settings) if options.canary else None
                    _netlify(files, project, settings, revision, report, phases, say, on_progress, in_maintenance, plan)
        except KeyboardInterrupt:
            # Whatever went live is recorded (a backend switched before a drain or Netlify was cut short).
            live = backend.live() if options.backend else None
            if report.release is None and live is not None and live.created >= report.started:
                report.release = live  # started by this deploy, and past the switch
            if report.release is not None:
                _record(backend, project, revision, report)
            if live is not None:
                serving = f"{live.name} ({live.revision[:12]}) serves"
            elif options.backend:
                serving = "nothing serves: no release was live before this deploy, and its own was removed"
            else:
                serving = "the live release still serves"
            if live is not None and backend.interrupted(live):
                serving = backend.interrupted(live)
            if report.release is not None and files is not None and report.netlify is None:
                serving += "; Netlify keeps its previous deploy (`inv deploy --netlify-only` ships this one)"
            raise Interrupted(f"Deploy interrupted; {serving}") from None
        except OpsError:
            if report.release is not None:
                _record(backend, project, revision, report)
            raise
        if report.canary is not None and not report.canary.promoted:
            return report  # a canary left to a person: `inv canary promote` records it, abort leaves no record
        with phases.phase("record"):
            _record(backend, project, revision, report)
        try:
            hooks.run(project.root, "post-deploy", hook_facts(project, settings, revision, backend, report), say=say)
        except hooks.HookFailed as exc:
            raise hooks.HookFailed(f"{exc}; the deploy itself is done and recorded, and stays live") from None
    return report


def hook_facts(
    project: proj.Project,
    settings: Settings,
    revision: str,
    backend: Backend,
    report: Report | None = None,
    *,
    release: str = "",
    live: Live | None = None,
) -> dict[str, str]:
    """The ``CND_*`` variables of a hook at this point of the deploy (:func:`hooks.facts`)."""
    deployed = report.netlify.deploy if report is not None and report.netlify is not None else None
    known = hooks.facts(
        slug=project.slug,
        version=project.version,
        revision=revision,
        target=backend.kind,
        backend_url=settings["BACKEND_URL"],
        image=report.reference if report is not None else "",
        release=release or (report.release.name if report is not None and report.release is not None else ""),
        live=live.name if live is not None else "",
        netlify_url=(deployed.raw.get("ssl_url") or deployed.url) if deployed is not None else "",
    )
    if settings[
        "DOCKER_HOST"
    ]:  # the engine the deploy uses, also when a .env file names it: `docker exec` finds the release
        known["DOCKER_HOST"] = settings["DOCKER_HOST"]
    return known


def where_to_look(report: Report, settings: Settings) -> list[str]:
    """The URLs to open after a deploy: the API's, and the site Netlify published."""
    lines = []
    if report.release is not None:
        lines.append(f"API: {settings['BACKEND_URL'].rstrip('/')}/api/version")
    if report.netlify is not None:  # the site's own address (the deploy's ssl_url), else this deploy's
        deployed = report.netlify.deploy
        lines.append(f"Site: {deployed.raw.get('ssl_url') or deployed.raw.get('url') or deployed.url}")
    return lines


def _record(backend: Backend, project: proj.Project, revision: str, report: Report) -> None:
    live = backend.live()
    backend.record(
        records.Record(
            version=project.version,
            revision=revision,
            image=report.image or (live.image if live else ""),
            container=report.release.name if report.release else (live.name if live else ""),
            netlify_deploy=report.netlify.deploy.id if report.netlify else "",
            netlify_url=report.netlify.deploy.url if report.netlify else "",
            who=lock.whoami(),
        ),
    )


def _backend(
    backend: Backend,
    project: proj.Project,
    settings: Settings,
    revision: str,
    report: Report,
    phases: rollout.Timings,
    say: LineSink,
    on_line: LineSink | None,
    on_progress: Progress | None = None,
    *,
    options: Options | None = None,
) -> None:
    options = options or Options()
    tag = revision.removesuffix("-dirty")[:12] + ("-dirty" if revision.endswith("-dirty") else "")
    try:
        hooks.run(project.root, "pre-build", hook_facts(project, settings, revision, backend), say=say)
    except hooks.HookFailed as exc:
        raise hooks.HookFailed(f"{exc}: the deploy stopped before the build; nothing changed") from None
    with phases.phase("build"):
        built = backend.build(
            project, tag=tag, base_image=settings["BASE_IMAGE"], revision=revision, on_line=on_line, say=say
        )
    image = built.tags[0]
    environment = release_environment(settings)
    with phases.phase("smoke"):
        where = "" if backend.is_local() else " (on the Docker host, reached through its API)"
        say(f"Smoke-testing {image}{where}")
        backend.smoke(project, image, environment=environment, on_line=on_line, docker_host=settings["DOCKER_HOST"])
    if pushes(settings):
        with phases.phase("push"):
            say(f"Pushing {settings['IMAGE']}:{tag}")
            reference = backend.push(
                image,
                settings["IMAGE"],
                tag,
                username=settings["REGISTRY_USERNAME"],
                password=settings["REGISTRY_PASSWORD"],
                on_line=on_line,
                on_progress=on_progress,
            )
        report.image = reference
        say(f"Pushed {reference}")
    else:  # the release runs the image from the engine that built it; the record names it by its id
        reference = built.image_id
        report.image = f"{image}@{built.image_id}"
        say(f"Not pushed (REGISTRY_PUSH={settings['REGISTRY_PUSH']}): the release runs {image} from this engine")
    live = backend.live()

    def before_switch(name: str) -> None:
        known = hook_facts(project, settings, revision, backend, report, release=name, live=live)
        try:
            hooks.run(project.root, "pre-switch", known, say=say)
        except hooks.HookFailed as exc:
            raise hooks.HookFailed(f"{exc}: the deploy stopped before the switch") from None

    report.reference = reference
    release = backends.Release(
        image, reference, project.version, revision, environment, replicas(settings), before_switch=before_switch
    )
    if options.canary:
        outcome = backend.canary(release, canary_plan(settings, manual=options.manual), say=say, timings=phases)
        report.canary = outcome
        report.release = outcome.release if outcome.promoted else None
        return
    report.release = backend.roll_out(release, say=say, timings=phases)


def _netlify(
    files: publish.SiteFiles,
    project: proj.Project,
    settings: Settings,
    revision: str,
    report: Report,
    phases: rollout.Timings,
    say: LineSink,
    on_progress: Progress | None = None,
    maintenance_on: bool = False,
    plan: canary_rollout.Plan | None = None,
) -> None:
    """The front end: a draft, smoke-tested, then published. With a canary ``plan``, a branch
    deploy instead, given the plan's shares of the site's visitors through a Netlify split test,
    then published (or, on an error or Ctrl-C, the split test ended and nothing published)."""
    with netlify_client(settings, on_retry=lambda line: say(f"Netlify: {line}")) as netlify:
        with phases.phase("netlify"):
            done = publish.deploy_draft(
                netlify,
                settings["NETLIFY_SITE_ID"],
                files,
                title=f"{project.slug} {revision[:12]}",
                branch=split.CANARY_BRANCH if plan else "",
                on_progress=say,
                on_count=on_progress,
            )
        with phases.phase("draft smoke"):
            api_check = not maintenance_on
            say(
                f"Smoke-testing the draft {done.deploy.url}"
                + ("" if api_check else " (its page only: maintenance is on)")
            )
            try:
                smoke.smoke_site(
                    project,
                    done.deploy.url,
                    revision=revision if report.release else "",
                    timeout=settings.number("HEALTH_TIMEOUT"),
                    api=api_check,
                )
            except SmokeFailed as exc:
                message = f"{exc}; the draft {done.deploy.url} was not published"
                if report.release is not None:
                    message += (
                        f". The backend already serves {revision[:12]} and Netlify its previous deploy: "
                        "fix the site and run `inv deploy --netlify-only`, or go back with `inv rollback`"
                    )
                raise SmokeFailed(message, detail=exc.detail) from None
        with phases.phase("publish" if plan is None else "split test"):
            if plan is None:
                publish.publish(netlify, settings["NETLIFY_SITE_ID"], done.deploy.id)
            else:
                _split(netlify, settings, done.deploy.id, plan, say)
        report.netlify = done  # published: what the record names
        say(f"Published Netlify deploy {done.deploy.id}")


def _split(
    netlify: api.NetlifyClient, settings: Settings, deploy_id: str, plan: canary_rollout.Plan, say: LineSink
) -> None:
    """The site's split test through the plan's steps (each for its interval), then the canary
    branch's deploy published and the test ended; ended without publishing on any failure."""
    site_id, production = settings["NETLIFY_SITE_ID"], settings["NETLIFY_PRODUCTION_BRANCH"]
    rollout_ = split.SplitRollout(netlify, site_id, production, say=say)
    try:
        for share in plan.steps:
            if share == 100:
                break
            rollout_.step(share)
            time.sleep(plan.interval)
        rollout_.finish(deploy_id)
    except BaseException as exc:
        with contextlib.suppress(OpsError):
            rollout_.abort()
        say("Netlify: the split test was ended; the live deploy is unchanged")
        if isinstance(exc, OpsError) and not isinstance(exc, Interrupted):
            raise OpsError(
                f"{exc}; the split test was ended and Netlify keeps its live deploy (the API's new release "
                "stays live: `inv deploy --netlify-only` ships the front end again, `inv rollback` goes back)",
                detail=exc.detail,
            ) from None
        raise


def preview(
    project: proj.Project,
    settings: Settings,
    *,
    title: str = "",
    site: Path | None = None,
    say: LineSink,
    on_progress: Progress | None = None,
) -> publish.Published:
    """A draft Netlify deploy of public/ against BACKEND_URL (a staging backend), smoke-tested and
    never published: a pull request's preview. Touches no Docker engine and takes no lock.

    With ``site``, the netlify.toml and publish folder in that folder instead of the project's
    (a pull request's, written by :mod:`cnd_toolkit.netlify.snapshot`): deployed as data, with this
    project's code and smoke test."""
    problems = settings.missing(("NETLIFY_AUTH_TOKEN", "NETLIFY_SITE_ID", "BACKEND_URL"))
    problems += settings.deploy_problems(("BACKEND_URL",))
    if problems:
        raise OpsError("cannot make a preview:\n  " + "\n  ".join(problems))
    root = project.root if site is None else snapshot.checked_site(site)
    files = publish.site_files(root, settings["BACKEND_URL"])
    default_title = f"{project.slug} preview " + (
        proj.git_revision(project.root)[:12] if site is None else f"of {root.name}"
    )
    with netlify_client(settings, on_retry=lambda line: say(f"Netlify: {line}")) as netlify:
        netlify.get_site(settings["NETLIFY_SITE_ID"])
        done = publish.deploy_draft(
            netlify,
            settings["NETLIFY_SITE_ID"],
            files,
            title=title or default_title,
            on_progress=say,
            on_count=on_progress,
        )
    say(f"Smoke-testing the draft {done.deploy.url} (its /api/* goes to {settings['BACKEND_URL']})")
    try:
        smoke.smoke_site(project, done.deploy.url, timeout=settings.number("HEALTH_TIMEOUT"))
    except SmokeFailed as exc:
        raise SmokeFailed(f"{exc}; the draft {done.deploy.url} is not a working preview", detail=exc.detail) from None
    return done


def canary_plan(settings: Settings, *, manual: bool = False) -> canary_rollout.Plan:
    """The canary's steps and gate, from the CANARY_* settings."""
    return canary_rollout.Plan(
        steps=canary.parse_steps(settings["CANARY_STEPS"]),
        interval=float(settings.number("CANARY_INTERVAL")),
        gate=canary.Gate(
            max_error_ratio=settings.number("CANARY_MAX_ERROR_PERCENT") / 100,
            max_latency_ratio=settings.number("CANARY_MAX_P95_PERCENT") / 100,
            min_requests=settings.number("CANARY_MIN_REQUESTS"),
        ),
        manual=manual,
    )


def canary_state(project: proj.Project, settings: Settings) -> CanaryNow | None:
    return open_backend(project, settings).canary_now()


def canary_figures(project: proj.Project, settings: Settings, found: CanaryNow, window: float = 5.0) -> str:
    """The gate's comparison over the last ``window`` seconds, as `inv canary status` shows it."""
    return open_backend(project, settings).canary_figures(found, canary_plan(settings), window)


def canary_promote(project: proj.Project, settings: Settings, *, say: LineSink) -> Live:
    """`inv canary promote`: under the deploy lock; recorded as the deploy it finishes."""
    backend = open_backend(project, settings)
    found = backend.canary_now()
    with backend.hold_lock(revision=found.canary_revision if found else "", action="canary promote"):
        release = backend.promote(say=say)
        report = Report(release.revision, release=release, image=release.digest or release.image)
        report.reference = release.digest or release.image
        _record(backend, project, release.revision, report)
        try:  # the deploy the canary began ends here
            hooks.run(
                project.root, "post-deploy", hook_facts(project, settings, release.revision, backend, report), say=say
            )
        except hooks.HookFailed as exc:
            raise hooks.HookFailed(f"{exc}; the promotion itself is done and recorded, and stays live") from None
    return release


def canary_abort(project: proj.Project, settings: Settings, *, say: LineSink) -> Live:
    backend = open_backend(project, settings)
    with backend.hold_lock(action="canary abort"):
        return backend.abort(say=say)


def release_environment(settings: Settings) -> dict[str, str]:
    """What a release gets, the smoke run too: the server's variables and APP_ENV's names, and
    FORWARDED_ALLOW_IPS open to the proxy in front (only it reaches the app) unless set."""
    environment = settings.runtime_environment()
    environment = {**environment, "FORWARDED_ALLOW_IPS": environment.get("FORWARDED_ALLOW_IPS", "*")}
    if settings["METRICS_TOKEN"]:  # the app compares a bearer's digest with this (api/metrics.py)
        environment["APP_METRICS_TOKEN_SHA256"] = hashlib.sha256(settings["METRICS_TOKEN"].encode()).hexdigest()
    return environment


def replicas(settings: Settings) -> int | None:
    """REPLICAS when it is set (environment, .env): a deploy without it keeps the current count."""
    return settings.number("REPLICAS") if settings.sources.get("REPLICAS", "default") != "default" else None


def login(client: docker.DockerClient, settings: Settings) -> None:
    """Log the client in to IMAGE's registry (when a username is set): the service's create and
    update then pass the credentials with them, so every node can pull (``--with-registry-auth``)."""
    if not settings["REGISTRY_USERNAME"]:
        return
    registry = settings["IMAGE"].partition("/")[0]
    try:
        client.login(settings["REGISTRY_USERNAME"], settings["REGISTRY_PASSWORD"], registry=registry)
    except docker.errors.APIError as exc:  # an engine or registry may echo the login's JSON body
        message = images.registry_message(exc, settings["REGISTRY_PASSWORD"])
        raise images.PushFailed(f"registry login to {registry} failed: {message}") from None


def netlify_client(settings: Settings, **options: Any) -> api.NetlifyClient:
    """The Netlify API client for these settings (token, API URL); ``options`` go to the client."""
    return api.NetlifyClient(settings["NETLIFY_AUTH_TOKEN"], settings["NETLIFY_API_URL"], **options)


def open_backend(project: proj.Project, settings: Settings, client: docker.DockerClient | None = None) -> Backend:
    """The backend of DEPLOY_TARGET on DOCKER_HOST's engine (``client`` when given); on a swarm
    target the engine must be a swarm manager (else a clear error)."""
    client = client or engine.connect(settings["DOCKER_HOST"])
    return backends.choose(
        settings["DEPLOY_TARGET"], client, target(project, settings), lambda: login(client, settings)
    )


def rollback(project: proj.Project, settings: Settings, revision: str = "", *, say: LineSink) -> records.Record:
    """Back to the previous (or the named) release on both halves, under the deploy lock.

    The backend: a kept release started, gated, confirmed, and the live one drained (on a swarm:
    the service rolled to the release's image). Netlify: the deploy recorded with that release is
    made live again (when the release has one).
    """
    backend = open_backend(project, settings)
    with backend.hold_lock(revision=revision, action="rollback"):
        proxy_container = backend.proxy()
        history = records.load(proxy_container, project.slug)
        try:
            back = backend.roll_back(history, revision, release_environment(settings), say=say)
        except rollout.SwitchedThenInterrupted as switched:
            # Past the switch: the release it went back to serves, and is recorded as live.
            interrupted = switched.release
            if proxy_container is not None:
                records.add(proxy_container, project.slug, _rollback_record(interrupted, "", ""))
            raise Interrupted(
                f"Rollback interrupted; {interrupted.name} ({interrupted.revision[:12]}) serves, recorded "
                "(Netlify left as it is)"
            ) from None
        record = records.find(history, back.revision)
        netlify_deploy = record.netlify_deploy if record else ""
        if netlify_deploy and settings["NETLIFY_AUTH_TOKEN"] and settings["NETLIFY_SITE_ID"]:
            with netlify_client(settings) as netlify:
                publish.publish(netlify, settings["NETLIFY_SITE_ID"], netlify_deploy)
            say(f"Netlify deploy {netlify_deploy} is live again")
        elif netlify_deploy:
            say("Netlify left as it is: NETLIFY_AUTH_TOKEN or NETLIFY_SITE_ID is not set")
        else:
            say(f"Netlify left as it is: no Netlify deploy is recorded with {back.revision[:12]}")
        done = _rollback_record(back, netlify_deploy, record.netlify_url if record else "")
        if proxy_container is not None:
            records.add(proxy_container, project.slug, done)
        return done


def _rollback_record(back: Live, netlify_deploy: str, netlify_url: str) -> records.Record:
    return records.Record(
        version=back.version,
        revision=back.revision,
        image=back.digest or back.image,
        container=back.name,
        netlify_deploy=netlify_deploy,
        netlify_url=netlify_url,
        who=f"{lock.whoami()} (rollback)",
    )


def maintenance(project: proj.Project, settings: Settings, on: bool) -> None:
    """Make the proxy answer the project's API with a JSON 503 and Retry-After (``on``), or serve again."""
    backend = open_backend(project, settings)
    goal = backend.target
    proxy_container = backend.proxy()
    if proxy_container is None:
        raise OpsError("nothing is deployed on this Docker host yet (no proxy); run `inv deploy` first")
    site = rollout.site(goal)
    if proxy.read_file(proxy_container, f"{caddy.SITES_DIR}/{site.file_name}") is None:
        raise OpsError(f"{goal.backend_url} is not served by this Docker host's proxy yet; run `inv deploy` first")
    proxy.set_maintenance(proxy_container, project.slug, on, site.retry_after)


@dataclass(frozen=True)
class Removed:
    containers: list[str]
    site: bool
    records: int
    network: str = ""  # the project's network, when there was one
    proxy: ProxyParts | None = None  # with ``proxy``: the shared proxy, and who else uses it


@dataclass(frozen=True)
class ProxyParts:
    """The host's shared proxy as `inv remove --proxy` sees it: its parts, and the other projects it serves."""

    name: str
    parts: tuple[str, ...]  # the container, its network and volumes, as found
    users: tuple[str, ...]  # other projects with a site on it: while there is one, it stays

    def describe(self) -> str:
        return f"the shared proxy {', '.join(self.parts)}"


def proxy_parts(client: docker.DockerClient, settings: Settings, slug: str) -> ProxyParts | None:
    """The shared proxy of this host (a single-host one) and what removing it would take, or None."""
    wanted = target_proxy(settings)
    found = proxy.get(client, wanted.name)
    parts = [f"container {wanted.name}"] if found is not None else []
    if [n for n in client.networks.list(names=[wanted.network]) if n.name == wanted.network]:
        parts.append(f"network {wanted.network}")
    existing = {volume.name for volume in client.volumes.list()}
    parts += [f"volume {volume}" for volume in wanted.volumes if volume in existing]
    if not parts:
        return None
    mine = caddy.site_file_name(slug)
    users = sorted(name.removesuffix(".caddy") for name in proxy.read_sites(found) if name != mine) if found else []
    return ProxyParts(wanted.name, tuple(parts), tuple(users))


def target_proxy(settings: Settings) -> proxy.ProxySettings:
    """The shared proxy as this project's settings want it. For a BACKEND_URL on this machine, its
    ports are published on 127.0.0.1 only: a deploy to this machine is not served to the network."""
    return proxy.ProxySettings(
        settings["PROXY_IMAGE"],
        settings.number("PROXY_HTTP_PORT"),
        settings.number("PROXY_HTTPS_PORT"),
        name=settings["PROXY_NAME"],
        host_ip="127.0.0.1" if host_checks.on_this_machine(settings["BACKEND_URL"]) else "",
    )


def remove(
    project: proj.Project, settings: Settings, *, say: LineSink, dry_run: bool = False, with_proxy: bool = False
) -> Removed:
    """Take the project off the Docker host, under the deploy lock: its release containers
    (the live one drained first), its site file, its release records, its network. With
    ``dry_run``, only say what that would remove. With ``with_proxy``, the shared proxy too (its
    container, network and volumes, certificates included) when no other project has a site on
    it; while one does, it stays, and ``Removed.proxy.users`` names them.

    Caddy is not reloaded, so no other project's connection is touched: the removed site's block
    stays in Caddy's running configuration (answering 502) until the next reload. The Netlify
    site and the images in the registry stay.
    """
    backend = open_backend(project, settings)
    client = backend.client
    backend.check_remove(with_proxy)
    proxy_container = backend.proxy()
    site_path = f"{caddy.SITES_DIR}/{caddy.site_file_name(project.slug)}"
    net = proxy.network_name(project.slug)
    network = net if [n for n in client.networks.list(names=[net]) if n.name == net] else ""
    if dry_run:
        has_site = proxy_container is not None and proxy.read_file(proxy_container, site_path) is not None
        names = backend.release_names()
        parts = proxy_parts(client, settings, project.slug) if with_proxy else None
        return Removed(names, has_site, len(records.load(proxy_container, project.slug)), network, parts)
    with backend.hold_lock(action="remove"):
        history = records.load(proxy_container, project.slug)
        removed = backend.remove_releases(say=say)
        had_site = False
        if proxy_container is not None:
            had_site = proxy.read_file(proxy_container, site_path) is not None
            proxy.remove_site(proxy_container, project.slug)
            records.remove(proxy_container, project.slug)
        network_went = backend.after_remove(proxy_container)
    done = Removed(removed, had_site, len(history), network if network_went else "")
    if with_proxy:
        parts = proxy_parts(client, settings, project.slug)
        if parts is not None and not parts.users:
            say(f"Removing {parts.describe()}")
            proxy.remove(client, target_proxy(settings))
        done = dataclasses.replace(done, proxy=parts)  # with users: it stays, and the task says why
    return done


@dataclass(frozen=True)
class Status:
    live: Live | None
    health: str
    lock_holder: lock.Holder | None
    records: list[records.Record]
    netlify_live: str  # the published Netlify deploy id, "" when unknown
    maintenance: bool
    tasks: list[swarm.Task] = field(default_factory=list)  # on a swarm: each task, its node and health
    update: str = ""  # on a swarm: the state of the service's last update (completed, rollback_completed ...)
    notes: list[str] = field(default_factory=list)  # what else of the project is on the engine


def status(project: proj.Project, settings: Settings) -> Status:
    backend = open_backend(project, settings)
    proxy_container = backend.proxy()
    live = backend.live()
    found = backend.health(live)
    health, tasks, update = found.health, found.tasks, found.update
    netlify_live = ""
    if settings["NETLIFY_AUTH_TOKEN"] and settings["NETLIFY_SITE_ID"]:
        with netlify_client(settings, retries=1) as netlify:
            published = netlify.get_site(settings["NETLIFY_SITE_ID"]).get("published_deploy") or {}
            netlify_live = str(published.get("id") or "")
    history = records.load(proxy_container, project.slug)
    notes = _notes(backend, settings, live, history)
    going = backend.canary_now()
    if going is not None:
        if going.host is not None:  # the release that takes the rest, not the newest
            live = going.host.live
            health = containers.health(live.container)[0]
        notes.insert(0, f"{going.describe()}: `inv canary status`, then `inv canary promote` or `inv canary abort`")
    return Status(
        live=live,
        health=health,
        lock_holder=backend.lock_holder(),
        records=history,
        netlify_live=netlify_live,
        maintenance=proxy.in_maintenance(proxy_container, project.slug),
        tasks=tasks,
        update=update,
        notes=notes,
    )


def _notes(backend: Backend, settings: Settings, live: Live | None, history: list[records.Record]) -> list[str]:
    """What does not add up: a live release without a record (its deploy was killed), a release
    without its proxy; when nothing serves, what the other target runs here, or what the records say."""
    if live is None:
        return backend.idle_notes(history)
    notes = []
    if backend.proxy() is None:  # the records are in its volume: none can be read
        notes.append(
            f"the proxy {settings['PROXY_NAME']} is gone, so {settings['BACKEND_URL']} answers nothing: "
            "`inv deploy` creates it again"
        )
    elif not any(r.revision == live.revision for r in history):
        notes.append(
            f"the live release {live.revision[:12]} has no record (its deploy was killed before it recorded it): "
            "`inv rollback` goes to the newest recorded one; the next `inv deploy` records its release"
        )
    return notes


def scale(project: proj.Project, settings: Settings, count: int, *, say: LineSink) -> swarm.SwarmRelease:
    """Set the number of the service's tasks, under the deploy lock (swarm only)."""
    backend = open_backend(project, settings)
    with backend.hold_lock(action="scale"):
        return backend.scale(count, settings.number("HEALTH_TIMEOUT"), say=say)


def traffic(project: proj.Project, settings: Settings, window: float = 2.0) -> str:
    """The live release's request rate, 5xx ratio and p95 latency, from its /metrics; or why not."""
    running, where = open_backend(project, settings).serving_containers()
    if not running:
        return "no running release to read /metrics from"
    try:
        found = traffic_mod.measure(running, window)
    except Exception as exc:  # an image from before /metrics, a stopped container: say so, never fail status
        return f"unavailable ({logs.clean_line(str(exc))[:120]})"
    return found.describe() + where


def monitor_target(settings: Settings) -> Backend:
    """What `inv monitor` and `inv logs` watch: the project's backend on DOCKER_HOST's engine."""
    return open_backend(proj.load(), settings)


def release_lock(project: proj.Project, settings: Settings) -> lock.Holder | None:
    return lock.release(open_backend(project, settings).client, project.slug)


def lock_holder(project: proj.Project, settings: Settings) -> lock.Holder | None:
    return open_backend(project, settings).lock_holder()
