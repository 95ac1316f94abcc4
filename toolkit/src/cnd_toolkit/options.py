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
    if re.fullmatch(r"-?[0-9]{1,20}", text):
        shown = text
    else:
        shown = repr(str(raw)[:40]) + ("..." if len(str(raw)) > 40 else "")
    raise OpsError(f"{option} {shown} is not a port; use {low}-{high} (or 0 for a free one)")


def whole_number(raw: str | int, name: str, low: int, high: int) -> int:
    """A whole number in ``low..high`` from ``raw``; :class:`OpsError` naming ``name`` otherwise."""
    text = str(raw).strip()
    if re.fullmatch(r"[0-9]{1,6}", text) and low <= int(text) <= high:
        return int(text)
    shown = repr(str(raw)[:40]) + ("..." if len(str(raw)) > 40 else "")
    raise OpsError(f"{name} {shown} is not a whole number in {low}..{high}")
