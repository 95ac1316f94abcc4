"""A webhook on loopback for alert tests (and the template's alert benchmark): it records each
POSTed JSON body with the monotonic time it arrived, and answers ``statuses`` in turn, then 200.

``hold=True`` makes it a webhook that hangs: each POST is counted as it arrives (``arrivals``)
and then held, unanswered, until :meth:`let_go` (or :meth:`close`)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, statuses: list[int] | None = None, delay: float = 0.0, hold: bool = False) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.arrivals: list[dict[str, Any]] = []  # every POST, answered or not yet
        self.statuses = list(statuses or [])
        self.delay = delay
        self.released = threading.Event()
        if not hold:
            self.released.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                arrived = time.monotonic()
                receiver.arrivals.append(body)
                receiver.released.wait()
                time.sleep(receiver.delay)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.received.append((arrived, body))
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # a held post whose sender gave up waiting: nobody reads the answer
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/secret-part"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> list[str]:
        return [str(body.get("text", "")) for _, body in self.received]

    def wait_for(self, needle: str, after: int = 0, timeout: float = 60) -> float:
        """When the first alert containing ``needle`` among those from index ``after`` arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, body in self.received[after:]:
                if needle in str(body.get("text", "")):
                    return at
            time.sleep(0.005)
        raise TimeoutError(f"no alert with {needle!r} within {timeout:.0f} s: {self.texts()[after:]}")

    def let_go(self) -> None:
        """Answer the held POSTs (and every later one) at once."""
        self.released.set()

    def close(self) -> None:
        self.let_go()
        self.server.shutdown()
        self.server.server_close()
