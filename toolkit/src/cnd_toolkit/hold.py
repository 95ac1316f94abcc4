"""Named moments of long operations where a test can hold the process, to interrupt it there.

A test that must Ctrl-C or kill a deploy in its health wait, or in its drain, cannot guess when
that is: a phase that takes a second alone may be over in a tenth of one, or not begun after
three, on a busy machine. So the operations name their moments (``hold.reached("rollout.drain")``)
and a test sets two variables in the child's environment:

- ``CND_HOLD_AT``: the moment's name;
- ``CND_HOLD_DIR``: a folder of the test's.

The first time the process reaches that moment it writes ``<name>.held`` (its pid) in the folder,
then waits until ``<name>.go`` appears there. A signal ends the wait as it would end any other
part of the moment: Ctrl-C raises KeyboardInterrupt right there. Without ``CND_HOLD_AT`` (every
real run), ``reached`` returns at once.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cnd_toolkit.wait import NotReady, TimedOut, poll

# A test that forgets to let go does not hold a process for ever.
LONGEST = 600.0

_done: set[str] = set()


def reached(name: str) -> None:
    """Hold here if a test asked for ``name`` (once per process)."""
    if os.environ.get("CND_HOLD_AT") != name or name in _done:
        return
    _done.add(name)
    folder = Path(os.environ.get("CND_HOLD_DIR") or ".")
    go = folder / f"{name}.go"
    (folder / f"{name}.held").write_text(str(os.getpid()))

    def released() -> None:
        if not go.exists():
            raise NotReady(f"no {go.name} yet")

    with contextlib.suppress(TimedOut):  # never held for longer than a test could want
        poll(released, timeout=LONGEST, interval=0.01, max_interval=0.01)
