"""ops.release.applogs (`inv logs`): lines of two releases merged in time order, shown readably."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from typing import Any

import httpx
import pytest

from ops.errors import OpsError
from ops.release import applogs, rollout
from tests.test_rollout import Host, app_images, host  # noqa: F401 (the fixtures)


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
        applogs.sources(None, "svc", swarm=False, service="db", proxy_name="p")  # type: ignore[arg-type]


@pytest.mark.docker
def test_logs_of_two_releases_come_merged_in_time_order(engine: Any, host: Host, app_images: dict[str, str]) -> None:  # noqa: F811
    ids: list[str] = []
    slug, proxy_name = host.target.slug, host.target.proxy.name

    def requests(prefix: str) -> None:
        for i in range(5):
            ids.append(f"{prefix}-{i}-{uuid.uuid4().hex[:6]}")
            assert httpx.get(f"{host.url}/api/version", headers={"X-Request-ID": ids[-1]}).status_code == 200

    rollout.roll_out(engine, host.target, app_images["rev-one"], version="1", revision="rev-one")
    requests("one")
    rollout.roll_out(engine, host.target, app_images["rev-two"], version="2", revision="rev-two")
    requests("two")
    containers = applogs.sources(engine, slug, swarm=False, service="app", proxy_name=proxy_name)
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

    deadline = threading.Event()
    for _ in range(50):  # the request log is written in batches (APP_LOG_FLUSH_MS)
        if len(read_ids()) == len(ids):
            break
        deadline.wait(0.1)
    seen = read_ids()
    assert [rid for rid, _ in seen] == ids  # both releases, in the order they were asked
    assert {source for rid, source in seen if rid.startswith("one")} == {previous.name}
    assert {source for rid, source in seen if rid.startswith("two")} == {live.name}
    merged = applogs.read(containers, None, 0)
    assert merged == sorted(merged, key=lambda line: (line.ts, line.source))
    assert len(applogs.read(containers, None, 3)) == 3
    # --since in the future: nothing; all: the proxy's lines as well.
    assert applogs.read(containers, dt.datetime.now(dt.UTC) + dt.timedelta(hours=1), 0) == []
    everything = applogs.sources(engine, slug, swarm=False, service="all", proxy_name=proxy_name)
    assert proxy_name in [c.name for c in everything]
    # Following: the history first, in order, then what comes.
    stop = threading.Event()
    followed = applogs.follow(containers, None, stop, lines=0)
    first = [next(followed) for _ in range(3)]
    assert first == sorted(first, key=lambda line: (line.ts, line.source))
    stop.set()
