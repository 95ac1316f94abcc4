"""A webhook on loopback for alert tests (and the template's alert benchmark): it records each
POSTed JSON body with the monotonic time it arrived, and answers ``statuses`` in turn, then 200."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, statuses: list[int] | None = None, delay: float = 0.0) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.statuses = list(statuses or [])
        self.delay = delay
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                arrived = time.monotonic()
                time.sleep(receiver.delay)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.received.append((arrived, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

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

    def close(self) -> None:
        self.server.shutdown()
