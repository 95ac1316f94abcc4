"""Ctrl-C at any moment of a smoke run (as `inv smoke` and `inv deploy` start one) leaves no
container behind, and stops at once: nothing in a smoke container is worth its graceful timeout.

The moments are seeded and spread over the run: while the engine creates the container, while
it starts, during the health wait, during the suite. Whatever moment the signal lands in, the
assertions hold: no container is left, and a stop the run makes after the interrupt asks for no
grace (the graceful timeout is 600 s here, so waiting it out could not pass unnoticed).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cnd_toolkit import project
from cnd_toolkit.docker import containers, images

from tests.conftest import base_image

pytestmark = pytest.mark.docker

# The child reports each stop it makes (the seconds it gives the container before SIGKILL) and
# whether Ctrl-C had come by then: the evidence that an interrupted run waits out no grace.
SMOKE_IN_A_CHILD = """
import signal
import sys
sys.path.insert(0, sys.argv[2])  # the project
from cnd_toolkit import project, smoke
from cnd_toolkit.docker import containers
from cnd_toolkit.docker.engine import connect

interrupted = []

def on_interrupt(signum, frame):
    interrupted.append(signum)
    raise KeyboardInterrupt

real_stop = containers.stop

def stop(container, timeout):
    print("stop timeout=%d interrupted=%s" % (timeout, bool(interrupted)), flush=True)
    real_stop(container, timeout)

containers.stop = stop
signal.signal(signal.SIGINT, on_interrupt)
client = connect()
print("go", flush=True)
smoke.smoke_image(
    project.load(), client, sys.argv[1], extra=["-q"], environment=dict(GUNICORN_GRACEFUL_TIMEOUT="600")
)
"""


def _leftovers(engine: Any, image: str) -> list[Any]:
    return list(engine.containers.list(all=True, filters={"label": f"{containers.MANAGED_LABEL}={image}"}))


@pytest.fixture(scope="module")
def image(engine: Any) -> Iterator[str]:
    me = project.load()
    tag = f"{me.slug}-interrupt-test:latest"
    images.build_image(engine, me.root, [tag], project.build_args(me, base_image(engine), revision="interrupt"))
    yield tag
    for left in _leftovers(engine, tag):  # a failed test's: asserted there, removed here
        left.remove(force=True)
    engine.images.remove(tag, force=True)


# Seconds after the child is ready: dense where the engine creates and starts the container
# (measured: 0.02 to 0.1 s in, the window a container once leaked from), then the health wait and
# the suite. Each moment gets a seeded jitter of a few milliseconds. The moment only spreads the
# interrupts over the run; no assertion depends on which phase it lands in.
MOMENTS = [0.0, 0.01, 0.02, 0.03, 0.045, 0.06, 0.08, 0.1, 0.13, 0.17, 0.25, 0.4, 0.8, 1.5, 2.5]


@pytest.mark.parametrize("moment", MOMENTS)
def test_ctrl_c_at_any_moment_of_a_smoke_run_leaves_no_container(engine: Any, image: str, moment: float) -> None:
    delay = moment + random.Random(moment).uniform(0, 0.005)
    child = subprocess.Popen(
        [sys.executable, "-c", SMOKE_IN_A_CHILD, image, str(project.ROOT)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "go"
        time.sleep(delay)
        os.killpg(child.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        try:  # a generous deadline: a stop that waits out the 600 s graceful timeout misses it
            output, _ = child.communicate(timeout=120)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"Ctrl-C {delay:.3f} s in: the run had not ended 120 s later: {exc.output!r}")
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(30)
    left = _leftovers(engine, image)
    assert left == [], (delay, [c.name for c in left], output[-2000:])
    stops = re.findall(r"^stop timeout=(\d+) interrupted=(True|False)$", output, flags=re.MULTILINE)
    after = [int(timeout) for timeout, interrupted in stops if interrupted == "True"]
    assert all(timeout == 1 for timeout in after), (delay, stops, output[-2000:])  # no grace after Ctrl-C
