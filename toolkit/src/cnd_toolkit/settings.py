"""The tasks' settings: one object, read from the environment, then `.env.NAME`, then `.env`.

The first place that sets a name wins: a value in the environment (a CI secret, a one-off
``IMAGE=... inv deploy``) beats `.env.NAME` (``--env NAME``: staging, production), which beats
`.env` (this machine's defaults). An empty variable in the environment (``BACKEND_URL= inv
deploy``, or a CI secret that is not defined) and a bare ``NAME`` line without ``=`` in a file
count as unset: the next place decides, and a warning says which (``NAME=`` in a file is a
value). Neither file is committed (.gitignore) and neither reaches the image (.dockerignore).
Secrets (the Netlify token, the registry password, the metrics token, the webhook URL: every
setting marked ``secret``) are held apart from everything that prints: ``repr``,
:meth:`Settings.describe` and error messages never show them, and once loaded they are masked in
every error and every line a task prints (:mod:`cnd_toolkit.redact`). They stay with the tooling: APP_ENV
cannot pass them (or the registry user name, a ``credential``) to the app, and the processes the
tooling starts get the environment without them (:func:`child_environment`).

python-dotenv reads the files (the de facto format: ``export``, quotes, ``#`` comments, ``${VAR}``
expansion off), so what works with docker compose's ``env_file`` or direnv works here.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import ipaddress
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dotenv.parser import parse_stream

from cnd_toolkit import redact
from cnd_toolkit.errors import OpsError

# The variables the server reads (gunicorn.conf.py, api/config.py): `inv run` passes them from the
# shell to a local container, and a deploy passes them (plus the names in APP_ENV) to the release.
SERVER_VARIABLE_PREFIXES = ("APP_", "GUNICORN_")
SERVER_VARIABLES = frozenset({"WEB_CONCURRENCY", "ACCESS_LOG", "FORWARDED_ALLOW_IPS"})


def whole_number(value: str, low: int, high: int) -> int | None:
    """``value`` as a whole number in ``low..high``, else None: ASCII digits only (``str.isdigit``
    takes "²", which ``int`` refuses) and no more of them than ``high`` has (``int`` refuses a
    number of over 4,300 digits, and takes its time on one of thousands)."""
    if not (value.isascii() and value.isdigit()) or len(value.lstrip("0")) > len(str(high)):
        return None
    number = int(value.lstrip("0") or "0")
    return number if low <= number <= high else None


# Variables the image sets and the deploy relies on (PORT: the proxy's upstream and the health
# check; METRICS_PORT: the metrics listener), or that change what the interpreter or the loader run.
IMAGE_VARIABLES = frozenset(
    {"PORT", "METRICS_PORT", "PROMETHEUS_MULTIPROC_DIR", "PATH", "HOME", "HOSTNAME", "GUNICORN_CMD_ARGS"}
)
IMAGE_VARIABLE_PREFIXES = ("PYTHON", "LD_")


def image_owns(name: str) -> bool:
    """Whether APP_ENV may not pass ``name``: the image's own (see :data:`IMAGE_VARIABLES`)."""
    return name.upper() in IMAGE_VARIABLES or name.upper().startswith(IMAGE_VARIABLE_PREFIXES)


def is_server_variable(name: str) -> bool:
    # GUNICORN_CMD_ARGS beats gunicorn.conf.py (--bind would move the port the proxy and the health
    # check use): the image's own, never passed on.
    return (name in SERVER_VARIABLES or name.startswith(SERVER_VARIABLE_PREFIXES)) and not image_owns(name)


ENV_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")


class SettingsError(OpsError):
    """A setting is missing or invalid; the message names it, where it came from and what is valid."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    help: str
    # Never shown, masked wherever it would be; with ``credential``, kept from the app and from child processes.
    secret: bool = False
    kind: str = "text"  # text, int, port, url, image, token, name (of a container), choice, steps
    low: int = 0
    high: int = 0
    choices: tuple[str, ...] = ()
    # Half of a login without being secret itself (a registry user name): shown, but like a secret
    # never given to the app (APP_ENV) or to a process the tooling starts.
    credential: bool = False
    # A URL that carries a secret (a token in its requests, a key in its path): https only, except to
    # this machine (127.0.0.0/8, ::1, localhost), where a test or a tunnel answers.
    tls: bool = False

    @property
    def withheld(self) -> bool:
        """Kept from the app and from child processes: a secret, or a credential."""
        return self.secret or self.credential


SETTINGS: tuple[Setting, ...] = (
    Setting("DOCKER_HOST", "", "Docker engine the tasks use (unix://, tcp://, ssh://); empty: the local socket"),
    Setting(
        "DEPLOY_TARGET",
        "host",
        "where `inv deploy` runs the app: host (one Docker host, blue/green) or swarm (a Docker Swarm service)",
        kind="choice",
        choices=("host", "swarm"),
    ),
    Setting(
        "REPLICAS",
        "2",
        "tasks of the app on a swarm; a deploy keeps the current count unless this is set",
        kind="int",
        low=1,
        high=100,
    ),
    Setting("IMAGE", "", "registry path the image is pushed to, no tag (default: your Copier answer)", kind="image"),
    Setting(
        "REGISTRY_PUSH",
        "on",
        "off: `inv deploy` runs the image on the engine that built it, without pushing it to IMAGE "
        "(a deploy to this machine; DEPLOY_TARGET=host only)",
        kind="choice",
        choices=("on", "off"),
    ),
    Setting("BASE_IMAGE", "", "base image for builds (default: the Dockerfile's)", kind="image"),
    Setting("REGISTRY_USERNAME", "", "registry login, when the registry needs one", credential=True),
    Setting("REGISTRY_PASSWORD", "", "registry password or token", secret=True),
    Setting(
        "BACKEND_URL", "", "public origin of the API Netlify proxies /api/* to (default: netlify.toml's)", kind="url"
    ),
    Setting("PROXY_IMAGE", "caddy:2", "image of the host's shared Caddy", kind="image"),
    Setting("PROXY_NAME", "cnd-proxy", "container name of the host's shared proxy (one per host)", kind="name"),
    Setting("PROXY_HTTP_PORT", "80", "host port Caddy answers HTTP on", kind="port", low=1, high=65535),
    Setting("PROXY_HTTPS_PORT", "443", "host port Caddy answers HTTPS on", kind="port", low=1, high=65535),
    Setting("KEEP_RELEASES", "3", "stopped releases kept for `inv rollback`", kind="int", low=0, high=100),
    Setting(
        "RELEASE_MEMORY_MB",
        "512",
        "memory limit of each release (MiB): every gunicorn worker (WEB_CONCURRENCY) must fit in it",
        kind="int",
        low=64,
        high=1024 * 1024,
    ),
    Setting(
        "RELEASE_CPU_PERCENT",
        "100",
        "CPU limit of each release, in percent of one core (200: two cores)",
        kind="int",
        low=10,
        high=100 * 256,
    ),
    Setting(
        "HEALTH_TIMEOUT",
        "60",
        "seconds a new release (and a Netlify draft's smoke test) has to turn healthy",
        kind="int",
        low=1,
        high=3600,
    ),
    Setting(
        "NETLIFY_DEPLOY",
        "on",
        "off: `inv deploy` ships the backend only, as with --backend-only (a deploy to this machine: "
        "`inv edge` serves public/ in front of it)",
        kind="choice",
        choices=("on", "off"),
    ),
    Setting("NETLIFY_AUTH_TOKEN", "", "Netlify personal access token", secret=True, kind="token"),
    Setting("NETLIFY_SITE_ID", "", "the Netlify site's API id"),
    Setting(
        "NETLIFY_API_URL",
        "https://api.netlify.com/api/v1",
        "Netlify's API (https; http:// only to this machine, as in tests)",
        kind="url",
        tls=True,
    ),
    Setting(
        "NETLIFY_PRODUCTION_BRANCH",
        "main",
        "the Netlify site's production branch: `inv deploy --canary` splits its visitors between it and `canary`",
    ),
    Setting(
        "APP_ENV",
        "",
        "more variable names, comma-separated, that a deploy passes to the app (from the environment or the files; "
        "never the deploy's secrets)",
    ),
    Setting(
        "ALERT_WEBHOOK_URL",
        "",
        'where `inv monitor` posts alerts (Slack-compatible JSON, {"text": ...}); secret: the URL holds the key',
        secret=True,
        kind="url",
        tls=True,
    ),
    Setting(
        "MONITOR_CPU_PERCENT",
        "90",
        "`inv monitor` alerts at this share of a release's CPU limit",
        kind="int",
        low=1,
        high=100,
    ),
    Setting(
        "MONITOR_MEMORY_PERCENT",
        "90",
        "`inv monitor` alerts at this share of a release's memory limit",
        kind="int",
        low=1,
        high=100,
    ),
    Setting(
        "CANARY_STEPS",
        "10,50,100",
        "`inv deploy --canary`: the canary's share of the API's requests at each step, in percent, ending at 100 "
        "with one below it at least (on a swarm each task is a step)",
        kind="steps",
    ),
    Setting(
        "CANARY_INTERVAL",
        "60",
        "`inv deploy --canary`: seconds each step lasts before its gate",
        kind="int",
        low=1,
        high=3600,
    ),
    Setting(
        "CANARY_MAX_ERROR_PERCENT",
        "1",
        "a canary fails when its 5xx ratio is above the live release's by more than this many percentage points",
        kind="int",
        low=0,
        high=100,
    ),
    Setting(
        "CANARY_MAX_P95_PERCENT",
        "150",
        "a canary fails when its p95 latency is above this percentage of the live release's (and 25 ms slower)",
        kind="int",
        low=100,
        high=10000,
    ),
    Setting(
        "CANARY_MIN_REQUESTS",
        "20",
        "answers a canary needs in a step to be judged on ratios (fewer: the step waits up to two more intervals)",
        kind="int",
        low=1,
        high=1_000_000,
    ),
    Setting(
        "CANARY_STICKY",
        "off",
        "cookie: a client stays on the colour it first got for the whole canary (Caddy's cookie policy)",
        kind="choice",
        choices=("off", "cookie"),
    ),
    Setting(
        "METRICS_TOKEN",
        "",
        "lets /metrics through the public API origin with Authorization: Bearer <it> (32+ characters; "
        "empty: only the internal metrics port); the release gets its SHA-256, never the token",
        secret=True,
        kind="token",
        low=32,
    ),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}
# Docker's container names, kept short: the proxy's network and volumes are named after it.
_CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,59}\Z")
_IMAGE = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?"  # registry host (and port) or first path part
    r"(/[a-z0-9]+([._-][a-z0-9]+)*)*"  # path
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"  # tag
    r"(@sha256:[a-f0-9]{64})?\Z"  # digest (IMAGE itself refuses one: deploy_problems)
)
# Names reserved for documentation and tests (RFC 2606, RFC 6761): never a deploy's API.
RESERVED_DOMAINS = ("example.com", "example.org", "example.net")
RESERVED_TLDS = ("test", "invalid", "example")


def withheld_names() -> frozenset[str]:
    """The settings kept from the app and from child processes: every one the catalogue marks
    secret or credential (read when asked, so a new secret setting is covered by its flag alone)."""
    return frozenset(setting.name for setting in SETTINGS if setting.withheld)


# A value shorter than this is not looked for inside other variables: a secret that short would
# match ordinary values (a port, a word), and real secrets are longer.
ALIAS_MIN_LENGTH = 8


# A variable name a container's environment can carry and a shell can export.
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# A variable whose name says it holds a secret (SECRET_KEY, DB_PASSWORD, STRIPE_API_KEY, ...): what
# secret scanners flag by name, as its value cannot say.
_SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|PASSPHRASE|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL|DSN)", re.I)


def looks_secret(name: str) -> bool:
    """Whether a variable's name says it holds a secret (an app secret APP_ENV passes on)."""
    return bool(_SECRET_NAME.search(name))


def app_env_names(value: str) -> list[str]:
    """The names APP_ENV lists, in order, without blanks or repeats."""
    return list(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine: 127.0.0.0/8, ::1, or ``localhost``."""
    host = host.lower().removesuffix(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_problem(name: str, url: str, *, secret: bool = False) -> str:
    """One line when ``url`` (the setting ``name``, which carries a secret) would send it in clear:
    a scheme other than https, or http to a host that is not this machine; else ``""``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return ""  # not a URL at all: the URL check says so
    scheme = parts.scheme.lower()
    if scheme == "https" or (scheme == "http" and is_loopback(host)):
        return ""
    what = "the token it carries" if not secret else "the key it holds"
    if scheme == "http":
        where = "a host that is not this machine" if secret else f"{host}, which is not this machine"
        return (
            f"{name} is http:// to {where}: {what} would cross the network in clear; use https:// "
            "(http:// is for 127.0.0.1, [::1] and localhost only)"
        )
    return f"{name} is not an https URL: use https:// (http:// only for 127.0.0.1, [::1] and localhost)"


def reserved_host(host: str) -> bool:
    """Whether ``host`` is a documentation name (api.example.com, x.test) rather than a real one."""
    host = host.lower().rstrip(".")
    return host.rpartition(".")[2] in RESERVED_TLDS or any(
        host == domain or host.endswith("." + domain) for domain in RESERVED_DOMAINS
    )


@dataclass(frozen=True)
class Settings:
    """Every setting as text, where each came from, and what in the files looked like a typo."""

    values: Mapping[str, str] = field(repr=False)
    sources: Mapping[str, str]
    env_name: str = ""
    warnings: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> str:
        return self.values[name]

    def number(self, name: str) -> int:
        return int(self.values[name])

    def missing(self, names: Iterable[str]) -> list[str]:
        """A line per required setting that is empty, saying how to set it."""
        where = f".env.{self.env_name}" if self.env_name else ".env"
        # A secret never goes in .env.local, which the template commits: .env (git-ignored) instead.
        secret_where = ".env" if self.env_name == "local" else where
        return [
            f"{name} is not set ({BY_NAME[name].help}): export it, or add {name}=... to "
            f"{secret_where if BY_NAME[name].withheld else where}"
            for name in names
            if not self.values.get(name)
        ]

    def deploy_problems(self, names: Iterable[str] = ("BACKEND_URL", "IMAGE")) -> list[str]:
        """A line per setting among ``names`` that is valid but cannot be deployed to: a BACKEND_URL
        on a reserved example host (netlify.toml's placeholder), an IMAGE with a tag or digest.
        Empty values are :meth:`missing`'s to report. ``inv dev``, ``inv edge`` and ``inv check``
        run with the placeholder; only a deploy's preflight asks this."""
        where = f".env.{self.env_name}" if self.env_name else ".env"
        problems = []
        wanted = set(names)
        url = self.values.get("BACKEND_URL", "")
        if "BACKEND_URL" in wanted and url:
            try:
                host = urlsplit(url).hostname or ""
            except ValueError:
                host = ""
            if reserved_host(host):
                problems.append(
                    f"BACKEND_URL={url!r} ({self.sources.get('BACKEND_URL', 'default')}) is a reserved example "
                    f"host, not your API: set BACKEND_URL to the API's public origin (export it, or add "
                    f"BACKEND_URL=https://... to {where})"
                )
        image = self.values.get("IMAGE", "")
        if "IMAGE" in wanted and image and ("@" in image or ":" in image.rpartition("/")[2]):
            problems.append(
                f"IMAGE={image!r} ({self.sources.get('IMAGE', 'default')}) has a tag or digest: give the registry "
                "path alone (e.g. ghcr.io/acme/service); each deploy tags the image with its revision"
            )
        return problems

    def override(self, name: str, value: str, source: str) -> Settings:
        """These settings with ``name`` set to ``value`` (checked like any other), from ``source``
        (a task's option, e.g. ``--target``)."""
        _check(BY_NAME[name], value, source)
        if BY_NAME[name].secret:
            redact.remember(name, value)
        return dataclasses.replace(self, values={**self.values, name: value}, sources={**self.sources, name: source})

    def describe(self) -> list[str]:
        """``NAME = value  (source)`` for each setting; secrets say only whether they are set."""
        lines = []
        for setting in SETTINGS:
            value = self.values.get(setting.name, "")
            shown = ("(set)" if value else "(not set)") if setting.secret else (value or "(empty)")
            lines.append(f"{setting.name} = {shown}  ({self.sources.get(setting.name, 'default')})")
        return lines

    def secrets(self) -> dict[str, str]:
        """``NAME -> value`` of every secret setting that is set."""
        return {
            setting.name: self.values[setting.name]
            for setting in SETTINGS
            if setting.secret and self.values.get(setting.name)
        }

    def app_env_problems(self) -> list[str]:
        """One line when the app would get a deploy secret (else none): APP_ENV naming a secret or
        credential setting, or a variable the app gets (a server variable, an APP_ENV name) holding a
        secret's value under another name. Each deploy's preflight asks this before anything is built,
        and :meth:`runtime_environment` refuses the same, so no path passes one to a container."""
        listed = app_env_names(self.values.get("APP_ENV", ""))
        owned = [name for name in listed if image_owns(name)]
        if owned:
            return [
                f"APP_ENV ({self.sources.get('APP_ENV', 'default')}) lists {', '.join(owned)}, which the image sets "
                "for itself (the proxy, the health check and the interpreter rely on it): take it out"
            ]
        withheld = withheld_names()
        named = [name for name in listed if name in withheld]
        secrets = {name: value for name, value in self.secrets().items() if len(value) >= ALIAS_MIN_LENGTH}
        copies = []
        for name, value in sorted(self._passed(listed).items()):
            if name in withheld:
                continue
            holds = [secret for secret, secret_value in secrets.items() if secret_value in value]
            if holds:
                source = self.sources.get(name, "environment")
                copies.append(f"{name} ({source}) holds the value of {' and '.join(holds)}")
        if not named and not copies:
            return []
        found = []
        if named:
            found.append(f"APP_ENV ({self.sources.get('APP_ENV', 'default')}) lists {', '.join(named)}")
        found += copies
        fix = (
            "take them out: the deploy's secrets stay with the deploy; if the app needs a credential, "
            "give it one of its own under another name"
        )
        if "METRICS_TOKEN" in named:
            fix += " (for /metrics the release already gets METRICS_TOKEN's SHA-256)"
        return [f"the app would get the deploy's secrets: {'; '.join(found)}; {fix}"]

    def app_env_unset(self, *, odd: bool = True, unset: bool = True) -> list[str]:
        """One line when APP_ENV lists a name that is not a variable name (``A B``, ``A;B``) or that
        nothing sets (a typo, a CI secret not mapped into the step's ``env:``): the app would start
        without it, silently. Each deploy's preflight refuses it before anything is built; ``inv
        check`` refuses the first (``odd``) and warns of the second (``unset``: CI may set it)."""
        listed = app_env_names(self.values.get("APP_ENV", ""))
        if not listed:
            return []
        source = self.sources.get("APP_ENV", "default")
        odd_names = [name for name in listed if odd and not VARIABLE_NAME.fullmatch(name)]
        unset_names = [n for n in listed if unset and VARIABLE_NAME.fullmatch(n) and not self.values.get(n)]
        found = []
        if odd_names:
            found.append(
                f"APP_ENV ({source}) lists {', '.join(map(repr, odd_names))}, not variable names: separate names "
                "with commas"
            )
        if unset_names:
            found.append(
                f"APP_ENV ({source}) lists {', '.join(unset_names)}, set nowhere (environment, .env files): the app "
                "would start without it; set it (in CI, map the secret into the deploy step's env:) or take it out "
                "of APP_ENV"
            )
        return ["; ".join(found)] if found else []

    def _passed(self, listed: Iterable[str]) -> dict[str, str]:
        wanted = set(listed)
        return {
            name: value
            for name, value in sorted(self.values.items())
            if (is_server_variable(name) and name != "APP_ENV") or name in wanted
        }

    def runtime_environment(self) -> dict[str, str]:
        """What a deployed container gets: the server's variables and the names listed in APP_ENV.

        Raises :class:`SettingsError` (one line, see :meth:`app_env_problems`) when that would
        include a deploy secret: every path to a container (a release, a swarm service, a canary,
        the smoke run, `inv run`) reads the environment here."""
        problems = self.app_env_problems()
        if problems:
            raise SettingsError(problems[0])
        return self._passed(app_env_names(self.values.get("APP_ENV", "")))


# Warnings shown at most: then one line saying how many more there are.
MAX_WARNINGS = 20

# A settings file is a few lines; one far larger is not one (a log, a dump, /dev/zero behind a link).
MAX_ENV_FILE = 256 * 1024


def settings_file(path: Path) -> bool:
    """Whether the settings file ``path`` is there (False: it does not exist). Anything there that
    is not a regular file of at most :data:`MAX_ENV_FILE` bytes is a :class:`SettingsError`: a
    directory, a FIFO (reading it would wait forever), a device, a link to nothing."""
    try:
        found = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise SettingsError(f"{path.name} is a link to {os.readlink(path)}, which does not exist") from None
        return False
    except OSError as exc:
        raise SettingsError(f"{path.name}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(found.st_mode):
        raise SettingsError(f"{path.name} is a directory; settings go in a file of NAME=value lines")
    if not stat.S_ISREG(found.st_mode):
        raise SettingsError(
            f"{path.name} is not a regular file (a FIFO, socket or device); write a file of NAME=value lines"
        )
    if found.st_size > MAX_ENV_FILE:
        raise SettingsError(f"{path.name} is {found.st_size:,} bytes; a settings file holds NAME=value lines, not that")
    return True


def read_env_file(path: Path) -> dict[str, tuple[str, int]]:
    """``NAME -> (value, line)`` from a dotenv file; a line it cannot read is a :class:`SettingsError`.
    A bare ``NAME`` (no ``=``) sets nothing: it counts as unset."""
    return _read_env_file(path)[0]


def _read_env_file(path: Path) -> tuple[dict[str, tuple[str, int]], list[tuple[str, int]]]:
    """The values, and ``(NAME, line)`` of each bare ``NAME`` line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path.name}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:  # unreadable (permissions), or gone since it was found
        raise SettingsError(f"{path.name} cannot be read: {exc.strerror or exc}") from None
    values: dict[str, tuple[str, int]] = {}
    bare: list[tuple[str, int]] = []
    for binding in parse_stream(io.StringIO(text)):
        # python-dotenv starts a binding at the blank lines before it: its own line is further on.
        skipped = binding.original.string[: len(binding.original.string) - len(binding.original.string.lstrip())]
        line = binding.original.line + skipped.count("\n")
        if binding.error:
            message = f"{path.name}:{line}: cannot read this line; write NAME=value (quote values with spaces)"
            raise SettingsError(message)
        if binding.key is None:
            continue
        if binding.value is None:  # `NAME` alone: python-dotenv and docker compose set nothing either
            bare.append((binding.key, line))
        else:
            values[binding.key] = (binding.value, line)
    return values, bare


def _host_ok(host: str) -> bool:
    """An IP address, or a DNS name: dot-separated labels of 1..63 characters that IDNA can encode."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    for label in labels:
        try:
            encoded = label.encode("idna")
        except UnicodeError:
            return False
        if not 1 <= len(encoded) <= 63 or not re.fullmatch(rb"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?", encoded):
            return False
    return True


def _check(setting: Setting, value: str, source: str) -> None:
    if not value:
        return
    # A secret's value is never shown, and neither is a URL with a user or password in it.
    hidden = setting.secret or (setting.kind == "url" and "@" in value)
    shown = repr(value) if len(value) <= 80 else f"{value[:60]!r}... ({len(value):,} characters)"
    where = f"{setting.name} ({source})" if hidden else f"{setting.name}={shown} ({source})"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise SettingsError(f"{setting.name} ({source}) contains a control character; use plain text")
    if setting.kind == "token" and not all("!" <= c <= "~" for c in value):
        # Never the value, nor the character: a token is secret, and a part of it is too.
        raise SettingsError(
            f"{setting.name} ({source}) has a character no token has: only printable ASCII without spaces "
            "is allowed; copy the token again"
        )
    if setting.kind == "token" and len(value) < setting.low:
        raise SettingsError(
            f"{setting.name} ({source}) is {len(value)} characters; use at least {setting.low} "
            "(for example `openssl rand -hex 32`)"
        )
    if setting.kind in {"int", "port"}:
        if whole_number(value, setting.low, setting.high) is None:
            raise SettingsError(f"{where} is not a whole number in {setting.low}..{setting.high}")
    elif setting.kind == "url":
        if any(c.isspace() for c in value):
            raise SettingsError(f"{where} contains whitespace; remove it (a URL has no spaces, at either end too)")
        try:
            parts = urlsplit(value)
            parts.hostname  # noqa: B018 (parses the host: an unclosed or bad [IPv6] raises)
        except ValueError:
            raise SettingsError(
                f"{where} is not a URL: its host is malformed (an IPv6 address goes in [brackets])"
            ) from None
        if not value.startswith(("http://", "https://")) and parts.scheme in {"http", "https"}:
            raise SettingsError(f"{where} has its scheme in capitals; write it as {parts.scheme}://")
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise SettingsError(f"{where} is not an http(s) URL, for example https://api.example.com")
        try:
            port = parts.port
        except ValueError:  # not a number, or over 65535
            port = 0
        if port == 0:
            raise SettingsError(f"{where} has a port that is not a number in 1..65535; fix the port, or leave it out")
        if not _host_ok(parts.hostname or ""):
            raise SettingsError(
                f"{where} has a host name no DNS name can be (an empty label, a label over 63 characters, "
                "or characters no host name has)"
            )
        if parts.password is not None and not setting.secret:
            raise SettingsError(
                f"{where} has a password in it, which would be shown wherever the setting is (inv check, "
                "errors): remove user:password@ from it"
            )
        if setting.tls:
            problem = plain_http_problem(setting.name, value, secret=setting.secret)
            if problem:
                raise SettingsError(f"{problem} ({source})")
        if setting.name == "BACKEND_URL":  # the build step's own rule, so that inv check passes what a deploy does
            from cnd_toolkit.netlify.redirects import BackendUrlError, check_backend_url

            try:
                check_backend_url(value, allow_local=True)
            except BackendUrlError as exc:
                raise SettingsError(f"{exc} ({source})") from None
    elif setting.kind == "steps":
        from cnd_toolkit.release.canary import parse_steps  # here: the settings load nothing they do not need

        try:
            parse_steps(value)
        except OpsError as exc:
            raise SettingsError(f"{exc} ({source})") from None
    elif setting.kind == "choice" and value not in setting.choices:
        raise SettingsError(f"{where} is not one of {', '.join(setting.choices)}")
    elif setting.kind == "image" and not _IMAGE.match(value):
        raise SettingsError(f"{where} is not an image reference, for example ghcr.io/acme/service")
    elif setting.kind == "name" and not _CONTAINER_NAME.match(value):
        raise SettingsError(
            f"{where} is not a container name: 1-60 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


def project_defaults(root: Path) -> dict[str, tuple[str, str]]:
    """Defaults that come from the project itself: ``NAME -> (value, where)``.

    IMAGE is your Copier answer (pyproject.toml's ``[tool.cnd] image``); BACKEND_URL is what netlify.toml's
    ``[build.environment]`` sets, read through the one Netlify config model.
    """
    from cnd_toolkit import project
    from cnd_toolkit.netlify import config

    defaults = {"IMAGE": (project.load(root).registry_image, "pyproject.toml [tool.cnd] image")}
    build = config.load(root).build if (root / "netlify.toml").is_file() else {}
    environment = build.get("environment") if isinstance(build, dict) else None
    if isinstance(environment, dict) and isinstance(environment.get("BACKEND_URL"), str):
        defaults["BACKEND_URL"] = (environment["BACKEND_URL"], "netlify.toml [build.environment]")
    return defaults


def load(
    root: Path,
    env_name: str = "",
    environ: Mapping[str, str] | None = None,
    defaults: Mapping[str, tuple[str, str]] | None = None,
) -> Settings:
    """The settings for ``root``: the environment, then ``.env.<env_name>`` (which must exist), then
    ``.env``, then ``defaults`` (see :func:`project_defaults`), then each setting's own default."""
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, dict[str, tuple[str, int]]]] = []
    bare: list[tuple[str, str, int]] = []  # (file, NAME, line) of each bare NAME line
    files: list[Path] = []
    if env_name:
        if not ENV_NAME.match(env_name):
            raise SettingsError(f"--env {env_name!r}: use a short lowercase name such as staging or production")
        named = root / f".env.{env_name}"
        if not settings_file(named):
            message = f"--env {env_name}: {named.name} does not exist; create it with the settings for {env_name}"
            raise SettingsError(message)
        files.append(named)
    if settings_file(root / ".env"):
        files.append(root / ".env")
    for path in files:
        entries, bare_lines = _read_env_file(path)
        layers.append((path.name, entries))
        bare += [(path.name, name, line) for name, line in bare_lines]

    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for file_name, entries in reversed(layers):  # .env first, so .env.NAME overrides it
        for name, (value, line) in entries.items():
            values[name] = value
            sources[name] = f"{file_name}:{line}"
    empty_in_environment = []

    def from_environment(name: str) -> None:
        value = environ[name]
        if value == "":  # how CI passes a secret that is not defined: not a choice to blank the files
            empty_in_environment.append(name)
            return
        values[name] = value
        sources[name] = "environment"

    for name in environ:
        if name in BY_NAME or is_server_variable(name):
            from_environment(name)
    # The names APP_ENV lists come from the environment as well (a CI secret such as DATABASE_URL),
    # which beats the files as for every other name.
    for name in app_env_names(values.get("APP_ENV", "")):
        if name in environ and not (name in BY_NAME or is_server_variable(name)):
            from_environment(name)
    for setting in SETTINGS:
        if setting.name not in values or values[setting.name] == "":
            value, source = (defaults or {}).get(setting.name, (setting.default, "default"))
            if value or setting.name not in values:
                values[setting.name] = value
                sources[setting.name] = source
        _check(setting, values[setting.name], sources[setting.name])
        if setting.secret:
            redact.remember(setting.name, values[setting.name])

    def instead(name: str) -> str:
        if not values.get(name):
            return f"{name} stays unset"
        source = sources[name]
        return f"{name} comes from {'its default' if source == 'default' else source} instead"

    warnings = [
        f"{name} is empty in the environment, which counts as unset; {instead(name)}"
        for name in sorted(empty_in_environment)
        if values.get(name)  # else nothing changes: unset either way
    ]
    warnings += [
        f"{file_name}:{line}: {name} has no =, which counts as unset; {instead(name)}" for file_name, name, line in bare
    ]
    for file_name, entries in layers:
        names = [(name, line) for name, (_, line) in entries.items()]
        names += [(name, line) for bare_file, name, line in bare if bare_file == file_name]
        for name, line in names:
            if len(warnings) > MAX_WARNINGS:  # enough to fix for now: the rest is looked at next time
                break
            if name in BY_NAME or is_server_variable(name):
                continue
            if image_owns(name) and name.upper().startswith(SERVER_VARIABLE_PREFIXES):  # GUNICORN_CMD_ARGS
                warnings.append(
                    f"{file_name}:{line}: {name} is the image's own, never passed to the server (it would move the "
                    "port the proxy and the health check use); set GUNICORN_* settings or gunicorn.conf.py instead"
                )
                continue
            close = difflib.get_close_matches(name, BY_NAME, n=1, cutoff=0.8)
            if close:
                warnings.append(f"{file_name}:{line}: {name} is not a setting; did you mean {close[0]}?")
    if len(warnings) > MAX_WARNINGS:  # a file of thousands of bare names is not thousands of lines to read
        more = f"{len(warnings) - MAX_WARNINGS:,} more warnings are not shown (and no more names were looked at)"
        warnings[MAX_WARNINGS:] = [f"{more}; fix the ones above and run again"]
    return Settings(values=values, sources=sources, env_name=env_name, warnings=tuple(warnings))


def record(root: Path, name: str, value: str) -> Path:
    """Write ``NAME=value`` into ``root``'s `.env` (made if missing; its ``NAME`` line replaced,
    keeping an ``export`` and a comment on it, every other line and the line endings kept), for a
    task's option that should stick (``inv build --base-image``). Checked like any setting first;
    secrets are never written, and a `.env` that is a link, not a file, or read-only is refused."""
    setting = BY_NAME[name]
    if setting.withheld:
        raise SettingsError(f"{name} is a secret or credential: set it yourself, the tasks never write one")
    _check(setting, value, "the option")
    path = root / ".env"
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise SettingsError(f".env is not a plain file (a link or a folder): add {name}={value} to it yourself")
    text = ""
    if path.exists():
        if not path.stat().st_mode & 0o222:  # read-only for everyone (root included): someone meant it
            raise SettingsError(f".env is read-only: add {name}={value} to it yourself, or make it writable")
        try:
            text = path.read_bytes().decode("utf-8", "replace")
        except OSError as exc:
            raise SettingsError(
                f".env cannot be read ({exc.strerror or exc}): add {name}={value} to it yourself"
            ) from None
    newline = "\r\n" if "\r\n" in text else "\n"
    line = re.compile(
        rf"^(?P<export>[ \t]*export[ \t]+)?[ \t]*{name}[ \t]*=[^\r\n]*?(?P<comment>[ \t]+#[^\r\n]*)?(?=\r?$)", re.M
    )
    replaced, count = line.subn(lambda m: f"{m['export'] or ''}{name}={value}{m['comment'] or ''}", text, count=1)
    if not count:
        replaced = text + ("" if not text or text.endswith("\n") else newline) + f"{name}={value}{newline}"
    path.write_bytes(replaced.encode("utf-8"))
    return path


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: ``os.environ``) for a process the tooling starts (the smoke suite's
    pytest, a local gunicorn, ``netlify dev``, ``ssh``): without any setting the catalogue marks
    secret or credential, and without any variable holding a loaded secret under another name.

    The settings read ``.env`` files without putting them in ``os.environ``, so what is dropped
    here is what the shell or CI exported."""
    environ = os.environ if environ is None else environ
    withheld = withheld_names()
    # The secrets the settings loaded, and those in ``environ`` itself: a task that loads no
    # settings (`inv smoke --url`, `inv relock`) still drops a copy under another name.
    exported = [value for name, value in environ.items() if name in withheld]
    secrets = [value for value in [*redact.remembered(), *exported] if len(value) >= ALIAS_MIN_LENGTH]
    return {
        name: value
        for name, value in environ.items()
        if name not in withheld and not any(secret in value for secret in secrets)
    }
