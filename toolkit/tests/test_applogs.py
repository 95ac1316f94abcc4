"""cnd_toolkit.release.applogs (`inv logs`): lines of two releases merged in time order, shown readably."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cnd_toolkit.errors import OpsError
from cnd_toolkit.release import applogs, backends, rollout

from tests.test_rollout import Host, app_images, host  # noqa: F401 (the fixtures)


def until(condition: Callable[[], bool], seconds: float = 120) -> None:
    """Wait for ``condition`` (the deadline only stops a broken run; the caller asserts what it needs)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_since_takes_durations_and_times() -> None:
    now = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
    assert applogs.since_of("10m", now) == now - dt.timedelta(minutes=10)
    assert applogs.since_of("2h", now) == now - dt.timedelta(hours=2)
    assert applogs.since_of("2026-12-03T10:00:00Z", now) == dt.datetime(2026, 12, 3, 10, tzinfo=dt.UTC)
    assert applogs.since_of("", now) is None
    for bad in ["10 minutes", "-5m", "10M", "yesterday", "5m; rm -rf /"]:
        with pytest.raises(OpsError, match="--since"):
            applogs.since_of(bad, now)


def test_docker_timestamps_sort_as_text_whatever_their_precision() -> None:
    raw = (
        b"2026-12-03T10:00:00.5Z late\n"
        b"2026-12-03T10:00:00.123456789Z early\n"
        b"2026-12-03T10:00:00Z first\n"
        b"continued without a stamp\n"
    )
    lines = applogs.split(raw, "c")
    assert [line.text for line in sorted(lines[:3], key=lambda x: x.ts)] == ["first", "early", "late"]
    assert lines[-1].text == "continued without a stamp" and lines[-1].ts == lines[-2].ts


def test_json_lines_are_shown_readably_and_hostile_text_cannot_drive_the_terminal() -> None:
    entry = {
        "ts": "x", "level": "info", "msg": "request", "request_id": "rid-1", "method": "GET",
        "path": "/api/greeting", "status": 200, "duration_ms": 1.5,
    }  # fmt: skip
    line = applogs.Line("2026-12-03T10:00:00.123000000Z", "svc-blue", json.dumps(entry))
    shown = applogs.show(line, as_json=False)
    assert shown == "10:00:00.123 svc-blue  INFO  200 GET /api/greeting 1.5 ms rid-1"
    assert applogs.show(line, as_json=True) == line.text
    hostile = applogs.Line(line.ts, "svc-blue", "boom \x1b]0;pwned\x07\x1b[2J\r\x08 done")
    for as_json in (False, True):
        text = applogs.show(hostile, as_json)
        assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    wrapped = json.loads(applogs.show(hostile, as_json=True))
    assert wrapped["source"] == "svc-blue" and wrapped["raw"].startswith("boom")
    # A JSON value that is a path with escapes, as a client may send it.
    evil = applogs.Line(line.ts, "s", json.dumps({**entry, "path": "/\x1b[31mred\u202e"}))
    assert "\x1b" not in applogs.show(evil, False) and "\u202e" not in applogs.show(evil, False)
    with pytest.raises(OpsError, match="--service"):
        applogs.sources(None, "db")  # type: ignore[arg-type]


@pytest.mark.docker
def test_logs_of_two_releases_come_merged_in_time_order(engine: Any, host: Host, app_images: dict[str, str]) -> None:  # noqa: F811
    ids: list[str] = []
    slug, proxy_name = host.target.slug, host.target.proxy.name

    def requests(prefix: str) -> None:
        for i in range(5):
            ids.append(f"{prefix}-{i}-{uuid.uuid4().hex[:6]}")
            response = httpx.get(f"{host.url}/api/version", headers={"X-Request-ID": ids[-1]}, timeout=60)
            assert response.status_code == 200

    rollout.roll_out(engine, host.target, app_images["rev-one"], version="1", revision="rev-one")
    requests("one")
    rollout.roll_out(engine, host.target, app_images["rev-two"], version="2", revision="rev-two")
    requests("two")
    backend = backends.HostBackend(engine, host.target, lambda: None)
    containers = applogs.sources(backend, "app")
    live, previous = rollout.releases(engine, slug)[:2]
    assert [c.name for c in containers] == [live.name, previous.name]

    def read_ids() -> list[tuple[str, str]]:
        seen = []
        for line in applogs.read(containers, None, 0):
            try:
                entry = json.loads(line.text)
            except ValueError:
                continue
            if entry.get("request_id") in ids:
                seen.append((entry["request_id"], line.source))
        return seen

    until(lambda: len(read_ids()) >= len(ids))  # the request log is written in batches (APP_LOG_FLUSH_MS)
    seen = read_ids()
    assert [rid for rid, _ in seen] == ids  # both releases, in the order they were asked
    assert {source for rid, source in seen if rid.startswith("one")} == {previous.name}
    assert {source for rid, source in seen if rid.startswith("two")} == {live.name}
    merged = applogs.read(containers, None, 0)
    assert merged == sorted(merged, key=lambda line: line.key)
    assert len(applogs.read(containers, None, 3)) == 3
    # --since in the future: nothing; all: the proxy's lines as well.
    assert applogs.read(containers, dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), 0) == []
    everything = applogs.sources(backend, "all")
    assert proxy_name in [c.name for c in everything]
    # Following: the history first, in order, then what comes.
    stop = threading.Event()
    got: list[applogs.Line] = []

    def find() -> list[Any]:
        return applogs.sources(backend, "app")

    def consume() -> None:
        for line in applogs.follow(find, None, stop, lines=0, refresh=0.2):
            got.append(line)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    until(lambda: len(got) >= len(ids))
    first = list(got)
    assert first == sorted(first, key=lambda line: line.key)
    # A deploy while following: the new release's lines join in, announced.
    third = rollout.roll_out(engine, host.target, app_images["rev-one"], version="3", revision="rev-one")
    late = f"three-{uuid.uuid4().hex[:6]}"
    assert httpx.get(f"{host.url}/api/version", headers={"X-Request-ID": late}, timeout=60).status_code == 200
    until(lambda: any(late in line.text and line.source == third.name for line in got))
    assert any(line.source == "inv logs" and third.name in line.text for line in got)
    assert any(late in line.text and line.source == third.name for line in got)
    # The release crashes (its main process killed) and its restart policy brings it back: the
    # stream ended with it, and following takes it up again, without repeating a line.
    import os
    import signal

    before = len(got)
    os.kill(int(third.container.attrs["State"]["Pid"]), signal.SIGKILL)

    def restarted_and_healthy() -> bool:
        third.container.reload()
        health = (third.container.attrs["State"].get("Health") or {}).get("Status")
        return bool(third.container.attrs["RestartCount"] >= 1 and health == "healthy")

    until(restarted_and_healthy)
    assert restarted_and_healthy(), third.container.attrs["State"]
    after = f"after-{uuid.uuid4().hex[:6]}"
    assert httpx.get(f"{host.url}/api/version", headers={"X-Request-ID": after}, timeout=60).status_code == 200
    until(lambda: any(after in line.text for line in got[before:]))
    stop.set()
    assert any(after in line.text and line.source == third.name for line in got[before:]), got[before:]
    texts = [(line.source, line.ts, line.text) for line in got if line.source != "inv logs"]
    assert len(texts) == len(set(texts))  # nothing shown twice


def test_lines_split_on_newlines_only_and_merge_on_the_time_they_give() -> None:
    # A logged value with U+2028, NEL or a file separator cannot start a line of its own, with a
    # time of its choosing.
    forged = "x\u2028\x852020-01-01T00:00:00Z forged\u2029end"
    line = json.dumps({"ts": "2026-12-03T10:00:00.000200Z", "msg": forged}, ensure_ascii=False)
    raw = f"2026-12-03T10:00:01.000Z {line}\n".encode()
    raw += b"2026-12-03T10:00:00.9Z plain text\x1c2020-01-01T00:00:00Z forged\r\n"
    raw += b'2026-12-03T10:00:00.5Z {"ts": 1796292000.0001, "logger": "http.log.access"}\n'
    lines = applogs.split(raw, "c")
    assert len(lines) == 3 and forged in lines[0].text
    assert lines[0].at == "2026-12-03T10:00:00.000200000Z"  # the app's own time, not Docker's
    assert lines[1].text.startswith("plain text\x1c") and lines[1].at == ""
    assert lines[2].at.startswith("2026-12-03T10:00:00.0001")  # Caddy's epoch seconds
    ordered = sorted(lines, key=lambda line: line.key)
    assert ordered == [lines[2], lines[0], lines[1]]
    # Times that are not times are ignored, not trusted.
    for bad in ['{"ts": "yesterday"}', '{"ts": true}', '{"ts": 1e300}', '{"ts": -5}', '["ts"]', "{not json"]:
        assert applogs.split(f"2026-12-03T10:00:00Z {bad}\n".encode(), "c")[0].at == ""


def test_json_output_never_passes_raw_controls_or_bidi_through() -> None:
    text = '{"ts": "2026-12-03T10:00:00Z", "msg": "a\u202eb\u0085c\u009bd"}'
    shown = applogs.show(applogs.Line("2026-12-03T10:00:00.000000000Z", "s", text), as_json=True)
    assert shown.isascii() and json.loads(shown)["msg"] == "a\u202eb\u0085c\u009bd"
    plain = '{"ts": "2026-12-03T10:00:00Z", "msg": "ok"}'
    assert applogs.show(applogs.Line("2026-12-03T10:00:00.000000000Z", "s", plain), as_json=True) == plain


def test_since_far_back_means_everything() -> None:
    assert applogs.since_of("999999999999d") is None
