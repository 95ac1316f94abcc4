"""Every pattern that checks a whole value refuses a value with anything after it, a newline
included: ``$`` matches before a final newline, so a validator ending in it lets ``name\\n``
through (into a file name, a Caddyfile, a log line). The toolkit's module-level patterns are
found and held to that, whichever module adds one."""

from __future__ import annotations

import importlib
import pkgutil
import re

import cnd_toolkit
import pytest
from cnd_toolkit.errors import OpsError
from cnd_toolkit.release import caddy


def patterns() -> list[tuple[str, re.Pattern[str]]]:
    found = []
    for module_info in pkgutil.walk_packages(cnd_toolkit.__path__, "cnd_toolkit."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern) and isinstance(value.pattern, str):
                found.append((f"{module_info.name}.{name}", value))
    return found


def test_no_pattern_of_the_toolkit_ends_where_a_newline_could_follow() -> None:
    found = patterns()
    assert len(found) > 20  # the walk saw the toolkit's patterns
    loose = [
        name
        for name, pattern in found
        if re.search(r"(?<!\\)\$\)*$", pattern.pattern) and not pattern.flags & re.MULTILINE
    ]
    assert loose == [], f"end these with \\Z (or use fullmatch and drop the $): {loose}"


@pytest.mark.parametrize("tail", ["\n", "\r\n", "\n.evil", "\x00"])
def test_a_name_with_anything_after_it_is_no_site_file_name(tail: str) -> None:
    assert caddy.site_file_name("demo")
    with pytest.raises(OpsError):
        caddy.site_file_name("demo" + tail)
