"""The error hierarchy of the ops tooling."""

from __future__ import annotations

import re

from cnd_toolkit.redact import scrub

# What a terminal would act on rather than show: C0 controls but tab and newline (an escape
# sequence, a carriage return that overwrites the line), DEL, C1 controls, the line and paragraph
# separators a terminal may break at, and the bidirectional marks and overrides that reorder text.
# An API, an engine, a file or a container's log can put any of them in a message; each is shown
# as its escape (``\x1b``) instead.
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[{_CONTROLS}]")
_CONTROL_OR_NEWLINE = re.compile(f"[\n{_CONTROLS}]")


def shown(text: str, *, lines: bool = True) -> str:
    """``text`` with every control character a terminal would act on written as its escape; with
    ``lines=False`` a newline too, for a message that must stay one line. Tabs stay."""
    pattern = _CONTROL if lines else _CONTROL_OR_NEWLINE
    return pattern.sub(lambda match: repr(match.group(0))[1:-1], text)


# A run of text without a space longer than this, quoted in a message (a path, a URL, a number
# from a file), is cut: a message stays a few lines whatever the file or the server held.
LONGEST_RUN = 200
_LONG_RUN = re.compile(rf"\S{{{LONGEST_RUN + 1},}}")


def brief(text: str) -> str:
    """``text`` with each run of over :data:`LONGEST_RUN` characters without a space cut short."""
    return _LONG_RUN.sub(lambda run: f"{run.group(0)[:120]}... ({len(run.group(0)):,} characters)", text)


class OpsError(Exception):
    """An expected failure. ``str(exc)`` is a message for a person: what failed, what to do.

    Message and detail are scrubbed of every secret the settings loaded (:mod:`cnd_toolkit.redact`): an
    error quoting what an engine, a registry or an API answered cannot carry one on, nor a control
    sequence for the terminal (:func:`shown`).
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(brief(scrub(shown(message))))
        self.detail = scrub(shown(detail))  # e.g. a build-log tail or container logs, printed after the message


class EngineUnavailable(OpsError):
    """No Docker engine answers where DOCKER_HOST (or the default socket) points."""


class BuildFailed(OpsError):
    """``docker build`` failed; ``detail`` holds the tail of the build log."""


class Interrupted(OpsError):
    """A signal (Ctrl-C, SIGTERM, SIGHUP) stopped a task; the message says what was left behind.

    The task exits 130, as a shell reports a command ended by Ctrl-C.
    """

    exit_code = 130


class ImageMissing(OpsError):
    """The image to run is not on the engine; the message says how to build it."""


class NeverHealthy(OpsError):
    """A container exited or did not turn healthy in time; ``detail`` holds its logs."""


class SmokeFailed(OpsError):
    """The smoke suite failed against an image or URL."""


class ConfigError(OpsError):
    """The Netlify configuration has an error; the message names its file and line."""
