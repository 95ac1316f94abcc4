"""tests/isolation.py catches a test that leaves something behind, names it, and (under CI) removes it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import base_image

LEAKY = """
import subprocess, sys
import docker
import pytest

def test_leaves_a_process():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])

def test_clean():
    pass

@pytest.mark.docker
def test_leaves_a_container():
    docker.from_env().containers.create({image!r}, ["true"], name={name!r})
"""


# Checked as in CI, with a short wait for the engine's own removals (nothing here is being removed).
CHECKED = {"CI": "true", "CND_CHECK_LEAKS": "1", "CND_LEAK_SETTLE_SECONDS": "2", "PYTEST_ADDOPTS": ""}


def run_leaky(folder: Path, image: str, name: str) -> str:
    (folder / "conftest.py").write_text(
        "from tests.isolation import module_leaves_nothing, test_leaves_nothing  # noqa\n"
    )
    (folder / "test_leaky.py").write_text(LEAKY.format(image=image, name=name))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(folder), "-q", "-p", "no:cacheprovider", "-m", "docker or not docker",
         "-o", "markers=docker"],
        cwd=folder, capture_output=True, text=True, timeout=300,
        env={**os.environ, **CHECKED, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},  # tests.isolation
    )  # fmt: skip
    return result.stdout + result.stderr


@pytest.mark.docker
def test_a_leaked_process_or_container_fails_the_test_that_left_it_and_is_removed(engine: Any, tmp_path: Path) -> None:
    image = base_image(engine)
    name = f"cnd-leak-{uuid.uuid4().hex[:8]}"
    output = run_leaky(tmp_path, image, name)
    assert "test_leaves_a_process - Failed: this test left behind what a later test would meet: process:" in output
    assert "time.sleep(300)" in output
    assert re.search(f"this test left behind what a later test would meet: container: [^\n]*{name}", output), output
    assert "3 passed, 2 errors" in output, output  # each test passed; two left something
    assert not engine.containers.list(all=True, filters={"name": name})  # removed under CI
