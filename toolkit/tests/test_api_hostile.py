"""The Netlify API client against a hostile server: a real HTTP server on loopback that answers
every operation of the client with seeded scenarios of wrong shapes, statuses, drip rates, sizes
and text. Whatever it does, each call ends in a NetlifyError (never another exception), within
its deadline (not the drip's pace), without reading a huge body whole, and its message holds no
control character and no form of the token."""

from __future__ import annotations

import functools
import gzip
import html
import json
import random
import re
import socketserver
import threading
import time
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cnd_toolkit.netlify import api

TOKEN = "nfp_HostileServerTest0123456789abcdefABCDEF"
ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
SEED = 20261207


@dataclass
class Scenario:
    name: str
    status: int = 200
    body: bytes = b"{}"
    headers: tuple[tuple[str, str], ...] = ()
    drip_head: float = 0.0  # seconds between bytes of the status line and headers
    drip_body: float = 0.0  # seconds between bytes of the body
    huge: int = 0  # bytes of zeros sent as the body, as fast as the client reads them


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.scenario = Scenario("unset")
        self.stop = threading.Event()


class Handler(socketserver.StreamRequestHandler):
    server: Server

    def handle(self) -> None:
        while not self.server.stop.is_set():
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = self.connection.recv(65536)
                if not chunk:
                    return
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            lengths = [line[15:] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
            length = int(lengths[0]) if lengths else 0
            while len(rest) < length:
                chunk = self.connection.recv(65536)
                if not chunk:
                    return
                rest += chunk
            if not self.answer(self.server.scenario):
                return

    def answer(self, s: Scenario) -> bool:
        body = s.body if not s.huge else b""
        size = s.huge or len(body)
        lines = [f"HTTP/1.1 {s.status} Whatever", f"Content-Length: {size}", "Content-Type: application/json"]
        lines += [f"{name}: {value}" for name, value in s.headers]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.send(head, s.drip_head)
            if s.huge:
                block = b"0" * 65536
                for _ in range(s.huge // len(block)):
                    if self.server.stop.is_set():
                        return False
                    self.connection.sendall(block)
            else:
                self.send(body, s.drip_body)
        except OSError:
            return False
        return True

    def send(self, data: bytes, drip: float) -> None:
        if not drip:
            self.connection.sendall(data)
            return
        for byte in data:
            if self.server.stop.is_set():
                raise OSError("stopping")
            self.connection.sendall(bytes([byte]))
            time.sleep(drip)


@pytest.fixture
def server() -> Iterator[Server]:
    found = Server()
    thread = threading.Thread(target=found.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        found.stop.set()
        found.shutdown()
        found.server_close()


OPERATIONS: dict[str, Callable[[api.NetlifyClient], Any]] = {
    "get_site": lambda c: c.get_site("site-1"),
    "create_deploy": lambda c: c.create_deploy("site-1", {"index.html": "a" * 40}, draft=True),
    "get_deploy": lambda c: c.get_deploy("site-1", "d-1"),
    "list_deploys": lambda c: c.list_deploys("site-1"),
    "upload_file": lambda c: c.upload_file("d-1", "index.html", b"<p>hi</p>"),
    "restore_deploy": lambda c: c.restore_deploy("site-1", "d-1"),
    "list_split_tests": lambda c: c.list_split_tests("site-1"),
    "create_split_test": lambda c: c.create_split_test("site-1", {"main": 90, "canary": 10}),
}


def usable(operation: str, scenario: Scenario) -> bool:
    """Whether the answer is one the operation can use, by Netlify's OpenAPI spec: a 2xx, and for
    all but an upload the JSON it documents (a deploy and a split test have an id; a deploy's
    ``required`` lists SHA1 digests; a site's ``published_deploy`` is a deploy)."""
    if not 200 <= scenario.status < 300:
        return False
    if operation == "upload_file":
        return True
    try:
        data = json.loads(scenario.body)
    except (ValueError, RecursionError):
        return False

    def has_id(item: Any) -> bool:  # Netlify's ids: 24 hex digits; letters, digits, _ and - at most
        return isinstance(item, dict) and isinstance(item.get("id"), str) and bool(ID.fullmatch(item["id"]))

    def deploy(item: Any) -> bool:
        required = item.get("required") if isinstance(item, dict) else None
        listed = isinstance(required or [], list) and all(isinstance(sha, str) for sha in required or [])
        if not (has_id(item) and listed):
            return False
        texts = [item.get(key) for key in ("state", "deploy_url", "deploy_ssl_url", "title", "branch")]
        if not all(text is None or isinstance(text, str) for text in texts):  # strings, in the spec
            return False
        state, urls = item.get("state") or "ready", [item.get(key) or "" for key in ("deploy_url", "deploy_ssl_url")]
        readable = [url for url in urls if re.fullmatch(r"https://[a-z0-9.-]+(/[!-~]*)?", url)]
        return bool(re.fullmatch("[a-z_]+", state)) and len(readable) == len([url for url in urls if url])

    def split_test(item: Any) -> bool:  # branches: a list; each percentage a number 0-100
        branches = item.get("branches") or [] if isinstance(item, dict) else None
        if not has_id(item) or not isinstance(branches, list):
            return False
        shares = [b.get("percentage") for b in branches if isinstance(b, dict) and isinstance(b.get("branch"), str)]
        return all(p is None or (type(p) in {int, float} and 0 <= p <= 100) for p in shares)

    if operation in {"create_deploy", "get_deploy", "restore_deploy"}:
        return deploy(data)
    if operation == "list_deploys":
        return isinstance(data, list) and all(deploy(item) for item in data)
    if operation == "get_site":
        return isinstance(data, dict) and isinstance(data.get("published_deploy") or {}, dict)
    if operation == "create_split_test":
        return split_test(data)
    return isinstance(data, list) and all(split_test(item) for item in data)  # list_split_tests


def shapes(rng: random.Random) -> list[Scenario]:
    """200s whose JSON is not what any operation returns, and JSON no parser should have to read."""
    values: list[Any] = [[], "x", None, 5, 1.5, True, {}, {"required": 5}, {"required": ["a" * 40, 5]}]
    values += [{"id": "d-1", "required": "abc"}, {"published_deploy": "x"}, [1, 2], [{"id": 5}, "x"], {"id": 7}]
    values += [{"id": "d1\nFAKE: line"}, {"id": TOKEN + "\t"}, {"id": "d 1"}, [{"id": "ok"}, {"id": "\x1b[2J"}]]
    values += [{"id": "d-1", "state": ["x"] * 300}, {"id": "d-1", "deploy_ssl_url": "https://x\x1b]0;pwned\x07.app"}]
    values += [{"id": "d-1", "deploy_url": 5}, {"id": "d-1", "deploy_url": "https://d-1--s.netlify.app"}]
    values += [[{"id": "s1", "branches": 5}], [{"id": "s1", "branches": [{"branch": "main", "percentage": -3}]}]]
    values += [{"id": "s1", "branches": [{"branch": "main", "percentage": 100}, {"branch": "c", "percentage": 0}]}]
    found = [Scenario(f"json {json.dumps(v)[:30]}", body=json.dumps(v).encode()) for v in values]
    for number in (b"1e999", b"NaN", b"-Infinity", b"1" * 5000):  # JSON Python reads, as no number 0-100
        body = b'[{"id": "s1", "branches": [{"branch": "main", "percentage": %s}]}]' % number
        found += [Scenario(f"percentage {number[:8]!r}", body=body), Scenario("one split test", body=body[1:-1])]
    found += [
        Scenario("nested 200,000 deep", body=b"[" * 200_000 + b"]" * 200_000),
        Scenario("objects nested 100,000 deep", body=b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
        Scenario("not JSON", body=b"<html>hello</html>"),
        Scenario("empty", body=b""),
        Scenario("not UTF-8", body=b'{"id": "\xff\xfe"}'),
    ]
    for n in range(12):  # seeded junk: truncations and byte flips of a real deploy
        real = json.dumps({"id": "d-1", "state": "ready", "required": ["a" * 40]}).encode()
        cut = bytearray(real[: rng.randint(0, len(real))])
        for _ in range(rng.randint(0, 3)):
            if cut:
                cut[rng.randrange(len(cut))] = rng.randrange(256)
        found.append(Scenario(f"junk {n}", body=bytes(cut)))
    return found


def statuses(rng: random.Random) -> list[Scenario]:
    body = json.dumps({"id": "d-1", "state": "ready", "required": []}).encode()
    found = [
        Scenario(f"redirect {code}", status=code, body=body, headers=(("Location", "https://evil.example/x"),))
        for code in (301, 302, 303, 307, 308)
    ]
    found += [Scenario(f"status {code}", status=code, body=body) for code in (304, 400, 401, 404, 409, 418, 422, 451)]
    seeded = rng.randint(300, 399)
    found += [Scenario(f"status {seeded} (seeded)", status=seeded, body=body)]
    # Retry-After dates far out of range, seeded: a wait no clock can take is no wait.
    zones = ["+99999999999999999999", "-9999", "GMT", "+0000"]
    for _ in range(6):
        year = rng.choice([1, 1900, 9999, 10**6, 10**20])
        when = f"Mon, {rng.randint(1, 31):02} Jan {year} {rng.randint(0, 99):02}:00:00 {rng.choice(zones)}"
        found.append(Scenario(f"429 until {when}", status=429, body=b"{}", headers=(("Retry-After", when),)))
    return found


def texts() -> list[Scenario]:
    """Errors whose text would move the cursor, retitle the terminal, or echo the token in some case."""
    hostile = [
        json.dumps({"message": f"split {TOKEN[:20]}\n{TOKEN[20:]}"}),  # masking, then joining the line, would show it
        json.dumps({"message": f"hidden {TOKEN[:9]}\u200b{TOKEN[9:30]}\u00ad{TOKEN[30:]}"}),
        f"\x1b[2J\x1b]0;pwned\x07bad token {TOKEN.lower()}",
        f"{TOKEN.upper()} \x9b31m\u202e",
        json.dumps({"message": f"nope \x1b[31m{TOKEN.swapcase()}\x1b[0m"}),
        json.dumps({"message": f"line\r\nX-Injected: 1 {TOKEN}"}),
    ]
    return [Scenario(f"text {n}", status=422, body=text.encode()) for n, text in enumerate(hostile)]


# Characters a server can put between a token's characters and a terminal shows as nothing, as
# an escape, or barely: whitespace, C0 and C1 controls, zero-width and bidi marks, variation
# selectors, tag characters, combining marks, fillers.
BETWEEN = [" ", "\t", "\n", "\x1b", "\x9b", "\x00", "\u200b", "\u00ad", "\u034f", "\u202e", "\ufe0f",
           "\U000e0100", "\U000e0041", "\U000e0020", "\u180b", "\U0001d173", "\u0300", "\u20dd", "\u2800",
           "\u3164", "\u2061"]  # fmt: skip


def fullwidth(c: str) -> str:
    return chr(0xFF00 + ord(c) - 0x20)


def bold(c: str) -> str:
    start = 0x1D7CE - 48 if c.isdigit() else 0x1D400 - 65 if c.isupper() else 0x1D41A - 97
    return chr(start + ord(c))


def echoes(rng: random.Random, count: int) -> list[Scenario]:
    """Seeded echoes of the token as a server could send them back: in any case, in fullwidth or
    bold letters, cut short, with characters from BETWEEN inside it, in a JSON message, in a body
    that is no JSON (past its first 4,000 characters too), in Content-Encoding or Location."""
    found = []
    for n in range(count):
        token = TOKEN[: len(TOKEN) - rng.randint(0, 5)] if rng.random() < 0.3 else TOKEN
        case = rng.choice([str.lower, str.upper, str.swapcase, lambda t: t, lambda t: "".join(
            c.upper() if rng.random() < 0.5 else c.lower() for c in t)])  # fmt: skip
        token = case(token)
        if rng.random() < 0.2:  # fullwidth or mathematical bold letters and digits
            other = rng.choice([fullwidth, bold])
            token = "".join(other(c) if c.isascii() and c.isalnum() and rng.random() < 0.7 else c for c in token)
        if rng.random() < 0.7:
            every = rng.choice([1, 2, 3, 7, 11])
            marks = rng.sample(BETWEEN, rng.randint(1, 3))
            token = "".join(c + (rng.choice(marks) if i % every == every - 1 else "") for i, c in enumerate(token))
        encode = rng.choice([lambda t: t] * 6 + [lambda t: "".join(f"%{ord(c):02X}" for c in t.encode("utf-8").decode(
            "latin-1")), lambda t: "".join(f"&#x{ord(c):x};" for c in t)])  # fmt: skip
        token = encode(token)
        where = rng.choice(["message", "raw", "far", "encoding", "location", "other key", "bad header"])
        if where == "other key":  # JSON, but no message: its \u escapes are shown as they came
            found.append(Scenario(f"echo {n} under another key", 404, json.dumps({"error": token}).encode()))
        elif where == "bad header":  # a header no HTTP parser takes: its bytes end up in the error
            header = "".join(c for c in token if ord(c) < 256 and c not in "\r\n") + "\x00"
            found.append(Scenario(f"echo {n} in a bad header", 200, b"{}", headers=(("X-Echo", header),)))
        elif where == "message":
            found.append(Scenario(f"echo {n} in a message", 422, json.dumps({"message": f"bad {token}"}).encode()))
        elif where in {"raw", "far"}:
            pad = " " * (rng.randint(3900, 4100) if where == "far" else rng.randint(0, 50))
            found.append(Scenario(f"echo {n}, {where}", 422, f"{pad}sent: {token}".encode()))
        else:  # headers: latin-1 text only, as HTTP carries it
            header = "".join(c for c in token if ord(c) < 256 and c not in "\r\n\x00")
            name, status = ("Content-Encoding", 200) if where == "encoding" else ("Location", 302)
            found.append(Scenario(f"echo {n} in {name}", status, b"{}", headers=((name, f"br {header}"),)))
    return found


def call(server: Server, scenario: Scenario, operation: str, **options: Any) -> tuple[BaseException | None, float]:
    server.scenario = scenario
    client = api.NetlifyClient(
        TOKEN, f"http://127.0.0.1:{server.server_address[1]}/api/v1", retries=1, sleep=lambda s: None, **options
    )
    started = time.monotonic()
    try:
        OPERATIONS[operation](client)
    except BaseException as exc:
        return exc, time.monotonic() - started
    finally:
        client.close()
    return None, time.monotonic() - started


def assert_clean(exc: BaseException, where: str) -> None:
    message = str(exc)
    assert isinstance(exc, api.NetlifyError), f"{where}: {type(exc).__name__}: {message[:300]}"
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u202e\u2028" for c in message), (where, message)
    assert TOKEN.lower() not in message.lower(), (where, message)
    assert not read_in(message), (where, message)


def read_in(message: str) -> str:
    """A run of 12 of the token's letters and digits that a reader finds in ``message``: escapes
    (\\x1b, \\u200b) read past, as everything but letters and digits is, and letters in any case
    or width (fullwidth, bold, circled) read as the plain ones."""
    token = "".join(c for c in TOKEN.lower() if c.isalnum())
    for reading in (message, urllib.parse.unquote(urllib.parse.unquote(message)), html.unescape(message)):
        plain = re.sub(r"\\(?:x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})", "", reading)
        letters = "".join(c for c in unicodedata.normalize("NFKD", plain).lower() if c.isascii() and c.isalnum())
        found = next((token[i : i + 12] for i in range(len(token) - 11) if token[i : i + 12] in letters), "")
        if found:
            return found
    return ""


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_wrong_shapes_and_statuses_are_netlify_errors(server: Server, operation: str) -> None:
    rng = random.Random(f"{SEED}-{operation}")
    for scenario in shapes(rng) + statuses(rng):
        exc, _ = call(server, scenario, operation)
        assert (exc is None) == usable(operation, scenario), (operation, scenario.name, exc)
        if exc is None:
            continue
        assert_clean(exc, f"{operation}, {scenario.name}")
        if 300 <= scenario.status < 400:
            assert "redirect" in str(exc) or scenario.status == 304, (operation, scenario.name, str(exc))


@pytest.mark.parametrize("operation", ["get_site", "upload_file"])
def test_hostile_text_is_shown_as_escapes_and_the_token_never(server: Server, operation: str) -> None:
    for scenario in texts():
        exc, _ = call(server, scenario, operation)
        assert exc is not None
        assert_clean(exc, f"{operation}, {scenario.name}")


@pytest.mark.parametrize("operation", ["get_site", "upload_file"])
def test_the_token_echoed_in_any_form_is_never_shown(server: Server, operation: str) -> None:
    for scenario in echoes(random.Random(f"{SEED}-echo-{operation}"), 80):
        exc, _ = call(server, scenario, operation)
        assert exc is not None, scenario.name
        assert_clean(exc, f"{operation}, {scenario.name}")


@pytest.mark.parametrize(
    "scenario",
    [
        Scenario("body dripped", body=b'{"id": "' + b"x" * 1000 + b'"}', drip_body=0.2),
        Scenario("head dripped", drip_head=0.2, headers=tuple((f"X-{n}", "y" * 40) for n in range(40))),
    ],
    ids=lambda s: s.name,
)
def test_a_server_that_drips_is_cut_off_at_the_deadline(server: Server, scenario: Scenario) -> None:
    """Each read gets its byte well within the per-read timeout: only a deadline on the whole
    attempt ends it. Dripped out, the answer would take over 200 s and arrive whole; with attempts
    of 1 s (the call bounded at 3 s), each is cut off by its deadline, which the message names."""
    exc, _ = call(server, scenario, "get_deploy", attempt_seconds=1.0, call_seconds=3.0)
    assert exc is not None
    assert_clean(exc, scenario.name)
    assert isinstance(exc, api.ConnectionFailed) and "not over within" in str(exc), str(exc)


def test_a_huge_answer_is_refused_not_read_whole(server: Server) -> None:
    """200 MB of body, as fast as it can go: the client stops at its cap."""
    exc, _ = call(server, Scenario("200 MB", huge=200 * 1024 * 1024), "get_deploy")
    assert exc is not None
    assert_clean(exc, "200 MB")
    assert "more than 8 MB" in str(exc), str(exc)


def test_a_server_slow_on_every_upload_is_cut_off_at_the_phase_deadline() -> None:
    """Each upload answers well within its own call's deadline (0.4 s of 90), so only the upload
    phase's deadline stops a deploy that would otherwise take as long as the server likes."""
    import hashlib
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cnd_toolkit.netlify import publish

    bodies = {f"f{n}.html": f"<p>{n}</p>".encode() for n in range(40)}
    files = publish.SiteFiles(bodies, {path: hashlib.sha1(body).hexdigest() for path, body in bodies.items()})

    class Slow(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def answer(self, data: dict[str, Any]) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.answer({"id": "d-1", "state": "prepared", "required": sorted(set(files.digests.values()))})

        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(0.4)
            self.answer({"id": "f"})

        def do_GET(self) -> None:
            self.answer({"id": "d-1", "state": "ready"})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    client = api.NetlifyClient(TOKEN, f"http://127.0.0.1:{httpd.server_address[1]}/api/v1", retries=0)
    try:  # 40 uploads of 0.4 s, 5 at a time, take 3.2 s: past the phase's 1 s
        with pytest.raises(api.NetlifyError, match=r"took over 1 s for the uploads of deploy d-1 \(\d+ of 40 done\)"):
            publish.deploy_draft(client, "site-1", files, upload_phase_seconds=1.0, sleep=lambda s: None)
    finally:
        client.close()
        httpd.shutdown()


@functools.cache
def bomb(twice: bool) -> bytes:
    once = gzip.compress(b"0" * (200 * 1024 * 1024), compresslevel=1)
    return gzip.compress(once, compresslevel=9) if twice else once


@pytest.mark.parametrize("encoding", ["gzip", "gzip, gzip", "br", "deflate, gzip"])
def test_a_compressed_bomb_is_refused_within_the_cap(server: Server, encoding: str) -> None:
    """200 MB of zeros in a few hundred kilobytes (twice gzipped: a few kilobytes): decompressed
    only up to the cap, and an encoding the client did not ask for is refused unread."""
    import tracemalloc

    body = bomb(twice=encoding == "gzip, gzip")
    scenario = Scenario(encoding, body=body, headers=(("Content-Encoding", encoding),))
    tracemalloc.start()
    try:
        exc, _ = call(server, scenario, "get_deploy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert exc is not None
    assert_clean(exc, encoding)
    assert isinstance(exc, api.UnexpectedAnswer), str(exc)
    assert peak < 64 * 1024 * 1024, f"{peak / 1e6:.0f} MB at the peak"


def test_a_rate_limit_longer_than_the_call_is_reported_as_one(server: Server) -> None:
    scenario = Scenario("429", status=429, body=b"{}", headers=(("Retry-After", "99999"),))
    exc, _ = call(server, scenario, "get_site", call_seconds=5.0)
    assert isinstance(exc, api.RateLimited), f"{type(exc).__name__}: {exc}"  # not a wait past the call


def test_a_failed_deploys_reason_is_quoted_as_any_server_text(server: Server) -> None:
    """A deploy in state error carries Netlify's own words: an echo of the token in them, in any
    form echoes() makes, is never shown; ordinary words are."""
    from cnd_toolkit.netlify import publish

    rng = random.Random(f"{SEED}-error-message")
    reasons = ["Build script returned non-zero exit code: 2"]
    reasons += [json.loads(s.body).get("message", "") for s in echoes(rng, 60) if s.body.startswith(b'{"message"')]
    client = api.NetlifyClient(TOKEN, f"http://127.0.0.1:{server.server_address[1]}/api/v1", retries=0)
    try:
        for reason in reasons:
            body = json.dumps({"id": "d-1", "state": "error", "error_message": reason}).encode()
            server.scenario = Scenario("error", body=body)
            with pytest.raises(api.NetlifyError) as caught:
                publish._wait(client, "site-1", "d-1", 5.0, 0.1, lambda s: None, until={"ready"})
            assert_clean(caught.value, reason)
            if reason == reasons[0]:
                assert reason in str(caught.value)
    finally:
        client.close()
    assert len(reasons) > 10
