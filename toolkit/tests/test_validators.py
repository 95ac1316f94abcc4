"""Every pattern that checks a whole value refuses a value with anything after it, a newline
included: ``$`` matches before a final newline, so a validator ending in it lets ``name\\n``
through (into a file name, a Caddyfile, a log line). The toolkit's module-level patterns are
found and held to that, whichever module adds one. The image-tag pattern is held to the Docker
engine's own grammar, with the engine as the oracle."""

from __future__ import annotations

import importlib
import pkgutil
import re
from typing import Any

import cnd_toolkit
import pytest
from cnd_toolkit import options
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


def _tags(seed: int) -> list[str]:
    """Seeded tags near the edges of Docker's grammar: lengths about 128, each kind of first
    character, separators, controls, spaces, Unicode letters, and versions as pyproject.toml has them."""
    import random

    rng = random.Random(seed)
    alphabet = ["a", "Z", "0", "_", ".", "-", "+", ":", "/", "@", " ", "\n", "\x1b", "é", "!", "~"]
    tags = ["".join(rng.choices(alphabet, k=rng.choice([1, 2, 5, 127, 128, 129]))) for _ in range(150)]
    tags += [
        f"{rng.choice('ab_0')}{rng.choice(['', '.', '-'])}{'x' * rng.choice([0, 1, 125, 126, 127, 128])}"
        for _ in range(50)
    ]
    return tags + [options.version_tag(version) for version in VERSIONS]


VERSIONS = ["1.0", "1.0+local.2", "2!1.0", "1.0.dev0", "v1", "+x", ".1", "-rc", "1.0 ", "é", "x" * 200]


@pytest.mark.docker
def test_the_tags_we_take_are_those_the_engine_takes(engine: Any) -> None:
    """The engine is the oracle: every seeded tag is tried on a real image; --tag takes exactly
    the ones the engine takes, and a project version always makes one it takes."""
    import docker.errors

    from tests.conftest import base_image

    image = engine.images.get(base_image(engine)).id
    disagree: list[str] = []
    taken: set[str] = set()
    try:
        for candidate in _tags(24):
            try:
                engine.api.tag(image, "cnd-tag-oracle", candidate)
                engine_takes = True
                taken.add(candidate)
            except docker.errors.APIError:
                engine_takes = False
            if bool(options.TAG.fullmatch(candidate)) != engine_takes:
                disagree.append(candidate)
    finally:
        for candidate in taken:
            engine.images.remove(f"cnd-tag-oracle:{candidate}")
    assert len(taken) > 20 and disagree == [], disagree
    assert {options.version_tag(version) for version in VERSIONS} <= taken
