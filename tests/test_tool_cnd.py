"""[tool.cnd] (a generated project's image, python and port) as cnd-toolkit reads it, against
Copier's own questions for the same values: seeded generated values, each accepted by both or
refused by both. Copier's side is copier.yml's validator text, rendered by Jinja's sandbox with
the Ansible filters, as Copier renders it; the toolkit's is ``cnd_toolkit.project.load`` on a
pyproject.toml holding the value.

One difference is by design: ``python`` is a choice of three in Copier, and any ``3.N`` in the
toolkit (a team may move to a Python newer than the template offers).
"""

from __future__ import annotations

import random
import string
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import yaml
from cnd_toolkit import project as proj
from cnd_toolkit.errors import OpsError
from jinja2.sandbox import SandboxedEnvironment

from tools.generated import REPO

QUESTIONS = yaml.safe_load((REPO / "copier.yml").read_text())
JINJA = SandboxedEnvironment(extensions=["jinja2_ansible_filters.AnsibleCoreFiltersExtension"])
VALID = {"image": "ghcr.io/acme/orders", "python": "3.12", "port": 8000}
CASES = 400


def copier_refuses(question: str, value: Any) -> bool:
    """Whether Copier's validator of ``question`` refuses ``value`` (it renders a message)."""
    text = QUESTIONS[question]["validator"]
    return bool(JINJA.from_string(text).render({question: value, "project_slug": "orders"}).strip())


def toolkit_refuses(root: Path, key: str, value: Any) -> bool:
    table = {**VALID, key: value}
    data = {"project": {"name": "orders", "version": "1.0.0"}, "tool": {"cnd": table}}
    (root / "pyproject.toml").write_bytes(tomli_w.dumps(data).encode())
    try:
        proj.load(root)
    except OpsError:
        return True
    return False


def mutated_image(rng: random.Random) -> str:
    """A registry path, then a few edits of the kinds people and fuzzers make."""
    parts = [rng.choice(["ghcr.io", "registry.example.com:5000", "localhost:5000", "docker.io", "r"])]
    parts += [
        "".join(rng.choice(string.ascii_lowercase + "0123456789._-") for _ in range(rng.randint(1, 9)))
        for _ in range(rng.randint(1, 3))
    ]
    text = "/".join(parts)
    for _ in range(rng.randint(0, 3)):
        at = rng.randint(0, len(text))
        edit = rng.choice(
            [
                ":latest",
                "@sha256:" + "a" * 64,
                "A",
                " ",
                "\n",
                "\t",
                "//",
                "..",
                "-",
                "_",
                ".",
                "é",
                "/",
                ":",
                "\x00",
                "#",
            ]
        )
        text = text[:at] + edit + text[at:] if rng.random() < 0.8 else text[:at] + text[at + 1 :]
    return text


@pytest.mark.parametrize("seed", range(4))
def test_image_copier_and_the_toolkit_agree(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    disagree = []
    refused = 0
    for _ in range(CASES // 4):
        value = mutated_image(rng)
        copier, toolkit = copier_refuses("image", value), toolkit_refuses(tmp_path, "image", value)
        refused += copier
        if copier != toolkit:
            disagree.append((value, copier, toolkit))
    assert not disagree, disagree[:5]
    assert 0 < refused < CASES // 4  # the generator makes both kinds


def test_port_copier_and_the_toolkit_agree(tmp_path: Path) -> None:
    rng = random.Random(7)
    values = [0, 1, 80, 1023, 1024, 8000, 9100, 9101, 9102, 65535, 65536, -1, 2**31]
    values += [rng.randint(-100, 70000) for _ in range(60)]
    disagree = [
        (v, c, t) for v in values if (c := copier_refuses("port", v)) != (t := toolkit_refuses(tmp_path, "port", v))
    ]
    assert not disagree, disagree


def test_every_python_copier_offers_is_one_the_toolkit_takes(tmp_path: Path) -> None:
    choices = QUESTIONS["python_version"]["choices"]
    assert choices and not [v for v in choices if toolkit_refuses(tmp_path, "python", v)]
    assert not toolkit_refuses(tmp_path, "python", "3.14")  # newer than the template offers: by design
    assert [
        v for v in ("3", "3.12.1", "2.7", " 3.12", "3.12\n", "") if not toolkit_refuses(tmp_path, "python", v)
    ] == []
