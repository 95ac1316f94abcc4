"""The Invoke tasks of a project: its ``tasks.py`` imports ``ns`` from here.

A thin layer: the logic lives in the other modules of ``cnd_toolkit`` (typed, unit-tested).
"""

from __future__ import annotations

import functools
import shutil
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from cnd_toolkit import options, redact, settings
from cnd_toolkit import project as proj
from cnd_toolkit.errors import Interrupted, OpsError, shown
from cnd_toolkit.lazy import lazy as _lazy

# The modules that reach Docker, HTTP or aiohttp load when a task first uses them, not when `inv`
# starts: `inv -l`, `inv --help TASK` and a bad option's error come in a fraction of the time.
if TYPE_CHECKING:
    from cnd_toolkit import dev as dev_ops
    from cnd_toolkit import monitor as monitor_ops
    from cnd_toolkit import run as run_ops
    from cnd_toolkit import smoke as smoke_ops
    from cnd_toolkit.docker import engine, images
    from cnd_toolkit.edge import server as edge_server
    from cnd_toolkit.netlify import check as check_ops
    from cnd_toolkit.netlify.config import NetlifyConfig
    from cnd_toolkit.release import applogs, swarm
    from cnd_toolkit.release import deploy as deploy_ops
else:
    dev_ops = _lazy("cnd_toolkit.dev")
    monitor_ops = _lazy("cnd_toolkit.monitor")
    run_ops = _lazy("cnd_toolkit.run")
    smoke_ops = _lazy("cnd_toolkit.smoke")
    engine = _lazy("cnd_toolkit.docker.engine")
    images = _lazy("cnd_toolkit.docker.images")
    edge_server = _lazy("cnd_toolkit.edge.server")
    check_ops = _lazy("cnd_toolkit.netlify.check")
    applogs = _lazy("cnd_toolkit.release.applogs")
    swarm = _lazy("cnd_toolkit.release.swarm")
    deploy_ops = _lazy("cnd_toolkit.release.deploy")

# soft_wrap: rich inserts no line breaks of its own. A terminal wraps long lines itself, and
# output redirected to a file or a CI log keeps each line (and each URL) whole. Everything printed
# is scrubbed of the secrets the settings loaded, whoever said it (an engine, a registry, an API).
# No emoji codes either: a line an engine or a registry sent is shown as it was, not turned into
# pictures (which a secret in it would slip past the scrubbing as).
console = Console(file=redact.ScrubbingStream(lambda: sys.stderr), highlight=False, soft_wrap=True, emoji=False)  # type: ignore[arg-type]
# What a task reports as its result (tables, status) goes to stdout, so `inv releases > file` works.
out = Console(file=redact.ScrubbingStream(lambda: sys.stdout), highlight=False, soft_wrap=True, emoji=False)  # type: ignore[arg-type]
for _console in (console, out):
    if not _console.is_terminal:  # a CI log or a file: tables keep whole cells (rich would assume 80 columns)
        _console.width = 200


def _warn_of_leftover_ops() -> None:
    """Every task of a project that still has Python files in ``ops/`` says so once: the tasks no
    longer read it (its code is this package), so what a team put there does nothing."""
    left = [name if name.isprintable() else repr(name) for name in proj.leftover_ops()]
    if left:
        named = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        console.print(
            f"[yellow]warning: ops/ is left from before the tooling was the cnd-toolkit package, and the tasks "
            f"no longer read it ({escape(named)}): move what you need into tasks.py and delete ops/ "
            '(README.md, "Updating from the template")[/]'
        )


ENV_HELP = "settings from .env.NAME as well as .env (staging, production); the environment still wins"


# Messages quote what others wrote (a setting's name, a file, a server's answer): every control
# character in them is shown as an escape (errors.shown), never sent to the terminal as it is.
def _print_line(line: str) -> None:
    console.print(shown(line, lines=False), markup=False, soft_wrap=True)


def _say(line: str) -> None:
    console.print(f"[bold]{escape(shown(line, lines=False))}[/]")


def _warn(line: str) -> None:
    console.print(f"[yellow]{escape(shown(line, lines=False))}[/]")


def _settings(env: str) -> settings.Settings:
    """The settings for this run (environment, then .env.NAME, then .env, then the project's)."""
    loaded = settings.load(proj.ROOT, env, defaults=settings.project_defaults(proj.ROOT))
    for warning in loaded.warnings:
        _warn(warning)
    return loaded


def _quiet_settings(env: str) -> settings.Settings:
    """:func:`_settings` without printing its warnings again."""
    return settings.load(proj.ROOT, env, defaults=settings.project_defaults(proj.ROOT))


@contextmanager
def _failing_cleanly() -> Iterator[None]:
    """Expected failures end in one clear message (plus their log tail), not a traceback; an
    unexpected one shows its traceback, scrubbed of secrets like everything printed."""
    try:
        yield
    except Exit:
        raise
    except Interrupted as exc:
        raise Exit(shown(str(exc)), code=Interrupted.exit_code) from None
    except engine.LOST_ERRORS as exc:  # the engine went away
        raise Exit(f"error: {shown(str(engine.lost(exc)), lines=False)}", code=1) from None
    except OpsError as exc:
        if exc.detail:
            console.rule("[dim]log tail[/]")
            console.print(shown(exc.detail), markup=False, style="dim")
            console.rule()
        raise Exit(f"error: {shown(str(exc))}", code=1) from None
    except Exception as exc:  # a bug: its traceback, through the scrubbing console (an error may quote a secret)
        console.print(shown("".join(traceback.format_exception(exc))), markup=False, style="dim")
        raise Exit(redact.scrub(shown(f"error: unexpected {type(exc).__name__}: {exc}", lines=False)), code=1) from None


@task(
    help={
        "tag": "image tag besides `latest` (default: the project version)",
        "base_image": "base image for both stages, recorded as BASE_IMAGE in .env for the other tasks "
        "(default: BASE_IMAGE, else the Dockerfile's)",
        "no_cache": "rebuild every layer (pip runs again, so the image id changes)",
        "env": ENV_HELP,
    }
)
def build(c: Context, tag: str = "", base_image: str = "", no_cache: bool = False, env: str = "") -> None:
    """Build the production image; Ctrl-C stops the build.

    Tagged <slug>:<tag> and <slug>:latest. The image the tags named before goes when nothing else
    uses it, so rebuilds leave none behind.
    """
    project = proj.load()
    with _failing_cleanly(), _stopping_on_signals(), _interrupted("Build interrupted; nothing was tagged"):
        tag = options.tag(tag) if tag else ""
        config = _settings(env)
        if base_image:
            config = config.override("BASE_IMAGE", base_image, "--base-image")
        client = engine.connect(config["DOCKER_HOST"])
        result = images.build_project(
            client,
            project,
            tag=tag,
            base_image=config["BASE_IMAGE"],
            no_cache=no_cache,
            on_line=_print_line,
            say=_say,
        )
    _report_build(result)
    if base_image and base_image != _quiet_settings(env)["BASE_IMAGE"]:
        with _failing_cleanly():
            written = settings.record(proj.ROOT, "BASE_IMAGE", base_image)
            after = _quiet_settings(env)
        console.print(
            f"Recorded BASE_IMAGE={base_image} in {written.name}: `inv run`, `inv dev`, `inv smoke` and "
            "`inv deploy` build from it too (delete the line to go back to the Dockerfile's)"
        )
        if after["BASE_IMAGE"] != base_image:
            _warn(
                f"BASE_IMAGE={after['BASE_IMAGE']} ({after.sources['BASE_IMAGE']}) wins over .env: change it "
                "there too, or the other tasks keep using it"
            )


def _report_build(result: images.BuildResult) -> None:
    console.print(f"[green]Built[/] {result.image_id[7:19]} as {', '.join(result.tags)} in {result.seconds:.1f}s")
    if result.replaced:
        count = len(result.replaced)
        console.print(
            f"Removed {count} image{'s' if count > 1 else ''} earlier builds left ({', '.join(result.replaced)}): "
            "nothing used them"
        )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def _interrupted(message: str) -> Iterator[None]:
    """A signal outside the steps that say more ends in ``message`` and exit code 130, not a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(message) from None


@contextmanager
def _stopping_on_signals() -> Iterator[None]:
    """Ctrl-C, SIGTERM (a process manager) and SIGHUP (a closed terminal) raise KeyboardInterrupt.

    Installed explicitly: a shell script's `inv run &`, some CI runners and `nohup` start us with
    SIGINT ignored, and Python then installs no Ctrl-C handler of its own, so nothing would stop
    the container. A SIGHUP that arrives ignored stays ignored: that is what `nohup` asks for.
    """
    wanted = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        wanted.append(signal.SIGHUP)
    previous = {signum: signal.signal(signum, _interrupt) for signum in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@task(
    help={
        "port": "host port on 127.0.0.1, 1-65535 (default, or 0: a free one)",
        "tag": "image tag to run (default: latest)",
        "no_build": "run the image as it is, even if the source changed since it was built",
        "env": ENV_HELP,
    }
)
def run(c: Context, port: str = "0", tag: str = "latest", no_build: bool = False, env: str = "") -> None:
    """Run the image and follow its logs; Ctrl-C stops and removes it.

    The image is built first when the source changed since it was built (--no-build runs it as it is).
    The server's variables (APP_*, GUNICORN_*, WEB_CONCURRENCY, ACCESS_LOG, FORWARDED_ALLOW_IPS)
    from your shell, .env and .env.NAME are passed to the container. PORT is not: the container
    listens on the image's port, published on --port.
    """
    project = proj.load()
    with _failing_cleanly(), _stopping_on_signals():
        host_port, tag = options.port(port), options.tag(tag)
        config = _settings(env)
        environment = run_ops.local_environment(config)
        client = engine.connect(config["DOCKER_HOST"])
        for note in environment.notes:
            _warn(note) if note.startswith("PORT=") else console.print(escape(note))
        image = run_ops.current_image(
            client, project, tag, build=not no_build, base_image=config["BASE_IMAGE"], on_line=_print_line, say=_say,
            on_built=_report_build,
        )  # fmt: skip
        run_ops.serve(
            client,
            project,
            image,
            host_port=host_port or None,
            environment=environment.variables,
            on_line=_print_line,
            on_ready=lambda line: console.print(f"[green]{escape(line)}[/]"),
        )


@task(
    help={
        "image": "image to test (default: build the current source first)",
        "url": "test a deployed base URL instead of an image (a Netlify draft, production)",
        "env": ENV_HELP,
    }
)
def smoke(c: Context, image: str = "", url: str = "", env: str = "") -> None:
    """Run the smoke suite against a fresh container, or --url.

    The container runs --image, or else an image built from the current source first.
    """
    if image and url:
        raise Exit("error: give --image or --url, not both", code=2)
    project = proj.load()
    with _failing_cleanly(), _stopping_on_signals(), _interrupted("Smoke run interrupted"):
        if url:
            smoke_ops.smoke_url(project, url)
            console.print(f"[green]Smoke tests passed[/] against {url}")
            return
        config = _settings(env)
        environment = run_ops.local_environment(config)
        client = engine.connect(config["DOCKER_HOST"])
        for note in environment.notes:
            console.print(escape(note))
        if not image:
            result = images.build_project(
                client, project, base_image=config["BASE_IMAGE"], on_line=_print_line, say=_say
            )
            _report_build(result)
            image = result.tags[0]
        seconds = smoke_ops.smoke_image(
            project,
            client,
            image,
            environment=environment.variables,
            on_line=_print_line,
            docker_host=config["DOCKER_HOST"],
        )
    console.print(f"[green]Smoke tests passed[/] against {image} (healthy after {seconds:.2f}s)")


@task(help={"env": ENV_HELP})
def clean(c: Context, env: str = "") -> None:
    """Remove the project's images and the containers of its runs.

    Images: tagged, left untagged by rebuilds, the builder stage's, failed builds'.
    """
    project = proj.load()
    with _failing_cleanly(), _stopping_on_signals(), _interrupted("Clean interrupted; run `inv clean` again to finish"):
        client = engine.connect(_settings(env)["DOCKER_HOST"])
        cleaned = images.clean_project(
            client, project.slug, on_line=_print_line, checkout=proj.checkout_id(project.root)
        )
        if cleaned.kept:
            raise OpsError(
                f"left {len(cleaned.kept)} in place; stop what uses them, then run `inv clean` again",
                detail="\n".join(cleaned.kept),
            )
    if not cleaned.containers and not cleaned.images:
        console.print("Nothing to clean.")


@task
def relock(c: Context) -> None:
    """Refresh uv.lock and requirements.lock from pyproject.toml.

    With uv: uv.lock (the tooling CI installs) and requirements.lock (the image's, hashed, every
    platform). Commit both.
    """
    if shutil.which("uv") is None:
        raise Exit("error: uv is not installed; install it with `pip install uv` and run `inv relock` again", code=1)
    c.run("uv lock", env=settings.child_environment(), replace_env=True)
    c.run(
        "uv pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 -o requirements.lock",
        env=settings.child_environment(),
        replace_env=True,
    )


def _one_line_parse_errors() -> None:
    """A task typed without its argument (`inv maintenance`), or an option without its value
    (`inv logs --lines`), is one line saying how to type it, exit code 2.

    Invoke refuses both while it parses, before any task runs, in words of its own ("'maintenance'
    did not receive required positional arguments: 'state'", "Flag <Argument: lines (l)> needed
    value"), and offers no hook there; so its parser's two checks are wrapped. Other parse errors,
    and every Invoke without these methods, keep Invoke's own message (tests/test_messages.py
    notices a change).
    """
    try:
        from invoke.parser.parser import ParseMachine
    except ImportError:
        return
    complete_context, complete_flag = ParseMachine.complete_context, ParseMachine.complete_flag

    def usage(context: Any) -> str:
        words = [str(arg.name).upper() for arg in context.positional_args]
        for arg in context.args.values():
            if not arg.positional:
                flag = "--" + str(arg.name).replace("_", "-")
                words.append(f"[{flag}]" if arg.kind is bool else f"[{flag} {str(arg.name).upper()}]")
        [needed, *_] = context.missing_positional_args
        return f"usage: inv {context.name} {' '.join(words)}; {str(needed.name).upper()}: {needed.help}"

    def checked_context(machine: Any) -> None:
        if machine.context is not None and machine.context.name and machine.context.missing_positional_args:
            raise Exit(usage(machine.context), code=2)
        complete_context(machine)

    def checked_flag(machine: Any) -> None:
        flag, context = machine.flag, machine.context
        if flag and flag.takes_value and flag.raw_value is None and not flag.optional and context and context.name:
            name = "--" + str(flag.name).replace("_", "-")
            raise Exit(f"error: inv {context.name} {name} needs a value: {flag.help}", code=2)
        complete_flag(machine)

    ParseMachine.complete_context = checked_context  # type: ignore[method-assign,assignment]
    ParseMachine.complete_flag = checked_flag  # type: ignore[method-assign,assignment]


_one_line_parse_errors()


def _help_if_asked(c: Context, value: str, name: str) -> None:
    """`inv NAME --help` where NAME's first argument is positional: Invoke hands it "--help" as the value."""
    if value in {"--help", "-h"}:
        command = [sys.executable, "-m", "invoke", "--help", name]
        raise Exit(code=subprocess.run(command, env=settings.child_environment(), check=False).returncode)


def _wait_for_ctrl_c() -> None:
    """Wait for a signal (see `_stopping_on_signals`, which the caller has installed)."""
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        console.print("\nStopping ...")


def _app_line(line: str) -> None:
    console.print(f"[cyan]app [/] | {escape(line)}", soft_wrap=True)


def _edge_line(line: str) -> None:
    console.print(f"[magenta]edge[/] | {escape(line)}", soft_wrap=True)


def _report_site(site: NetlifyConfig) -> None:
    warnings, cap = site.warnings, settings.MAX_WARNINGS
    for problem in warnings[:cap]:
        console.print(f"[yellow]{escape(str(problem))}[/]")
    if len(warnings) > cap:
        console.print(f"[yellow]{len(warnings) - cap:,} more warnings: `inv check` lists them[/]")
    for note in site.unsupported():
        console.print(f"[yellow]note[/] {escape(note)}")


@task(
    help={
        "port": "port of the edge, 1-65535 (default 8888; 0: a free one)",
        "no_docker": "run the app as a local gunicorn process instead of a container",
        "netlify": "front the app with the real `netlify dev` (netlify-cli) instead of the built-in edge",
        "no_build": "use the image as it is, even if the source changed since it was built",
        "env": ENV_HELP,
    }
)
def dev(
    c: Context,
    port: str = "8888",
    no_docker: bool = False,
    netlify: bool = False,
    no_build: bool = False,
    env: str = "",
) -> None:
    """Run the app with hot reload behind a local Netlify edge.

    Ctrl-C stops everything.
    """
    project = proj.load()
    with _failing_cleanly(), _stopping_on_signals(), ExitStack() as stack:
        edge_port = options.port(port)
        config = _settings(env)
        netlify_cli = dev_ops.require_netlify_cli() if netlify else ""
        edge_server.load_site(project.root)  # a configuration error stops here, before a container starts
        backend = stack.enter_context(
            dev_ops.app_backend(
                project,
                config,
                docker=not no_docker,
                build=not no_build,
                on_line=_app_line,
                on_build_line=_print_line,
                on_built=_report_build,
                say=_warn,
            )
        )
        if netlify_cli:
            stack.enter_context(dev_ops.netlify_dev(project, netlify_cli, backend.url, edge_port, _edge_line))
        else:
            site = dev_ops.site_for(project.root, backend.url)
            _report_site(site)
            edge = stack.enter_context(edge_server.serve_in_thread(site, port=edge_port, on_log=_edge_line))
            console.print(f"[green]Serving[/] {edge.url}  (edge: public/ + rules; /api/* -> {backend.url})")
        console.print("Edit api/ and the app reloads. Ctrl-C stops everything.")
        _wait_for_ctrl_c()
    console.print("Stopped.")


@task(
    help={
        "port": "port of the edge, 1-65535 (default 8888; 0: a free one)",
        "backend": "origin /api/* goes to (default: BACKEND_URL, else the one in netlify.toml)",
        "env": ENV_HELP,
    }
)
def edge(c: Context, port: str = "8888", backend: str = "", env: str = "") -> None:
    """Serve public/ and the Netlify rules in front of any backend."""
    project = proj.load()
    with _failing_cleanly(), _stopping_on_signals():
        edge_port = options.port(port)
        backend = backend or _settings(env)["BACKEND_URL"]
        try:
            site = dev_ops.site_for(project.root, backend) if backend else edge_server.load_site(project.root)
        except ValueError as exc:
            raise OpsError(str(exc)) from None
        _report_site(site)
        with edge_server.serve_in_thread(site, port=edge_port, on_log=_edge_line) as running:
            target = backend or "the rules as written"
            console.print(f"[green]Serving[/] {running.url}  (/api/* -> {target}); Ctrl-C stops it")
            _wait_for_ctrl_c()


@task(help={"env": "also check .env.NAME (and .env): every setting valid, typos named"})
def check(c: Context, env: str = "") -> None:
    """Check the Netlify configuration strictly, and the settings.

    netlify.toml, _redirects and _headers: typos, bad rules, missing files.
    """
    with _failing_cleanly():
        config = _settings(env)
        # What a deploy's preflight would refuse in the settings themselves, whatever the target.
        wrong = deploy_ops.committed_secrets(proj.load(), config) + config.app_env_problems()
        wrong += config.app_env_unset(unset=False)
    for line in config.app_env_unset(odd=False):  # CI may set what this machine does not
        _warn(line)
    if config["BACKEND_URL"].startswith("http://"):  # a backend on this machine: inv dev and inv edge take it
        _warn(f"BACKEND_URL={config['BACKEND_URL']} ({config.sources['BACKEND_URL']}) is local; a deploy needs https")
    for line in wrong:
        console.print(f"[red]error[/] {escape(shown(line, lines=False))}")
    code = check_ops.main([str(proj.ROOT)])
    if code or wrong:
        raise Exit(code=code or 1)


DEPLOY_HELP = {"env": ENV_HELP}


def _phase_table(phases: dict[str, float]) -> None:
    table = Table(title="Deploy phases", show_header=True, header_style="bold")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for name, seconds in phases.items():
        table.add_row(name, f"{seconds:.2f}")
    table.add_row("total", f"{sum(phases.values()):.2f}", style="bold")
    console.print(table)


@contextmanager
def _progress_bars() -> Iterator[Callable[[str, int, int], None] | None]:
    """Bars for the push and the Netlify uploads on a terminal; a log gets the step lines only."""
    if not console.is_terminal:
        yield None
        return
    bars: dict[str, TaskID] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:

        def update(what: str, done: int, total: int) -> None:
            if what not in bars:
                bars[what] = progress.add_task(what, total=total or None)
            progress.update(bars[what], completed=done, total=total or None)

        yield update


@task(
    help={
        "env": ENV_HELP,
        "backend_only": "deploy the container only (Netlify keeps its live deploy)",
        "netlify_only": "deploy public/ to Netlify only (the container stays as it is)",
        "allow_dirty": "deploy a working tree with uncommitted changes (its revision says -dirty)",
        "new_host": "move the project to a new BACKEND_URL host on its Docker host (the old host stops being served)",
        "target": "host (one Docker host, blue/green) or swarm (a Swarm service, rolling); default: DEPLOY_TARGET",
        "canary": "shift the API's requests to the new release step by step (CANARY_STEPS), gated on its metrics",
        "manual": "with --canary: stop after the first step, for `inv canary status|promote|abort`",
    }
)
def deploy(
    c: Context,
    env: str = "",
    backend_only: bool = False,
    netlify_only: bool = False,
    allow_dirty: bool = False,
    new_host: bool = False,
    target: str = "",
    canary: bool = False,
    manual: bool = False,
) -> None:
    """Ship both halves: the API behind Caddy, the site to Netlify.

    Build, smoke, push, roll out behind Caddy; then a Netlify draft, smoke, publish.
    """
    if backend_only and netlify_only:
        raise Exit("error: give --backend-only or --netlify-only, not both", code=2)
    if manual and not canary:
        raise Exit("error: --manual goes with --canary", code=2)
    project = proj.load()
    options = deploy_ops.Options(
        backend=not netlify_only,
        netlify=not backend_only,
        allow_dirty=allow_dirty,
        new_host=new_host,
        canary=canary,
        manual=manual,
    )
    with (
        _failing_cleanly(),
        _stopping_on_signals(),
        _interrupted("Deploy interrupted; the live release still serves"),
        _progress_bars() as on_progress,
    ):
        config = _settings(env)
        if target:
            config = config.override("DEPLOY_TARGET", target, "--target")
        report = deploy_ops.deploy(project, config, options, say=_say, on_line=_print_line, on_progress=on_progress)
    _phase_table(report.phases)
    if report.canary is not None and not report.canary.promoted:
        console.print(f"[yellow]Canary[/] {report.revision[:12]} takes part of the API's requests: `inv canary status`")
        return
    if report.netlify_skipped:
        console.print(escape(report.netlify_skipped))
    console.print(f"[green]Deployed[/] {report.revision[:12]}")
    for line in deploy_ops.where_to_look(report, config):
        out.print(line, markup=False)


@task(
    positional=["action"],
    help={
        "action": "status, promote (every request to the canary) or abort (every request back)",
        "env": ENV_HELP,
    },
)
def canary(c: Context, action: str, env: str = "") -> None:
    """Show or end a canary left by `inv deploy --canary --manual`.

    status: its share and figures; promote: every request to it; abort: every request back.
    """
    _help_if_asked(c, action, "canary")
    project = proj.load()
    if action not in {"status", "promote", "abort"}:
        raise Exit(f"error: `inv canary {action}`: the action is status, promote or abort", code=2)
    with _failing_cleanly(), _stopping_on_signals():
        config = _settings(env)
        if action == "promote":
            release = deploy_ops.canary_promote(project, config, say=_say)
            console.print(f"[green]Promoted[/] {release.name} ({release.revision[:12]})")
            return
        if action == "abort":
            live = deploy_ops.canary_abort(project, config, say=_say)
            console.print(f"[yellow]Aborted[/]: {live.name} ({live.revision[:12]}) takes every request")
            return
        found = deploy_ops.canary_state(project, config)
        if found is None:
            out.print(f"No canary of {project.slug} is in progress.")
            return
        out.print(found.describe(), markup=False)
        out.print(f"  {deploy_ops.canary_figures(project, config, found)}", markup=False)


@task(
    help={
        "env": ENV_HELP,
        "title": "the draft's title at Netlify (default: the project and revision)",
        "site": "deploy the netlify.toml and publish folder in this folder instead of the project's "
        "(a pull request's, from `python -m cnd_toolkit.netlify.snapshot`)",
    }
)
def preview(c: Context, env: str = "", title: str = "", site: str = "") -> None:
    """Make a smoke-tested Netlify draft of public/, never published.

    Against BACKEND_URL (use --env staging). Prints its URL (and writes url=... to $GITHUB_OUTPUT
    in a GitHub Actions job).
    """
    import os
    from pathlib import Path

    project = proj.load()
    with _failing_cleanly(), _stopping_on_signals(), _interrupted("Preview interrupted; nothing was published"):
        done = deploy_ops.preview(project, _settings(env), title=title, site=Path(site) if site else None, say=_say)
    out.print(done.deploy.url, markup=False)
    github_output = os.environ.get("GITHUB_OUTPUT", "")
    if github_output:
        with open(github_output, "a", encoding="utf-8") as handle:
            handle.write(f"url={done.deploy.url}\n")


@task(help={"env": ENV_HELP})
def releases(c: Context, env: str = "") -> None:
    """List the releases recorded on the Docker host, newest first.

    Marks which is live on each half (the backend and Netlify).
    """
    project = proj.load()
    with _failing_cleanly():
        state = deploy_ops.status(project, _settings(env))
    for note in state.notes:
        out.print(f"[yellow]note[/] {escape(note)}")
    if not state.records:
        out.print("No releases recorded yet: run `inv deploy`.")
        return
    table = Table(show_header=True, header_style="bold")
    for column in ("time", "version", "revision", "backend", "netlify", "image", "by"):
        table.add_column(column)
    live = state.live
    marked: set[str] = set()  # "live" once per half: on the newest record of what is live
    for record in state.records:
        serves = live is not None and record.container == live.name and record.revision == live.revision
        backend = "live" if serves and "backend" not in marked else ""
        netlify = "live" if record.netlify_deploy == state.netlify_live != "" and "netlify" not in marked else ""
        marked |= {half for half, mark in (("backend", backend), ("netlify", netlify)) if mark}
        table.add_row(
            record.time, record.version, record.revision[:12], backend, netlify or record.netlify_deploy[:12],
            record.image.rsplit("@", 1)[-1][:19], record.who,
        )  # fmt: skip
    out.print(table)


@task(help={"revision": "the release to go back to (default: the previous one)", "env": ENV_HELP})
def rollback(c: Context, revision: str = "", env: str = "") -> None:
    """Go back to the previous (or named) release on both halves.

    The release is gated on its health check, as in a deploy.
    """
    project = proj.load()
    with (
        _failing_cleanly(),
        _stopping_on_signals(),
        _interrupted("Rollback interrupted; the live release still serves"),
    ):
        done = deploy_ops.rollback(project, _settings(env), revision, say=_say)
    console.print(f"[green]Rolled back[/] to {done.revision[:12]} ({done.version})")


@task(help={"env": ENV_HELP})
def status(c: Context, env: str = "") -> None:
    """Show what is live on each half, and the deploy lock.

    The live release, its health, uptime and digest; the deploy lock's holder; maintenance.
    """
    project = proj.load()
    with _failing_cleanly():
        config = _settings(env)
        state = deploy_ops.status(project, config)
    if state.live is None:
        out.print(
            "Backend: nothing running on this Docker host"
            if state.notes or state.records
            else "Backend: nothing deployed on this Docker host"
        )
    elif isinstance(state.live, swarm.SwarmRelease):
        live = state.live
        out.print(f"Backend: service {live.name}  version {live.version}  revision {live.revision[:12]}")
        update = f", last update {state.update.replace('_', ' ')}" if state.update else ""
        out.print(f"  {state.health}{update}, image {live.digest or live.image}")
        for one in state.tasks:
            error = f"  ({one.error})" if one.error else ""
            out.print(
                f"  task {one.slot} on {one.node}: {one.state}, {one.health}, revision {one.revision[:12]}, "
                f"since {one.since} UTC{error}",
                markup=False,
            )
    else:
        host = state.live
        started = str(host.container.attrs.get("State", {}).get("StartedAt", ""))[:19].replace("T", " ")
        out.print(f"Backend: {host.name}  version {host.version}  revision {host.revision[:12]}")
        out.print(f"  health {state.health}, up since {started} UTC, image {host.digest or host.image}")
    if state.live is not None:
        out.print(f"  traffic {deploy_ops.traffic(project, config)}", markup=False)
    for note in state.notes:
        out.print(f"  [yellow]note[/] {escape(note)}")
    if config["NETLIFY_DEPLOY"] == "off":
        out.print("Netlify: not part of this target (NETLIFY_DEPLOY=off)")
    else:
        unknown = "(unknown: NETLIFY_AUTH_TOKEN/NETLIFY_SITE_ID not set)"
        out.print(f"Netlify: live deploy {state.netlify_live or unknown}")
    if state.maintenance:
        out.print("[yellow]Maintenance is on[/] (`inv maintenance off` ends it)")
    holder = state.lock_holder
    out.print(f"Deploy lock: {holder.describe() if holder else 'free'}")


@task(help={"release": "clear the lock a dead deploy left (says whose it was)", "env": ENV_HELP})
def lock(c: Context, release: bool = False, env: str = "") -> None:
    """Show who holds the deploy lock; --release clears a stale one."""
    project = proj.load()
    with _failing_cleanly():
        settings = _settings(env)
        if release:
            cleared = deploy_ops.release_lock(project, settings)
            out.print(
                f"Released the lock of {cleared.describe(hint=False)}" if cleared else "The deploy lock was free."
            )
            return
        holder = deploy_ops.lock_holder(project, settings)
    out.print(f"Held by {holder.describe()}" if holder else "The deploy lock is free.")


@task(help={"state": "on (JSON 503 with Retry-After) or off", "env": ENV_HELP})
def maintenance(c: Context, state: str, env: str = "") -> None:
    """Answer the API with a JSON 503 (on), or serve it again (off).

    The 503 carries Retry-After: for while you work on the API.
    """
    _help_if_asked(c, state, "maintenance")
    if state not in {"on", "off"}:
        raise Exit(f"error: inv maintenance takes on or off, not {state!r}", code=2)
    project = proj.load()
    with _failing_cleanly():
        deploy_ops.maintenance(project, _settings(env), state == "on")
    console.print(f"Maintenance is {state}.")


@task(
    help={
        "yes": "really remove (without it, nothing is removed and the task lists what would be)",
        "proxy": "also remove the host's shared proxy (container, network, volumes with its certificates) "
        "when no other project uses it",
        "env": ENV_HELP,
    }
)
def remove(c: Context, yes: bool = False, proxy: bool = False, env: str = "") -> None:
    """Take the project off its Docker host (a listing without --yes).

    Release containers, proxy site, records, network. Other projects on the host keep serving
    (Caddy is not reloaded). Netlify and the registry's images stay; the shared proxy stays
    unless --proxy is given and no other project uses it.
    """
    project = proj.load()
    with _failing_cleanly(), _stopping_on_signals(), _interrupted("Remove interrupted; run `inv remove --yes` again"):
        config = _settings(env)
        done = deploy_ops.remove(project, config, say=_say, dry_run=not yes, with_proxy=proxy)
    parts = [f"release container {name}" for name in done.containers]
    parts += ["its proxy site"] if done.site else []
    parts += [f"{done.records} release record(s)"] if done.records else []
    parts += [f"network {done.network}"] if done.network else []
    if not yes:
        where = engine.engine_address(config["DOCKER_HOST"])
        if not parts and done.proxy is None:
            out.print(f"Nothing of {project.slug} is on {where}: nothing to remove.", markup=False)
            return
        out.print(f"Would remove from {where}:", markup=False)
        for part in parts or [f"nothing of {project.slug}"]:
            out.print(f"  {part}", markup=False)
        if done.proxy is not None and done.proxy.users:
            users = ", ".join(done.proxy.users)
            out.print(f"  (not the shared proxy {done.proxy.name}: it serves {users} too)", markup=False)
        elif done.proxy is not None:
            out.print(f"  {done.proxy.describe()} (no other project uses it)", markup=False)
        flags = " --proxy" if proxy else ""
        flags += f" --env {env}" if env else ""
        out.print(f"Run `inv remove --yes{flags}` to do it.", markup=False)
        return
    if not parts and done.proxy is None:
        console.print(f"Nothing of {project.slug} was on this Docker host.")
        return
    console.print(f"[green]Removed[/] {escape(', '.join(parts) or f'nothing of {project.slug}')}")
    if done.proxy is not None and done.proxy.users:
        raise Exit(
            f"error: the shared proxy {done.proxy.name} stays: it serves {', '.join(done.proxy.users)} too "
            "(`inv remove --yes` in those projects first)",
            code=1,
        )
    if done.proxy is not None:
        console.print(f"[green]Removed[/] {escape(done.proxy.describe())}")


@task(help={"replicas": "the number of tasks, 1-100", "env": ENV_HELP})
def scale(c: Context, replicas: str, env: str = "") -> None:
    """Run N tasks of the app on the swarm; waits until N are up.

    For DEPLOY_TARGET=swarm; waits until exactly N are up and the others drained.
    """
    _help_if_asked(c, replicas, "scale")
    project = proj.load()
    with _failing_cleanly(), _stopping_on_signals(), _interrupted("Scale interrupted; Swarm goes on to the new count"):
        count = options.whole_number(replicas, "replicas", 1, 100)
        config = _settings(env)
        done = deploy_ops.scale(project, config, count, say=_say)
    console.print(f"[green]Scaled[/] {done.name} to {done.running} task{'s' if done.running != 1 else ''}")
    if config.sources.get("REPLICAS", "default") == "default":
        console.print(f"The next `inv deploy` keeps {count} task{'s' if count != 1 else ''} (REPLICAS is not set).")
    else:
        console.print(
            f"Note: REPLICAS={config['REPLICAS']} ({config.sources['REPLICAS']}) sets the count at the next deploy"
        )


@task(
    name="swarm-init",
    help={
        "advertise_addr": "the address other nodes reach this one at (default 127.0.0.1: a one-node swarm to try it)",
        "env": ENV_HELP,
    },
)
def swarm_init(c: Context, advertise_addr: str = "", env: str = "") -> None:
    """Make DOCKER_HOST's engine a one-node swarm (its manager).

    To deploy to with DEPLOY_TARGET=swarm.
    """
    with _failing_cleanly():
        client = engine.connect(_settings(env)["DOCKER_HOST"])
        done = swarm.init(client, advertise_addr)
    if done.created:
        console.print(f"[green]Swarm initialised[/]: this engine is its manager (node {done.node[:12]}).")
    else:
        console.print(f"This engine is already a manager of a swarm of {done.nodes} node(s) (node {done.node[:12]}).")
    console.print(
        "Deploy to it with `DEPLOY_TARGET=swarm` in .env (or `inv deploy --target swarm`). To add nodes, run "
        "`docker swarm join-token worker` here and the command it prints on each new node."
    )


@task(
    name="logs",
    help={
        "follow": "keep printing lines as they come (Ctrl-C stops)",
        "since": "only lines after this: a duration (30s, 10m, 2h, 1d) or a time (2026-12-03T10:00:00Z)",
        "service": "app (the live and the previous release), proxy (the shared Caddy), or all",
        "json": "the JSON lines as the app wrote them (other lines wrapped as JSON)",
        "lines": "the last N lines, merged (default 200; 0: all)",
        "env": ENV_HELP,
    },
)
def logs_(
    c: Context,
    follow: bool = False,
    since: str = "",
    service: str = "app",
    json: bool = False,
    lines: str = "200",
    env: str = "",
) -> None:
    """Show the live and the previous release's logs, merged.

    Read from the target host and merged in time order.
    """
    project = proj.load()
    with _failing_cleanly():
        config = _settings(env)
        count = options.whole_number(lines, "lines", 0, 1_000_000)
        after = applogs.since_of(since)
        backend = deploy_ops.monitor_target(config)
        found = applogs.sources(backend, service)
        if not found:
            console.print(f"No {service} containers of {project.slug} on this Docker host: run `inv deploy`.")
            return
        console.print(f"[dim]{', '.join(c.name or '' for c in found)}[/]")
        if not follow:
            for line in applogs.read(found, after, count):
                out.print(applogs.show(line, json), markup=False, highlight=False)
            return
        stop = threading.Event()
        with _stopping_on_signals():
            try:
                find = functools.partial(applogs.sources, backend, service)
                for line in applogs.follow(find, after, stop, count):
                    out.print(applogs.show(line, json), markup=False, highlight=False)
            except KeyboardInterrupt:
                pass
            finally:
                stop.set()


@task(
    help={
        "once": "one look, then exit: non-zero when something is wrong (for cron or CI)",
        "json": "JSON: one object per alert, or with --once one status object",
        "env": ENV_HELP,
    }
)
def monitor(c: Context, once: bool = False, json: bool = False, env: str = "") -> None:
    """Watch the live releases and alert when something goes wrong.

    Deaths, OOM kills, failing health checks, restart loops, CPU and memory near their limits.
    Each alert once, to the terminal and ALERT_WEBHOOK_URL, and when it resolves.
    """
    import json as jsonlib

    project = proj.load()
    with _failing_cleanly():
        config = _settings(env)
        thresholds = monitor_ops.Thresholds(
            cpu=config.number("MONITOR_CPU_PERCENT") / 100, memory=config.number("MONITOR_MEMORY_PERCENT") / 100
        )
        if once:
            # Could not look: a problem it can name, or the engine gone.
            look_failed: tuple[type[Exception], ...] = (OpsError, *engine.LOST_ERRORS)
            try:
                backend = deploy_ops.monitor_target(config)
                found = monitor_ops.snapshot(
                    backend.client, project.slug, watched=backend.watched(), thresholds=thresholds
                )
            except look_failed as exc:
                # Could not look: exit 2, not 1 (1 is "looked, and something is wrong").
                reason = str(exc) if isinstance(exc, OpsError) else engine.lost(exc)
                if json:
                    out.print_json(jsonlib.dumps({"project": project.slug, "ok": False, "error": reason}))
                raise Exit(f"error: {reason}", code=2) from None
            if json:
                out.print_json(jsonlib.dumps(found.as_json(project.slug)))
            else:
                for line in found.lines():
                    out.print(line, markup=False)
                for problem in found.problems:
                    out.print(f"[red]problem[/] {escape(problem)}")
                if found.ok:
                    out.print("[green]OK[/]")
            if not found.ok:
                raise Exit(code=1)
            return
        backend = deploy_ops.monitor_target(config)
        webhook = (
            monitor_ops.Webhook(config["ALERT_WEBHOOK_URL"], project.slug, warn=_warn)
            if config["ALERT_WEBHOOK_URL"]
            else None
        )

        def alert(found: monitor_ops.Alert) -> None:
            if json:
                out.print(jsonlib.dumps(found.as_json(project.slug)), markup=False, highlight=False)
            else:
                colour = "green" if found.resolved else "red" if found.severity == "critical" else "yellow"
                out.print(f"[{colour}]{escape(found.text(project.slug))}[/]")
            if webhook is not None:
                webhook.send(found)

        watcher = monitor_ops.Monitor(
            backend.client, project.slug, watched=backend.watched(), on_alert=alert, thresholds=thresholds
        )
        where = "no webhook (ALERT_WEBHOOK_URL is not set)" if webhook is None else "the webhook"
        console.print(
            f"Watching {project.slug}'s releases on {config['DOCKER_HOST'] or 'the local engine'}; "
            f"alerts here and to {where}. Ctrl-C stops."
        )
        with _stopping_on_signals():
            try:
                watcher.run()
            except KeyboardInterrupt:
                console.print("Stopped watching.")
            finally:
                watcher.stop()
                if webhook is not None:
                    webhook.close()


ns = Collection(
    build,
    run,
    smoke,
    clean,
    relock,
    dev,
    edge,
    check,
    deploy,
    releases,
    rollback,
    status,
    lock,
    maintenance,
    remove,
    scale,
    swarm_init,
    logs_,
    monitor,
    preview,
    canary,
)


def collection(root: Path) -> Collection:
    """The tasks, working on the project in ``root``: what a project's ``tasks.py`` loads
    (``ns = collection(Path(__file__).resolve().parent)``), so that ``inv`` works on that project
    from any folder, ``inv -r`` too. Warns once when ``ops/`` is left from an older template."""
    proj.use(root)
    _warn_of_leftover_ops()
    return ns
