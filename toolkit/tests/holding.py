"""Run a child process that holds at a named moment (cnd_toolkit/hold.py) so a test can interrupt it there.

with Child([sys.executable, "-c", code], hold="rollout.drain", folder=tmp_path) as child:
    child.wait_held()            # the child is in the moment now, whatever the machine's load
    child.signal(signal.SIGINT)  # lands inside it
    child.let_go()               # for code that finishes the moment before the interrupt goes on
    output = child.finish()
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def as_a_terminal_starts_it() -> None:
    """In the child before exec: SIGINT and SIGHUP at their defaults, as from a terminal.

    A test run started under `nohup` or as `cmd &` passes them on ignored, and the tooling
    rightly keeps an ignored signal ignored; a test that sends one must not inherit that.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


class Child:
    def __init__(
        self,
        command: Sequence[str],
        *,
        hold: str,
        folder: Path,
        env: Mapping[str, str] | None = None,
        new_session: bool = False,
    ) -> None:
        self.hold, self.folder = hold, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.lines: list[str] = []
        environment = {**os.environ, **(env or {}), "CND_HOLD_AT": hold, "CND_HOLD_DIR": str(folder)}
        self.process = subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
            start_new_session=new_session, preexec_fn=as_a_terminal_starts_it,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_held(self, timeout: float = 300) -> None:
        """Until the child holds at the moment; fails (with its output) if it ended first."""
        held = self.folder / f"{self.hold}.held"
        deadline = time.monotonic() + timeout
        while not held.exists():
            if self.process.poll() is not None:
                self._reader.join(10)
                code = self.process.returncode
                raise AssertionError(f"the child ended (exit {code}) before {self.hold}: {self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the child did not reach {self.hold} in {timeout:.0f}s: {self.output}")
            time.sleep(0.01)

    def signal(self, signum: int, group: bool = False) -> None:
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)

    def let_go(self) -> None:
        (self.folder / f"{self.hold}.go").touch()

    def finish(self, timeout: float = 120) -> str:
        """Wait for the child to end (it is let go first); its whole output."""
        self.let_go()
        self.process.wait(timeout)
        self._reader.join(10)
        return self.output

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
        self._reader.join(10)
