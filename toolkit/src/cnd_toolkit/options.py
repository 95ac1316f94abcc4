"""Option values typed on the command line, checked: a bad one is one line naming the option.

Invoke converts an ``int`` option with ``int()`` and shows a traceback when that fails, so the
tasks take such options as text and convert them here.
"""

from __future__ import annotations

import re

from cnd_toolkit.errors import OpsError

PORT_RANGE = (1, 65535)


def port(raw: str | int, option: str = "--port") -> int:
    """A TCP port from ``raw``: 1-65535, or 0 for a free one the system picks.

    Raises :class:`OpsError` for anything else, in the words the edge uses for a port it cannot bind.
    """
    text = str(raw).strip()
    low, high = PORT_RANGE
    if re.fullmatch(r"[0-9]{1,5}", text) and (int(text) == 0 or low <= int(text) <= high):
        return int(text)
    shown = text if re.fullmatch(r"-?[0-9]{1,20}", text) else _shown(raw)
    raise OpsError(f"{option} {shown} is not a port; use {low}-{high} (or 0 for a free one)")


def whole_number(raw: str | int, name: str, low: int, high: int) -> int:
    """A whole number in ``low..high`` from ``raw``; :class:`OpsError` naming ``name`` otherwise."""
    text = str(raw).strip()
    if re.fullmatch(r"[0-9]{1,6}", text) and low <= int(text) <= high:
        return int(text)
    raise OpsError(f"{name} {_shown(raw)} is not a whole number in {low}..{high}")


# An image tag as Docker takes one: a letter, digit or _, then up to 127 of those, . and -.
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def tag(raw: str, option: str = "--tag") -> str:
    """An image tag from ``raw``; :class:`OpsError` naming ``option`` for one Docker would refuse."""
    if TAG.fullmatch(str(raw)):
        return str(raw)
    rule = "letters, digits, _, . and -, at most 128, not starting with . or -"
    raise OpsError(f"{option} {_shown(raw)} is not an image tag; use {rule} (e.g. 1.2.0 or rc-2)")


def version_tag(version: str) -> str:
    """The project's version as an image tag: 1.0+local.2 is tagged 1.0-local.2 (Docker takes no +)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", version)[:128].lstrip(".-") or "latest"


def _shown(raw: str | int) -> str:
    """``raw`` quoted for a message: escaped, and cut after 40 characters."""
    return repr(str(raw)[:40]) + ("..." if len(str(raw)) > 40 else "")
