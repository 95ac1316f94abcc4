"""cnd_toolkit.wait: the one poller, on a fake clock (every path through it), and its HTTP probe on a real socket."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest
from cnd_toolkit.wait import NotReady, TimedOut, http_ok, poll, wait_http


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_the_first_ready_answer_and_backs_off_to_the_cap() -> None:
    clock = FakeClock()
    answers = iter([NotReady("a"), NotReady("b"), NotReady("c"), NotReady("d"), NotReady("e"), 42])

    def probe() -> int:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert poll(probe, timeout=10, interval=0.1, max_interval=0.5, clock=clock, sleep=clock.sleep) == 42
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_times_out_with_the_last_reason_and_asks_once_more_at_the_deadline() -> None:
    clock = FakeClock()
    asked: list[float] = []

    def probe() -> None:
        asked.append(clock.now)
        raise NotReady(f"not yet at {clock.now:.1f}")

    with pytest.raises(TimedOut) as caught:
        poll(probe, timeout=1.0, interval=0.3, max_interval=0.3, clock=clock, sleep=clock.sleep)
    assert asked[-1] == pytest.approx(1.0)  # the last sleep is cut to the deadline, then one more try
    assert caught.value.reason == "not yet at 1.0"
    assert str(caught.value) == "not ready after 1s (not yet at 1.0)"


def test_a_probe_that_gives_up_stops_the_wait_at_once() -> None:
    clock = FakeClock()
    calls = 0

    def probe() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("exited")
        raise NotReady("starting")

    with pytest.raises(RuntimeError, match="exited"):
        poll(probe, timeout=100, clock=clock, sleep=clock.sleep)
    assert calls == 3


def test_zero_timeout_still_asks_once() -> None:
    clock = FakeClock()
    assert poll(lambda: "ok", timeout=0, clock=clock, sleep=clock.sleep) == "ok"
    with pytest.raises(TimedOut):
        poll(lambda: (_ for _ in ()).throw(NotReady("no")), timeout=0, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []


@pytest.fixture
def server() -> Iterator[tuple[str, list[int]]]:
    statuses: list[int] = []  # answered in turn; 200 once the list is empty

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(statuses.pop(0) if statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", statuses
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_http_probe_says_what_it_got(server: tuple[str, list[int]]) -> None:
    url, statuses = server
    statuses.extend([503])
    with httpx.Client(timeout=30) as http:
        with pytest.raises(NotReady, match=r"^/readyz answered 503$"):
            http_ok(http, url + "/readyz")
        http_ok(http, url + "/readyz")
    closed = url.rsplit(":", 1)[0] + ":9"
    with httpx.Client(timeout=30) as http, pytest.raises(NotReady, match=r"^/healthz: ConnectError$"):
        http_ok(http, closed + "/healthz")


def test_wait_http_waits_through_errors_and_stops_on_check(server: tuple[str, list[int]]) -> None:
    url, statuses = server
    statuses.extend([500, 503, 404])
    assert wait_http(url + "/", timeout=60) >= 0
    assert statuses == []
    with pytest.raises(TimedOut, match=r"/x answered 503"):
        statuses.extend([503] * 1000)
        wait_http(url + "/x", timeout=0.3)
    statuses.clear()

    def check() -> None:
        raise RuntimeError("the server exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_http(url + "/", timeout=60, check=check)
