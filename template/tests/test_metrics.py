"""Prometheus metrics (api/metrics.py) under real gunicorn, several workers, as the image runs it.

Counted across workers; the metrics listener serves /metrics and nothing else; the public port
serves it only to bearers of the token; hostile paths, methods and encodings add no series.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from api import create_app
from api.config import ConfigError, load_config
from tests.test_server import Answer, Server, free_port, gunicorn, raw, read_answer, wait_for

TOKEN = "t0ken-" + "x" * 40
SERIES = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a text exposition: (name, labels, value)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        found = SERIES.match(line)
        assert found, f"not a sample line: {line!r}"
        labels = dict(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', found["labels"] or ""))
        samples.append((found["name"], labels, float(found["value"])))
    return samples


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, found, v in samples if n == name and all(found.get(k) == w for k, w in labels.items()))


def scrape_answer(port: int) -> Answer:
    """GET /metrics; an answer cut short (its worker killed while sending it) is no answer."""
    answer = raw(port, b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", wait=60)
    length = answer.headers.get("content-length", "0")
    if len(answer.body) < int(length):
        raise ConnectionError(f"the answer ended after {len(answer.body)} of its {length} bytes")
    return answer


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    answer = scrape_answer(port)
    assert answer.status == 200, answer
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return parse(answer.body.decode())


def get(port: int, path: str, extra: bytes = b"", method: bytes = b"GET") -> tuple[int, bytes]:
    answer = raw(
        port,
        method + b" " + path.encode("latin-1") + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + extra + b"\r\n",
        wait=60,
    )
    return answer.status, answer.body


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Server, int, Path]:
    tmp = tmp_path_factory.mktemp("metrics")
    metrics_port, directory = free_port(), tmp / "multiproc"
    with gunicorn(
        tmp,
        "--bind",
        f"127.0.0.1:{metrics_port}",
        WEB_CONCURRENCY="3",
        GUNICORN_THREADS="2",
        METRICS_PORT=str(metrics_port),
        PROMETHEUS_MULTIPROC_DIR=str(directory),
        APP_METRICS_TOKEN_SHA256=hashlib.sha256(TOKEN.encode()).hexdigest(),
        APP_LOG_LEVEL="WARNING",
    ) as server:
        yield server, metrics_port, directory


def test_every_request_is_counted_whichever_worker_answers_it(served: tuple[Server, int, Path]) -> None:
    server, metrics_port, directory = served
    before = scrape(metrics_port)
    count = 600

    def one(i: int) -> int:
        return get(server.port, f"/api/greeting?name=n{i}")[0]

    with ThreadPoolExecutor(12) as pool:  # a new connection each: the kernel spreads them over the workers
        statuses = list(pool.map(one, range(count)))
    assert statuses == [200] * count
    after = scrape(metrics_port)
    labels = {"method": "GET", "route": "/api/greeting"}
    assert (
        total(after, "http_requests_total", status="200", **labels)
        - total(before, "http_requests_total", status="200", **labels)
        == count
    )
    assert (
        total(after, "http_request_duration_seconds_count", **labels)
        - total(before, "http_request_duration_seconds_count", **labels)
        == count
    )
    # Every le bucket counts at most the requests, and +Inf all of them.
    assert total(after, "http_request_duration_seconds_bucket", le="+Inf", **labels) == total(
        after, "http_request_duration_seconds_count", **labels
    )
    # More than one worker answered: each writes its own file, and the scrape added them up.
    writers = {p.name for p in directory.glob("counter_*.db")}
    assert len(writers) >= 2, writers
    info = [labels for name, labels, value in after if name == "app_info" and value == 1]
    assert [i["name"] for i in info] == [load_config({})["APP_NAME"]]  # the release is named
    assert total(after, "http_requests_in_flight") == 0


def test_a_request_in_the_app_is_in_flight_and_a_killed_worker_keeps_its_counts(
    tmp_path: Path,
) -> None:
    metrics_port = free_port()
    with gunicorn(
        tmp_path,
        "--bind",
        f"127.0.0.1:{metrics_port}",
        WEB_CONCURRENCY="2",
        GUNICORN_THREADS="1",  # the sync worker: the app itself reads the slow body below
        METRICS_PORT=str(metrics_port),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "mp"),
        APP_LOG_LEVEL="WARNING",
    ) as server:
        for _ in range(10):
            assert get(server.port, "/api/version")[0] == 200
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=60)
        slow.sendall(
            b'POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{"a"'
        )
        assert wait_for(lambda: total(scrape(metrics_port), "http_requests_in_flight") == 1, seconds=60)
        slow.sendall(b": 1}")
        assert read_answer(slow).status == 200
        slow.close()
        assert wait_for(lambda: total(scrape(metrics_port), "http_requests_in_flight") == 0, seconds=60)
        counted = total(scrape(metrics_port), "http_requests_total", route="/api/version")
        assert counted == 10
        # Kill the workers, round after round, while a client scrapes without pause: gunicorn
        # replaces them, the dead ones' counts stay (folded into the archive files, so no file is
        # left per dead worker), and no scrape ever sees the count go down (a "reset").
        directory, seen, wrong, stop = tmp_path / "mp", [], [], threading.Event()

        def scraping() -> None:
            while not stop.is_set():
                try:
                    answer = scrape_answer(metrics_port)
                except OSError:  # the worker answering was killed: no answer, or one cut short
                    continue
                if answer.status == 503:  # no consistent state in time: a failed scrape, no number
                    continue
                try:
                    assert answer.status == 200, answer
                    seen.append(total(parse(answer.body.decode()), "http_requests_total", route="/api/version"))
                except AssertionError as exc:
                    wrong.append(exc)

        watcher = threading.Thread(target=scraping, daemon=True)
        watcher.start()
        asked = 10
        for _ in range(4):
            pids = {int(p.stem.rpartition("_")[2]) for p in directory.glob("counter_[0-9]*.db")}
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            # gunicorn's master has reaped them and folded their files (child_exit).
            assert wait_for(lambda: not any(any(directory.glob(f"*_{pid}.db")) for pid in pids), seconds=60)  # noqa: B023
            for _ in range(5):
                assert get(server.port, "/api/version")[0] == 200  # waits for a replacement to accept
            asked += 5
        stop.set()
        watcher.join(60)
        assert not watcher.is_alive()
        assert not wrong, wrong
        after = scrape(metrics_port)
        assert total(after, "http_requests_total", route="/api/version") == asked
        assert total(after, "http_requests_in_flight") == 0
        assert len(seen) > 10 and seen == sorted(seen), seen  # never a reset
        files = sorted(p.name for p in directory.glob("*.db"))
        assert "counter_archive.db" in files and "histogram_archive.db" in files
        assert len([f for f in files if f.startswith("counter_")]) <= 3, files  # archive + the live workers'
        assert len(files) <= 3 * 5, files


def test_the_metrics_listener_serves_metrics_and_nothing_else(served: tuple[Server, int, Path]) -> None:
    _, metrics_port, _ = served
    for path in ["/api/greeting", "/healthz", "/", "/metrics/", "/metrics/../api/version", "//metrics", "/METRICS"]:
        status, body = get(metrics_port, path)
        assert (status, body) == (404, b""), path
    assert get(metrics_port, "/metrics", method=b"POST")[0] == 405
    assert get(metrics_port, "/metrics", method=b"HEAD")[0] == 200
    # The query string is not the path: still the exposition.
    status, body = get(metrics_port, "/metrics?name[]=x")
    assert status == 200 and b"http_requests_total" in body


def hostile_path(rng: random.Random) -> str:
    """Ways to spell /metrics, or something near it, that a proxy or client might send."""
    name = "".join(c.upper() if rng.random() < 0.2 else c for c in "metrics")
    encoded = "".join(f"%{ord(c):02x}" if rng.random() < 0.3 else c for c in name)
    prefix = rng.choice(["/", "//", "/./", "/api/../", "/%2e/", "/api/%2e%2e/", "/x/../"])
    suffix = rng.choice(["", "/", "?a=1", ";x", "%00", "%20", "#f", ".txt", "/..", "%2f"])
    return prefix + rng.choice([name, encoded]) + suffix


def test_the_public_port_serves_metrics_only_to_bearers_of_the_token(served: tuple[Server, int, Path]) -> None:
    server, _, _ = served
    good = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
    status, body = get(server.port, "/metrics", good)
    assert status == 200 and b"http_requests_total" in body
    assert get(server.port, "/metrics", b"authorization: bearer " + TOKEN.encode() + b"\r\n")[0] == 200
    for header in [
        b"",
        b"Authorization: Bearer wrong\r\n",
        b"Authorization: Basic " + TOKEN.encode() + b"\r\n",
        b"Authorization: Bearer\r\n",
        b"Authorization: Bearer " + TOKEN[:-1].encode() + b"\r\n",
        b"Authorization: Bearer " + TOKEN.encode() + b"x\r\n",
    ]:
        status, body = get(server.port, "/metrics", header)
        assert status == 401, header
        assert b"http_requests_total" not in body
    rng = random.Random(20261203)
    for _ in range(300):
        path = hostile_path(rng)
        status, body = get(server.port, path)  # no token
        assert b"http_requests_total" not in body, path
        assert status in {400, 401, 404, 405}, (path, status)


def test_no_path_method_or_encoding_adds_a_series(served: tuple[Server, int, Path]) -> None:
    server, metrics_port, _ = served
    rng = random.Random(7)
    alphabet = "abc/.%-_~:@!$&'()*+,;=?" + "é" + "\x7f"
    for _ in range(400):
        path = "/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        method = rng.choice([b"GET", b"POST", b"BREW", b"get", b"PROPFIND", b"X" * 20, b"DELETE"])
        with contextlib.suppress(ConnectionError, OSError):
            get(server.port, path.replace("é", "%C3%A9").replace("\x7f", "%7f"), method=method)
    app = create_app({"LOG_LEVEL": "WARNING"})
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    samples = scrape(metrics_port)
    for name, labels, _ in samples:
        if name.startswith("http_request"):
            assert labels.get("route", "<unmatched>") in rules | {"<unmatched>"}, labels
            assert labels.get("method", "GET") in {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"}
            assert re.fullmatch(r"[1-5]\d\d", labels.get("status", "200")), labels


def test_a_stale_directory_is_emptied_at_start_and_a_read_only_one_is_one_line(tmp_path: Path) -> None:
    directory = tmp_path / "mp"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"\0" * 16)  # a previous run's
    (directory / "keep.txt").write_text("not ours")
    metrics_port = free_port()
    with gunicorn(
        tmp_path,
        "--bind",
        f"127.0.0.1:{metrics_port}",
        METRICS_PORT=str(metrics_port),
        PROMETHEUS_MULTIPROC_DIR=str(directory),
        APP_LOG_LEVEL="WARNING",
    ) as server:
        assert not (directory / "counter_1.db").exists()
        assert (directory / "keep.txt").exists()  # only the files prometheus-client writes go
        assert get(server.port, "/healthz")[0] == 200
        assert total(scrape(metrics_port), "http_requests_total", route="/healthz") >= 1
    # A directory no user can make (its parent is a file), so this runs as root too; root writes
    # anywhere, so the read-only directory runs only for other users (CI's runner is one).
    unusable = [tmp_path / "a-file" / "sub"]
    (tmp_path / "a-file").write_text("")
    if os.geteuid() != 0:
        (tmp_path / "locked").mkdir(mode=0o500)
        unusable.append(tmp_path / "locked" / "sub")
    for path in unusable:
        _, err = _start_and_fail(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(path))
        assert len(err) == 1 and err[0].startswith(f"serve.py: PROMETHEUS_MULTIPROC_DIR='{path}': "), err


def _start_and_fail(tmp_path: Path, **env: str) -> tuple[int, list[str]]:
    import subprocess
    import sys

    from tests.test_server import ROOT

    proc = subprocess.run(
        [sys.executable, "serve.py"], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    return proc.returncode, proc.stderr.splitlines()


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"METRICS_PORT": "http"}, "METRICS_PORT='http'"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT"),
        ({"APP_METRICS_TOKEN_SHA256": TOKEN}, "APP_METRICS_TOKEN_SHA256 is not a SHA-256"),
        ({"APP_METRICS_TOKEN_SHA256": "g" * 64}, "APP_METRICS_TOKEN_SHA256 is not a SHA-256"),
    ],
)
def test_bad_metrics_settings_are_one_line_and_exit_2(tmp_path: Path, env: dict[str, str], needle: str) -> None:
    code, err = _start_and_fail(tmp_path, PORT=str(free_port()), **env)
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert TOKEN not in err[0]  # a token pasted where its digest belongs is not echoed


def test_the_metrics_port_cannot_be_the_public_port(tmp_path: Path) -> None:
    port = str(free_port())
    code, err = _start_and_fail(tmp_path, PORT=port, METRICS_PORT=port)
    assert code == 2 and err == [
        f"serve.py: gunicorn.conf.py: METRICS_PORT={port} is PORT too; give /metrics a port of its own, or 0"
    ]


def test_config_reads_the_metrics_settings() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    config = load_config({"METRICS_PORT": "0", "APP_METRICS_TOKEN_SHA256": digest.upper()})
    assert config["METRICS_PORT"] == 0 and config["METRICS_TOKEN_SHA256"] == digest
    with pytest.raises(ConfigError):
        load_config({"METRICS_PORT": "-1"})


def test_app_metrics_off_counts_nothing() -> None:
    from api import metrics

    client = create_app({"LOG_LEVEL": "WARNING", "METRICS": False}).test_client()
    before = total(parse(metrics.exposition().decode()), "http_requests_total", route="/api/version")
    assert client.get("/api/version").status_code == 200
    assert total(parse(metrics.exposition().decode()), "http_requests_total", route="/api/version") == before
    with pytest.raises(ConfigError, match="APP_METRICS='maybe' is not a boolean"):
        load_config({"APP_METRICS": "maybe"})


def test_without_a_token_or_listener_the_app_has_no_metrics_route() -> None:
    client = create_app({"LOG_LEVEL": "WARNING"}).test_client()
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_counting_is_thread_safe_in_one_process() -> None:
    from api import metrics

    before = total(parse(metrics.exposition().decode()), "http_requests_total", route="/threads")

    def count() -> None:
        for _ in range(1000):
            metrics.observe("GET", "/threads", "200", 0.001)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: count(), range(8)))
    assert total(parse(metrics.exposition().decode()), "http_requests_total", route="/threads") - before == 8000


def test_a_scrape_never_reads_the_files_while_a_dead_workers_counts_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock between compact() (gunicorn's master) and scrapes (the workers), in one process:
    a scrape that cannot have it answers 503 instead of reading; a compact() that cannot have it
    leaves the files for the next one; a file a worker is still creating is not a 500."""
    import fcntl

    from prometheus_client import CollectorRegistry
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from api import metrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = CollectorRegistry()
    metrics._FilesCollector(registry, str(tmp_path))
    monkeypatch.setattr(metrics, "MULTIPROCESS", True)
    monkeypatch.setattr(metrics, "_SCRAPED", registry)
    monkeypatch.setattr(metrics, "_left", set())
    monkeypatch.setattr(metrics, "SCRAPE_LOCK_SECONDS", 0)  # one try: the lock is held below, or free
    monkeypatch.setattr(metrics, "COMPACT_LOCK_SECONDS", 0)
    key = mmap_key("http_requests", "http_requests_total", ["route"], ["/x"], "HTTP requests answered")
    worker = MmapedDict(str(tmp_path / "counter_111.db"))  # a worker's file, as it writes one
    worker.write_value(key, 3.0, 0.0)
    worker.close()
    (tmp_path / "counter_222.db").touch()  # a worker's file, created and not sized yet

    def get() -> tuple[str, float]:
        answered: list[str] = []
        body = b"".join(metrics.serve({"REQUEST_METHOD": "GET"}, lambda status, headers: answered.append(status)))
        return answered[0], total(parse(body.decode()), "http_requests_total", route="/x")

    assert get() == ("200 OK", 3)
    with metrics._files_lock(fcntl.LOCK_EX, 0) as held:  # as compact() holds it
        assert held
        assert get() == ("503 Service Unavailable", 0)
    with metrics._files_lock(fcntl.LOCK_SH, 0) as held:  # as a scrape holds it
        assert held
        assert metrics.compact(111) == 0  # not had: the dead worker's file stays, and still counts
        assert get() == ("200 OK", 3)
    assert (tmp_path / "counter_111.db").exists()
    assert metrics.compact(333) == 1  # the next worker's death folds it too
    assert sorted(p.name for p in tmp_path.glob("counter_*.db")) == ["counter_222.db", "counter_archive.db"]
    assert get() == ("200 OK", 3)
