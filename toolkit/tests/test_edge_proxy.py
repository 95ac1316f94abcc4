"""The edge's proxy in front of an origin that misbehaves, and its server against clients that do.

Every failure must end as a clean answer (a one-line 502/504 naming the origin, a 400/408/503),
or as an aborted connection once the answer has begun; nothing may wait for ever. The origin
here is a raw asyncio server whose behaviour the request path picks, and the clients that need
exact bytes are raw sockets. The timeout a test is about is 1 s (``ORIGIN_1S``, ``CLIENT_1S``),
so the whole file runs in seconds; the others keep their defaults (26 and 30 s), which nothing a
test does comes near, however busy the machine. No test bounds how long anything took: a timeout
is seen to fire by what only its path produces (its 504, 408 or closed connection, against an
origin or a client that would otherwise wait for ever), and a wait of the test's own (``WAIT``)
only stops a broken edge from hanging the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import random
import re
import select
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from cnd_toolkit import dev as dev_ops
from cnd_toolkit import project
from cnd_toolkit.edge.limits import Limits
from cnd_toolkit.edge.server import RunningEdge, serve_in_thread

ROOT = project.ROOT  # the project under test: a default render
ORIGIN_1S = Limits(origin_timeout=1.0)  # for the tests of an origin that stalls
CLIENT_1S = Limits(client_timeout=1.0)  # for the tests of a client that stalls
WAIT = 60.0  # how long a test waits for what should take about one timeout: only a broken edge takes it
# A steady but slow origin sends a piece every GAP seconds, longer than STEADY's timeout in all,
# each gap far under it (so a busy machine's delays cannot make a gap a timeout).
STEADY = Limits(origin_timeout=2.0)
GAP = 0.2
TRICKLE = [b"piece-%d;" % number for number in range(9)]  # 12 gaps in all: 2.4 s
PLAIN = b"hello, compressible world " * 40
GZIPPED = gzip.compress(PLAIN, mtime=0)

Writer = asyncio.StreamWriter
Behaviour = Callable[[asyncio.StreamReader, Writer, dict[str, str]], Awaitable[None]]


@dataclass
class Seen:
    """One request as the origin received it."""

    line: str
    headers: list[tuple[str, str]]
    body: bytes = b""


class Origin:
    """A raw HTTP/1.1 origin on its own event loop. ``/api/<behaviour>/...`` picks what it does."""

    def __init__(self) -> None:
        self.seen: dict[str, Seen] = {}  # by request-target
        self.ended: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="origin", daemon=True)
        self.behaviours: dict[str, Behaviour] = {
            "ok": self.ok,
            "hang": self.hang,
            "trickle": self.trickle,
            "stall-small": self.stall_small,
            "stall-stream": self.stall_stream,
            "die-small": self.die_small,
            "die-stream": self.die_stream,
            "huge-head": self.huge_head,
            "gzip": self.gzip,
            "flood": self.flood,
            "switch": self.switch,
            "status-99": self.status_99,
            "bad-escape": self.ok,
        }

    def __enter__(self) -> Origin:
        self.thread.start()
        start = asyncio.start_server(self.serve, "127.0.0.1", 0, limit=1 << 20)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(WAIT)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)

    async def serve(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        target = "?"
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *fields = head[:-4].decode("latin-1").split("\r\n")
            target = line.split(" ")[1]
            pairs = [field.split(":", 1) for field in fields]
            headers = [(name.strip(), value.strip()) for name, value in pairs]
            seen = self.seen[target] = Seen(line, headers)
            lower = {name.lower(): value for name, value in headers}
            length = int(lower.get("content-length", "0"))
            seen.body = await reader.readexactly(length)
            await self.behaviours[target.split("/")[2].split("?")[0]](reader, writer, lower)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the edge went away: that is what several tests wait for
        finally:
            self.ended[target].set()
            writer.close()

    async def send(self, writer: Writer, *pieces: bytes) -> None:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()

    async def ok(self, reader: asyncio.StreamReader, writer: Writer, headers: dict[str, str]) -> None:
        await self.send(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    async def hang(self, reader: asyncio.StreamReader, writer: Writer, headers: dict[str, str]) -> None:
        await reader.read()  # nothing until the edge gives up and closes

    async def trickle(self, reader: asyncio.StreamReader, writer: Writer, headers: dict[str, str]) -> None:
        head = [b"HTTP/1.1 200 OK\r\n", b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"]
        chunks = [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in TRICKLE]
        for piece in [*head, *chunks, b"0\r\n\r\n"]:
            await asyncio.sleep(GAP)
            await self.send(writer, piece)

    async def stall_small(self, reader: asyncio.StreamReader, writer: Writer, headers: dict[str, str]) -> None:
        await self.send(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"s" * 10)
        await reader.read()

    async def stall_stream(self, reader: asyncio.StreamReader, writer: Writer, headers: dict[str, str]) -> None:
        await self.send(writer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await reader.read()

    async def die_small(self, reader: asyncio.StreamReader, writer: Writer, headers: dict[str, str]) -> None:
        await self.send(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"d" * 10)

    async def die_stream(self, reader: asyncio.StreamReader, writer: Writer, headers: dict[str, str]) -> None:
        await self.send(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"d" * 100_000)

    async def huge_head(self, reader: asyncio.StreamReader, writer: Writer, headers: dict[str, str]) -> None:
        await self.send(writer, b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * 65536 + b"\r\nContent-Length: 2\r\n\r\nok")

    async def gzip(self, reader: asyncio.StreamReader, writer: Writer, headers: dict[str, str]) -> None:
        if "gzip" in headers.get("accept-encoding", ""):
            head, body = b"Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n", GZIPPED
        else:
            head, body = b"Vary: Accept-Encoding\r\n", PLAIN
        await self.send(writer, b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))

    async def switch(self, reader: asyncio.StreamReader, writer: Writer, headers: dict[str, str]) -> None:
        await self.send(
            writer, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        await reader.read()

    async def status_99(self, reader: asyncio.StreamReader, writer: Writer, headers: dict[str, str]) -> None:
        await self.send(writer, b"HTTP/1.1 099 Low\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    async def flood(self, reader: asyncio.StreamReader, writer: Writer, headers: dict[str, str]) -> None:
        await self.send(writer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"f" * 65536)
        for _ in range(4096):  # 256 MiB at most: far more than any socket buffers hold
            await self.send(writer, chunk)


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    with Origin() as running:
        yield running


def edge_with(origin: Origin, limits: Limits) -> Iterator[RunningEdge]:
    with serve_in_thread(dev_ops.site_for(ROOT, origin.url), limits=limits) as running:
        yield running


@pytest.fixture(scope="module")
def edge(origin: Origin) -> Iterator[RunningEdge]:
    """The edge with its default limits: no timeout fires in a test that is not about one."""
    yield from edge_with(origin, Limits())


@pytest.fixture(scope="module")
def origin_1s(origin: Origin) -> Iterator[RunningEdge]:
    yield from edge_with(origin, ORIGIN_1S)


@pytest.fixture(scope="module")
def client_1s(origin: Origin) -> Iterator[RunningEdge]:
    yield from edge_with(origin, CLIENT_1S)


def read_to_end(sock: socket.socket, wait: float = WAIT) -> tuple[bytes, str]:
    """What arrives until the edge ends the connection, and how it ended: eof, reset or timeout."""
    deadline = time.monotonic() + wait
    data = b""
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data, "reset"
        if not chunk:
            return data, "eof"
        data += chunk
    return data, "timeout"


def exchange(edge: RunningEdge, request: bytes, wait: float = WAIT) -> tuple[bytes, str]:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=wait) as sock:
        sock.sendall(request)
        return read_to_end(sock, wait)


def get(target: str, *headers: str) -> bytes:
    """A GET with exactly these headers (and Host), asking the edge to close afterwards."""
    lines = [f"GET {target} HTTP/1.1", "Host: edge.test", *headers, "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one response with a Content-Length."""
    head, _, body = raw.partition(b"\r\n\r\n")
    line, *fields = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (field.split(":", 1) for field in fields)}
    return int(line.split(" ")[1]), headers, body[: int(headers.get("content-length", len(body)))]


def test_the_origin_receives_the_target_exactly_as_the_client_encoded_it(edge: RunningEdge, origin: Origin) -> None:
    target = "/api/ok/a%20b/%7Euser/c%2fd/%C3%A9?x=%2F&y=%23t&z=a+b%2b"
    raw, _ = exchange(edge, get(target))
    assert parse(raw)[0] == 200
    assert f"GET {target} HTTP/1.1" in [seen.line for seen in origin.seen.values()]


def test_the_origin_sees_the_clients_headers_and_only_the_proxys_own_besides(edge: RunningEdge, origin: Origin) -> None:
    client_headers = [
        "X-Dup: one",
        "X-Dup: two",
        "X-Forwarded-For: 203.0.113.9",
        "Connection: X-Hop",  # names a header that is for this connection only
        "X-Hop: not for the origin",
        "TE: trailers",
        "Keep-Alive: timeout=5",
    ]
    raw, _ = exchange(edge, get("/api/ok/headers", *client_headers))
    assert parse(raw)[0] == 200
    assert sorted(origin.seen["/api/ok/headers"].headers) == sorted(
        [
            ("Host", origin.url.removeprefix("http://")),
            ("X-Dup", "one"),
            ("X-Dup", "two"),
            ("X-Forwarded-For", "203.0.113.9, 127.0.0.1"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "edge.test"),
        ]
    )  # no Accept-Encoding, User-Agent or Accept of aiohttp's, nothing hop-by-hop


def test_a_compressed_body_passes_through_untouched_and_only_to_a_client_that_asked(
    edge: RunningEdge, origin: Origin
) -> None:
    status, headers, body = parse(exchange(edge, get("/api/gzip/no-accept-encoding"))[0])
    assert (status, body) == (200, PLAIN)
    assert "content-encoding" not in headers
    assert "accept-encoding" not in dict(origin.seen["/api/gzip/no-accept-encoding"].headers)

    status, headers, body = parse(exchange(edge, get("/api/gzip/asked", "Accept-Encoding: gzip"))[0])
    assert (status, headers["content-encoding"], body) == (200, "gzip", GZIPPED)


def test_a_silent_origin_is_a_504_but_a_slow_steady_one_is_served_in_full(
    origin_1s: RunningEdge, origin: Origin
) -> None:
    # The origin never answers nor closes: only the edge's timeout can end this, with its 504.
    response = httpx.get(origin_1s.url + "/api/hang/x", timeout=WAIT)
    assert response.status_code == 504
    assert response.text == f"Gateway Timeout: {origin.url} sent nothing for 1 s (Netlify's proxy waits 26 s)\n"
    assert origin.ended["/api/hang/x"].wait(WAIT)  # and the edge let go of the origin

    # The timeout is per wait, not in total: pieces over longer than the timeout, each well within it, all arrive.
    head_and_end = 3  # the status line, the rest of the head, the last chunk: a gap before each
    assert GAP * (len(TRICKLE) + head_and_end) > STEADY.origin_timeout >= 10 * GAP
    with serve_in_thread(dev_ops.site_for(ROOT, origin.url), limits=STEADY) as steady:
        response = httpx.get(steady.url + "/api/trickle/x", timeout=WAIT)
    assert (response.status_code, response.content) == (200, b"".join(TRICKLE))


def test_an_origin_that_stalls_before_its_answer_began_is_a_504(origin_1s: RunningEdge, origin: Origin) -> None:
    # A small body is read before the answer starts: its stall is still a clean 504.
    response = httpx.get(origin_1s.url + "/api/stall-small/x", timeout=WAIT)
    assert response.status_code == 504 and origin.url in response.text


def test_an_origin_that_stalls_after_the_answer_began_aborts_the_client_connection(
    origin_1s: RunningEdge, origin: Origin
) -> None:
    raw, ending = exchange(origin_1s, get("/api/stall-stream/x"))
    assert ending in ("eof", "reset")  # not a hang: the origin never ends it, the edge's timeout did
    assert origin.ended["/api/stall-stream/x"].wait(WAIT)
    if raw:  # (a reset may discard what was on its way)
        assert raw.startswith(b"HTTP/1.1 200 ")
        assert raw.count(b"HTTP/1.1 ") == 1  # no second response written into the body
        assert not raw.endswith(b"0\r\n\r\n")  # and the chunked body never looks complete


def test_an_origin_that_closes_before_the_end_of_its_body(
    edge: RunningEdge, origin: Origin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    response = httpx.get(edge.url + "/api/die-small/x", timeout=WAIT)
    assert response.status_code == 502
    assert response.text == f"Bad Gateway: {origin.url} closed the connection before the end of its response body\n"

    # A large body streams: the client gets the origin's length, fewer bytes, and a cut.
    raw, ending = exchange(edge, get("/api/die-stream/x"))
    assert ending in ("eof", "reset")
    if raw:
        status, headers, body = parse(raw)
        assert (status, headers["content-length"]) == (200, "1000000")
        assert len(body) < 1_000_000 and raw.count(b"HTTP/1.1 ") == 1
    assert [record.getMessage() for record in caplog.records] == []  # no traceback in the edge's log


def test_expect_100_continue_is_answered_by_the_edge_and_not_forwarded(edge: RunningEdge, origin: Origin) -> None:
    body = b"b" * 2000  # curl sends Expect: 100-continue itself above 1 KB
    with socket.create_connection(("127.0.0.1", edge.port), timeout=WAIT) as sock:
        sock.sendall(
            b"POST /api/ok/upload HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 2000\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        raw, _ = read_to_end(sock)
    status, _, answer = parse(raw)
    assert (status, answer) == (200, b"ok")
    seen = origin.seen["/api/ok/upload"]
    assert seen.body == body
    assert "expect" not in {name.lower() for name, _ in seen.headers}


def test_an_oversized_response_head_from_the_origin_is_a_502(edge: RunningEdge, origin: Origin) -> None:
    response = httpx.get(edge.url + "/api/huge-head/x", timeout=WAIT)
    assert response.status_code == 502
    assert response.text.startswith(f"Bad Gateway: {origin.url} sent a response head the edge cannot accept (")
    assert response.text.count("\n") == 1


@pytest.mark.parametrize(
    ("what", "request_bytes"),
    [
        ("long line", get("/api/ok/long-line?" + "q" * 9000)),
        ("long field", get("/api/ok/long-field", "X-Big: " + "v" * 9000)),
        ("many fields", get("/api/ok/many-fields", *(f"X-Field-{number}: v" for number in range(101)))),
    ],
)
def test_request_heads_past_the_limits_are_refused_before_the_origin(
    edge: RunningEdge, origin: Origin, caplog: pytest.LogCaptureFixture, what: str, request_bytes: bytes
) -> None:
    caplog.set_level(logging.ERROR)
    raw, ending = exchange(edge, request_bytes)
    assert re.match(rb"HTTP/1\.[01] 400 ", raw) and ending == "eof", what  # (1.0: the head was never read)
    assert not [target for target in origin.seen if target.startswith("/api/ok/" + what.replace(" ", "-"))]
    assert [record.getMessage() for record in caplog.records] == []  # the client's mistake: no traceback


def open_slow_client(edge: RunningEdge) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", edge.port), timeout=WAIT)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: edge.test\r\nX-Slow: ")  # half a head, never finished
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_slow_clients_neither_stall_the_edge_nor_hold_it(client_1s: RunningEdge) -> None:
    slow = [open_slow_client(client_1s) for _ in range(16)]
    deadline = time.monotonic() + WAIT
    try:
        # Others are served while the slow ones trickle their heads...
        assert httpx.get(client_1s.url + "/", timeout=WAIT).status_code == 200
        assert httpx.get(client_1s.url + "/api/ok/meanwhile", timeout=WAIT).text == "ok"
        # ...and trickling does not keep a connection: each goes after the client timeout (a
        # byte every 0.1 s would keep it for ever if each byte restarted the timer).
        open_ones = set(slow)
        while open_ones and time.monotonic() < deadline:
            for sock in list(open_ones):
                if closed_by_peer(sock):
                    open_ones.discard(sock)
                else:
                    with contextlib.suppress(OSError):
                        sock.send(b"x")
            time.sleep(0.1)
        assert not open_ones, f"{len(open_ones)} of 16 slow clients still connected"
    finally:
        for sock in slow:
            sock.close()


def test_an_idle_keep_alive_connection_is_closed(client_1s: RunningEdge) -> None:
    with socket.create_connection(("127.0.0.1", client_1s.port), timeout=WAIT) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /api/ok/keep-alive HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        raw, ending = read_to_end(sock)
    status, _, body = parse(raw)
    assert (status, body) == (200, b"ok")
    assert ending == "eof"
    # Kept alive, not closed with the response: the idle timer starts after the request was
    # sent, so this is a floor no load can lower (and only a broken edge reaches WAIT).
    assert time.monotonic() - started >= CLIENT_1S.client_timeout


def test_a_client_that_stops_sending_its_body_gets_a_408_and_never_reaches_the_origin(
    client_1s: RunningEdge, origin: Origin
) -> None:
    partial = b"POST /api/ok/stalled-upload HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 1000\r\n\r\n" + b"u" * 10
    raw, ending = exchange(client_1s, partial)
    status, _, body = parse(raw)
    assert status == 408 and body.startswith(b"Request Timeout: the client "), body
    # The body is read before the edge connects, so the origin never saw it
    assert not [target for target in origin.seen if target.startswith("/api/ok/stalled-upload")]
    # and the client's connection is closed, once aiohttp has waited (as long again, at most) for the rest of the body
    assert ending == "eof"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_slow_body_reaches_the_origin_only_once_it_has_all_arrived(
    edge: RunningEdge, origin: Origin, chunked: bool
) -> None:
    """As the shared Caddy does for a release: the body is read first, so a slow client holds the
    edge's connection, not one of the app's workers. Seeded pieces, sent a tenth of a second apart."""
    rng = random.Random(7 + chunked)
    body = bytes(rng.randrange(256) for _ in range(3000))
    target = f"/api/ok/slow-body-{int(chunked)}"
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
    cuts = sorted(rng.sample(range(1, len(body)), 8))
    pieces = [body[i:j] for i, j in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    with socket.create_connection(("127.0.0.1", edge.port), timeout=WAIT) as sock:
        # Connection: close: the answer ends with the connection, not at the keep-alive timeout.
        head = b"POST %s HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n%s\r\n\r\n"
        sock.sendall(head % (target.encode(), framing))
        for piece in pieces:
            time.sleep(0.1)
            assert target not in origin.seen  # nothing of it yet, not even the head
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            time.sleep(0.1)
            assert target not in origin.seen
            sock.sendall(b"0\r\n\r\n")
        raw, _ = read_to_end(sock)
    assert parse(raw)[0] == 200 and origin.seen[target].body == body


def test_a_large_body_trickled_after_the_buffer_is_cut_at_the_whole_bodys_deadline(
    client_1s: RunningEdge, origin: Origin
) -> None:
    """Past the first MiB a body streams to the origin: its time is still bounded in all (1 s here),
    not per gap, so a byte every 0.2 s does not hold the origin's worker."""
    target = "/api/ok/trickled-large"
    with socket.create_connection(("127.0.0.1", client_1s.port), timeout=WAIT) as sock:
        started = time.monotonic()
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: edge.test\r\nContent-Length: %d\r\n\r\n" % (target.encode(), 4 << 20))
        sock.sendall(b"x" * ((1 << 20) + 100))
        answer = b""
        while not answer and time.monotonic() - started < WAIT:
            with contextlib.suppress(OSError):
                sock.send(b"y")
            if select.select([sock], [], [], 0.2)[0]:
                answer = sock.recv(65536) or b"(closed)"
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert elapsed < 10 * CLIENT_1S.client_timeout, elapsed  # not the WAIT that a per-gap timer alone would allow
    assert origin.ended[target].wait(WAIT)  # and the origin's connection was let go


def test_a_client_that_stops_reading_is_dropped(client_1s: RunningEdge, origin: Origin) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", client_1s.port))
        sock.sendall(get("/api/flood/x"))
        # The client reads nothing while the origin floods: the edge gives up on the client,
        # then on the origin, instead of holding both for ever.
        assert origin.ended["/api/flood/x"].wait(WAIT)
        _, ending = read_to_end(sock, wait=WAIT)
    assert ending in ("eof", "reset")


def test_connections_past_the_limit_get_a_503_and_a_freed_slot_serves_again(origin: Origin) -> None:
    limits = Limits(max_connections=4, client_timeout=10 * WAIT)  # the held ones stay for the whole test
    with serve_in_thread(dev_ops.site_for(ROOT, origin.url), limits=limits) as running:
        held = [socket.create_connection(("127.0.0.1", running.port), timeout=WAIT) for _ in range(4)]
        try:
            status, headers, body = parse(exchange(running, get("/"))[0])
            assert (status, headers["retry-after"]) == (503, "1")
            assert body == b"Service Unavailable: the edge has 4 connections open; retry shortly\n"
            held.pop().close()
            deadline = time.monotonic() + WAIT
            while (status := parse(exchange(running, get("/"))[0])[0]) == 503 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert status == 200
        finally:
            for sock in held:
                sock.close()


@pytest.mark.parametrize(("behaviour", "status"), [("switch", 101), ("status-99", 99)])
def test_an_answer_the_client_never_asked_for_is_a_502(
    edge: RunningEdge, origin: Origin, behaviour: str, status: int
) -> None:
    response = httpx.get(f"{edge.url}/api/{behaviour}/x", timeout=WAIT)
    assert response.status_code == 502
    assert response.text == f"Bad Gateway: {origin.url} answered with status {status}\n"


def test_an_invalid_escape_reaches_the_origin_as_the_client_sent_it(edge: RunningEdge, origin: Origin) -> None:
    raw, _ = exchange(edge, get("/api/bad-escape/x?a=%zz&b=100%"))
    assert parse(raw)[0] == 200
    assert "GET /api/bad-escape/x?a=%zz&b=100% HTTP/1.1" in [seen.line for seen in origin.seen.values()]
