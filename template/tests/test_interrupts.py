"""Ctrl-C at any moment of a smoke run (as `inv smoke` and `inv deploy` start one) leaves no
container behind, and stops at once: nothing in a smoke container is worth its graceful timeout.

The moments are seeded and spread over the run: while the engine creates the container, while
it starts, during the health wait, during the suite.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from ops import project
from ops.docker import containers, images
from tests.conftest import base_image

pytestmark = pytest.mark.docker

SMOKE_IN_A_CHILD = """
import sys
sys.path.insert(0, {root!r})
from ops import project, smoke
from ops.docker.engine import connect
client = connect()
print("go", flush=True)
smoke.smoke_image(project.load(), client, sys.argv[1], extra=["-q"])
"""


@pytest.fixture(scope="module")
def image(engine: Any) -> str:
    me = project.load()
    tag = f"{me.slug}-interrupt-test:latest"
    images.build_image(engine, me.root, [tag], project.build_args(me, base_image(engine), revision="interrupt"))
    return tag


# Seconds after the child is ready: dense where the engine creates and starts the container
# (measured: 0.02 to 0.1 s in, the window a container once leaked from), then the health wait and
# the suite. Each moment gets a seeded jitter of a few milliseconds.
MOMENTS = [0.0, 0.01, 0.02, 0.03, 0.045, 0.06, 0.08, 0.1, 0.13, 0.17, 0.25, 0.4, 0.8, 1.5, 2.5]


@pytest.mark.parametrize("moment", MOMENTS)
def test_ctrl_c_at_any_moment_of_a_smoke_run_leaves_no_container(engine: Any, image: str, moment: float) -> None:
    delay = moment + random.Random(moment).uniform(0, 0.005)
    child = subprocess.Popen(
        [sys.executable, "-c", SMOKE_IN_A_CHILD.format(root=str(project.ROOT)), image],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "go"
    time.sleep(delay)
    os.killpg(child.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    stopped = time.monotonic()
    output, _ = child.communicate(timeout=60)
    took = time.monotonic() - stopped
    left = engine.containers.list(all=True, filters={"label": f"{containers.MANAGED_LABEL}={image}"})
    assert left == [], (delay, [c.name for c in left], output[-2000:])
    assert took < 10, (delay, took, output[-2000:])  # no graceful timeout (20 s) waited out
