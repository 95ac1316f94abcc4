"""What tests do about a missing prerequisite: the one rule cnd-toolkit's tests, the template's
and a generated project's share.

A test that needs a real part (a Docker engine, ``promtool``, ``caddy``) skips on a machine
without it, saying how to get it, and fails instead under CI, where every test must run. CI is
``CI`` set to anything but an empty or false value (``0``, ``false``, ``no``, ``off``), as CI
services set it (``CI=true``): a person's ``CI=false`` is not CI. pytest is imported only when a
test calls these.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Mapping
from typing import Any, NoReturn


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() not in {"", "0", "false", "no", "off"}


def unavailable(message: str) -> NoReturn:
    """The test's prerequisite is missing (``message`` says which, and how to get it): skip it,
    or fail it under CI."""
    # Imported here, by name: only tests call this, and the toolkit does not depend on pytest.
    pytest: Any = importlib.import_module("pytest")
    if in_ci():
        pytest.fail(f"{message.rstrip('.')}; CI is set, so this test must run, not skip", pytrace=False)
    pytest.skip(message)
    raise AssertionError("pytest.skip returned")  # it raises; this line only tells the type checker


def needed_tool(name: str, why: str, package: str) -> str:
    """The path of the command ``name``, which the test needs ``why``; :func:`unavailable`, naming
    the Debian/Ubuntu ``package`` that has it, when it is not on PATH."""
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} is not installed, and is needed {why} (apt-get install {package})")
    return found
