"""The local edge against the real ``netlify dev`` on generated requests (see tests/differential.py).

One netlify dev, one edge and one recording backend serve the module. DIFF_SEED and DIFF_COUNT
choose the requests; ``python -m tests.differential`` prints the full report without pytest.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests import differential as diff
from tools.generated import REPO


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, netlify_cli: str) -> Iterator[diff.Servers]:
    with diff.servers(tmp_path_factory.mktemp("differential"), netlify_cli) as running:
        yield running


@pytest.fixture(scope="module")
def comparison(servers: diff.Servers) -> diff.Comparison:
    requests = diff.generate(diff.seed_from_env(), diff.count_from_env())
    return diff.run(servers, requests + diff.witnesses(len(requests)))


def test_every_difference_is_deliberate(comparison: diff.Comparison) -> None:
    """Where the edge and netlify dev differ, an entry of DELIBERATE says why."""
    if comparison.unexplained:
        pytest.fail(
            f"seed {diff.seed_from_env()} (DIFF_SEED); differences not explained by DELIBERATE, "
            f"by the fields that differ:\n{diff.report(comparison, examples=3)}",
            pytrace=False,
        )


def test_every_divergence_still_explains_a_difference(comparison: diff.Comparison) -> None:
    """A DELIBERATE entry that explains nothing is stale: netlify dev or the edge changed."""
    stale = [d.name for d in comparison.stale]
    assert not stale, f"DELIBERATE entries that explain no difference with seed {diff.seed_from_env()}: {stale}"
    # Each entry's witness request differs, and for that entry's reason.
    witnessed = {d.request.target: d for d in comparison.differences}
    for divergence in diff.DELIBERATE:
        target = divergence.witness.partition(" ")[2]
        assert target in witnessed, f"{divergence.name}: its witness {divergence.witness} no longer differs"
        explained = witnessed[target].explained.values()
        assert any(divergence.name in names for names in explained), f"{divergence.name}: witness explained otherwise"


def test_requests_netlify_dev_cannot_survive_get_a_sane_answer(comparison: diff.Comparison) -> None:
    """Paths decodeURIComponent rejects crash netlify dev; the edge must still answer them sanely."""
    wrong = [f"{r.method} {r.target}: {problem}" for r, _, problem in comparison.edge_only if problem]
    assert not wrong, "\n".join(wrong)


GENERATE = (
    "import json, sys; from tests.differential import generate; requests = generate(int(sys.argv[1]), 300); "
    "print(json.dumps([[r.method, r.target, r.body.decode()] for r in requests]))"
)


def test_the_same_seed_gives_the_same_requests() -> None:
    seed = diff.seed_from_env()
    requests = diff.generate(seed, 300)
    assert requests == diff.generate(seed, 300)
    assert diff.generate(seed, 100) == requests[:100]
    assert requests != diff.generate(seed + 1, 300)
    # The same in a fresh interpreter with other hash seeds: nothing depends on set or dict order.
    runs = {
        subprocess.run(
            [sys.executable, "-c", GENERATE, str(seed)],
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert runs == {json.dumps([[r.method, r.target, r.body.decode()] for r in requests]) + "\n"}


def test_the_grammar_covers_its_classes() -> None:
    requests = diff.generate(diff.DEFAULT_SEED, diff.DEFAULT_COUNT)
    targets = [r.target for r in requests]
    assert all(diff.TARGET.fullmatch(t) for t in targets)
    assert {r.method for r in requests} == {m for m, _ in diff.METHODS}
    assert all(r.body for r in requests if r.method in ("POST", "PUT"))
    classes = {
        "dot segment": r"/\.\.?(/|$|\?)",
        "encoded dot segment": r"/(%2[eE]|\.)(%2[eE])(/|$|\?)|/%2[eE](/|$|\?)",
        "double slash": r"[^/]//",
        "trailing slash": r"[^/]/(\?|$)",
        "encoded slash": r"%2[fF]",
        "encoded ? and #": r"%3F|%23",
        "encoded percent": r"%25",
        "raw non-ASCII": r"[^\x00-\x7f]",
        "encoded UTF-8": r"%C3%A9",
        "plus": r"\+",
        "sub-delims": r"[!$&'()*,;=:@~]",
        "upper case": r"/[^?]*[A-Z]{2}",
        "query": r"\?.",
        "empty query": r"\?$",
        "encoded query key": r"[?&](%71|l%61ng)=",
        "empty value": r"=(&|$)",
        "bare key": r"[?&][a-z]+(&|$)",
        "repeated key": r"[?&](\w+)=.*&\1=",
    }
    missing = [name for name, pattern in classes.items() if not any(re.search(pattern, t) for t in targets)]
    assert not missing, f"the default run has no request with: {missing}"


def test_the_backend_records_requests_verbatim() -> None:
    """The recording backend: raw target, chunked and Content-Length bodies, keep-alive, HEAD."""
    with diff.running_backend() as backend, socket.create_connection(("127.0.0.1", backend.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/a%20b/./c?x=%2F&y HTTP/1.1\r\nHost: h\r\nX-Diff-Id: one\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            b"HEAD /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\nX-Diff-Id: two\r\n\r\n"
            b"PUT /x HTTP/1.1\r\nHost: h\r\nX-Diff-Id: three\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    assert b"BACKEND one" in answer and b"BACKEND two" not in answer and answer.endswith(b"BACKEND three")
    assert backend.received("one") == diff.Received("POST", "/api/a%20b/./c", "x=%2F&y", b"abcde")
    assert backend.received("two") == diff.Received("HEAD", "/café", None, b"")
    assert backend.received("three") == diff.Received("PUT", "/x", None, b"ok")


def test_the_client_sends_the_target_as_given() -> None:
    with diff.running_backend() as backend:
        url = f"http://127.0.0.1:{backend.port}"
        request = diff.Request(1, "DELETE", "/api/%2e%2E/a%2Fb//é?q=a+b&q=%20&", b"payload")
        response = diff.send(url, request, "raw")
        assert (response.status, response.body) == (200, b"BACKEND raw")
        assert backend.received("raw") == diff.Received("DELETE", request.path, request.query, b"payload")
        head = diff.send(url, diff.Request(2, "HEAD", "/x"), "head")
        assert (head.status, head.body, head.header("content-length")) == (200, b"", "12")
