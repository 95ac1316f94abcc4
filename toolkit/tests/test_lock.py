"""cnd_toolkit.release.lock on a real engine: exactly one of many concurrent deploys gets the lock."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator

import pytest
from cnd_toolkit import project
from cnd_toolkit.release import lock

pytestmark = pytest.mark.docker


@pytest.fixture
def slug(engine) -> Iterator[str]:  # type: ignore[no-untyped-def]
    name = f"locktest-{uuid.uuid4().hex[:8]}"
    yield name
    lock.release(engine, name)


def contender(slug: str) -> subprocess.Popen[str]:
    """Another process (another `inv deploy`) that tries to take the lock; it holds it until told to let go."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(project.ROOT)!r})
        from cnd_toolkit.docker.engine import connect
        from cnd_toolkit.release import lock
        client = connect()
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        sys.stdin.readline()  # all start together
        try:
            with lock.held(client, {slug!r}, revision="abc123"):
                print("got", flush=True)
                sys.stdin.readline()  # held until the test says so (or closes stdin)
        except lock.LockHeld as exc:
            print("refused:", exc, flush=True)
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def answer(proc: subprocess.Popen[str], seconds: float = 120) -> str:
    """The next line the contender prints (the deadline only stops a stuck one from hanging the run)."""
    assert proc.stdout is not None
    if not select.select([proc.stdout], [], [], seconds)[0]:
        raise AssertionError(f"contender {proc.pid} said nothing in {seconds:.0f} s")
    return proc.stdout.readline()


def tell(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def test_of_eight_concurrent_deploys_exactly_one_proceeds_and_the_rest_name_it(engine, slug: str) -> None:  # type: ignore[no-untyped-def]
    procs = [contender(slug) for _ in range(8)]
    try:
        for proc in procs:
            assert answer(proc) == "ready\n"
        for proc in procs:
            tell(proc, "go")
        # Each says how its try went; the winner holds the lock until all the others have tried.
        answers = [answer(proc) for proc in procs]
        for proc, said in zip(procs, answers, strict=True):
            if said == "got\n":
                tell(proc, "let go")
        outputs = [said + proc.communicate(timeout=60)[0] for proc, said in zip(procs, answers, strict=True)]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=60)
    got = [out for out in outputs if out.startswith("got")]
    refused = [out for out in outputs if out.startswith("refused:")]
    assert len(got) == 1 and len(refused) == 7, outputs
    for out in refused:
        assert "holds the lock on this Docker host" in out and "(deploy of abc123, for " in out
        assert "inv lock --release" in out
    assert lock.holder(engine, slug) is None  # the winner released it when done


def test_released_on_an_error_and_on_ctrl_c(engine, slug: str) -> None:  # type: ignore[no-untyped-def]
    for failure in (RuntimeError("health check failed"), KeyboardInterrupt()):
        with pytest.raises(type(failure)), lock.held(engine, slug):
            assert lock.holder(engine, slug) is not None
            raise failure
        assert lock.holder(engine, slug) is None


def test_a_killed_deploy_leaves_a_lock_that_says_whose_and_can_be_released(engine, slug: str) -> None:  # type: ignore[no-untyped-def]
    proc = contender(slug)
    assert answer(proc) == "ready\n"
    tell(proc, "go")
    assert answer(proc) == "got\n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    stale = lock.holder(engine, slug)
    assert stale is not None and f"pid {proc.pid}" in stale.who and stale.revision == "abc123"
    with pytest.raises(lock.LockHeld, match=rf"pid {proc.pid} \(deploy of abc123, for \d+s.*process is gone"):
        lock.acquire(engine, slug)
    with lock.held(engine, f"{slug}-alive") as alive:  # a holder that still runs is not called gone
        assert not alive.dead_here() and "gone" not in alive.describe()
    assert lock.release(engine, slug, token="not-the-holder") is None
    assert lock.holder(engine, slug) is not None  # only its holder, or a forced release, clears it
    released = lock.release(engine, slug)
    assert released is not None and released.token == stale.token
    assert lock.holder(engine, slug) is None
    with lock.held(engine, slug) as mine:
        assert lock.holder(engine, slug) == mine
