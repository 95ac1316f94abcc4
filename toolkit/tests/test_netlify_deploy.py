"""The Netlify half of a deploy, against a local HTTP server that is strict about Netlify's protocol.

The client (cnd_toolkit.netlify.api) and the deploy steps (cnd_toolkit.netlify.publish) are the real code; the
server (tests/netlify_api.py) answers as Netlify's API does and refuses what it refuses.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cnd_toolkit import project
from cnd_toolkit import settings as settings_mod
from cnd_toolkit.errors import ConfigError
from cnd_toolkit.netlify import api, publish, split
from cnd_toolkit.release import deploy as deploy_mod

from tests.netlify_api import LocalNetlify

TOKEN = "nfp_local_test_token_0123456789abcdef"
SITE = "site-1"
BACKEND = "https://api.example.com"


@pytest.fixture
def netlify() -> Iterator[LocalNetlify]:
    with LocalNetlify(TOKEN) as server:
        yield server


@pytest.fixture
def client(netlify: LocalNetlify) -> Iterator[api.NetlifyClient]:
    waits: list[float] = []
    with api.NetlifyClient(TOKEN, netlify.api_url, sleep=waits.append) as made:
        made.waits = waits  # type: ignore[attr-defined]
        yield made


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A copy of this project's Netlify side: netlify.toml and public/."""
    root = tmp_path / "site"
    root.mkdir()
    shutil.copy(project.ROOT / "netlify.toml", root / "netlify.toml")
    shutil.copytree(project.ROOT / "public", root / "public")
    return root


def deploy(client: api.NetlifyClient, root: Path, backend: str = BACKEND) -> publish.Published:
    return publish.deploy_draft(client, SITE, publish.site_files(root, backend), poll_interval=0, sleep=lambda s: None)


def test_first_deploy_uploads_every_file_then_nothing_then_one(
    netlify: LocalNetlify, client: api.NetlifyClient, site: Path
) -> None:
    first = deploy(client, site)
    files = publish.site_files(site, BACKEND)
    assert first.deploy.state == "ready" and first.deploy.draft
    assert first.uploaded == first.files == len(files.digests)
    assert sorted(netlify.uploads()) == sorted(files.digests)
    assert netlify.published() is None  # a draft: nothing is live until publish()
    for path, body in files.bodies.items():
        assert netlify.site_body(first.deploy.id, path) == body

    again = deploy(client, site)
    assert again.uploaded == 0 and again.deploy.state == "ready"

    (site / "public" / "styles.css").write_text((site / "public" / "styles.css").read_text() + "\n/* v2 */\n")
    changed = deploy(client, site)
    assert changed.uploaded == 1
    assert netlify.uploads()[-1] == "styles.css"

    live = publish.publish(client, SITE, changed.deploy.id)
    assert live.id == changed.deploy.id and netlify.published().id == changed.deploy.id  # type: ignore[union-attr]


def test_the_redirects_carry_this_deploys_backend_and_the_tree_is_untouched(
    netlify: LocalNetlify, client: api.NetlifyClient, site: Path
) -> None:
    before = (site / "public" / "_redirects").read_bytes()
    done = deploy(client, site, "https://api.staging.example.com")
    rules = netlify.site_body(done.deploy.id, "_redirects").decode()
    assert "/api/*  https://api.staging.example.com/api/:splat  200!" in rules
    assert (site / "public" / "_redirects").read_bytes() == before


def test_dotfiles_are_not_deployed_and_well_known_is(site: Path) -> None:
    (site / "public" / ".env").write_text("SECRET=1")
    (site / "public" / ".git").mkdir()
    (site / "public" / ".git" / "config").write_text("x")
    (site / "public" / ".well-known").mkdir()
    (site / "public" / ".well-known" / "security.txt").write_text("Contact: x")
    (site / "public" / "__MACOSX").mkdir()
    (site / "public" / "__MACOSX" / "junk").write_text("x")
    names = set(publish.site_files(site, BACKEND).digests)
    assert ".well-known/security.txt" in names
    assert not {n for n in names if n.startswith((".env", ".git", "__MACOSX"))}


# Links that would publish what they point at, as (link in public/, target as written): out of
# public/ by a relative or an absolute path, to a file, a folder, nothing, or a dotfile inside.
LINKS_OUT = [
    ("settings.txt", "../.env"),
    ("passwd.txt", "/etc/passwd"),
    ("deep/er/up.txt", "../../../.env"),
    ("private", "../secrets"),
    ("gone.txt", "/nonexistent/file"),
    ("hidden.txt", ".env"),
    ("loop/self", ".."),
]
# Names Netlify cannot serve: control characters (C0, DEL, C1), backslash, # and ?, and not UTF-8.
BAD_NAMES = [
    "new\nline.html",
    "tab\there.html",
    "bell\x07.txt",
    "del\x7f.txt",
    "c1\x85.txt",
    "back\\slash.html",
    "a#b.html",
    "what?.html",
    "dir#x/inner.html",
    "cr\r.css",
]


def plant_link(public: Path, link: str, target: str) -> None:
    (public / link).parent.mkdir(parents=True, exist_ok=True)
    (public / link).symlink_to(target)


@pytest.mark.parametrize("seed", range(12))
def test_links_out_of_public_are_all_refused_in_one_error(site: Path, seed: int) -> None:
    """``ln -s ../.env public/settings.txt`` would put the token on the public site: every link that
    leads out of public/ (or to a file Netlify does not deploy) is named in one line, before any call."""
    (site / ".env").write_text(f"NETLIFY_AUTH_TOKEN={TOKEN}\n")
    (site / "secrets").mkdir()
    (site / "secrets" / "key.txt").write_text(TOKEN)
    (site / "public" / ".env").write_text(TOKEN)
    rng = random.Random(seed)
    chosen = rng.sample(LINKS_OUT, rng.randint(1, len(LINKS_OUT)))
    for link, target in chosen:
        plant_link(site / "public", link, target)
    plant_link(site / "public", "alias.css", "styles.css")  # inside: fine
    with pytest.raises(ConfigError) as caught:
        publish.site_files(site, BACKEND)
    message = str(caught.value)
    assert "\n" not in message and TOKEN not in message
    for link, _ in chosen:
        assert f"public/{link!r}" in message, (link, message)
    assert "alias.css" not in message
    assert (
        f"{len(chosen)} link(s) in public/" in message and "replace each link with a real file, or remove it" in message
    )


def test_links_inside_public_deploy_their_targets_bytes(site: Path) -> None:
    public = site / "public"
    (public / "docs").mkdir()
    (public / "docs" / "guide.html").write_text("<p>guide</p>")
    plant_link(public, "alias.css", "styles.css")
    plant_link(public, "manual", "docs")  # a folder inside: its files, under the link's name
    plant_link(public, "docs/up.css", "../styles.css")
    plant_link(public, "dangling.txt", "not-there.txt")  # inside, but nothing to deploy
    files = publish.site_files(site, BACKEND)
    styles = (public / "styles.css").read_bytes()
    assert files.bodies["alias.css"] == styles and files.bodies["docs/up.css"] == styles
    assert files.bodies["manual/guide.html"] == b"<p>guide</p>" and files.bodies["manual/up.css"] == styles
    assert "dangling.txt" not in files.bodies


@pytest.mark.parametrize("seed", range(12))
def test_every_name_netlify_cannot_serve_is_refused_in_one_error(site: Path, seed: int) -> None:
    """A newline, any control character, a backslash, # or ?: all of them named, escaped to stay on one line."""
    rng = random.Random(seed)
    chosen = rng.sample(BAD_NAMES, rng.randint(1, len(BAD_NAMES)))
    fine = ["with space.html", "ünï/cødé.txt", "100%.txt", "a+b=c&d.css"]
    for name in chosen + fine:
        (site / "public" / name).parent.mkdir(parents=True, exist_ok=True)
        (site / "public" / name).write_text("x")
    with pytest.raises(ConfigError) as caught:
        publish.site_files(site, BACKEND)
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    assert f"Netlify cannot serve {len(chosen)} file name(s) in public/" in message
    for name in chosen:
        assert f"public/{name!r}" in message, (name, message)
    assert not any(name in message for name in fine)


def test_a_name_that_is_not_utf8_is_refused_with_the_others(site: Path) -> None:
    public = bytes(site / "public")
    for raw in (b"bad\xff.html", b"half\xc3.txt"):
        os.close(os.open(os.path.join(public, raw), os.O_CREAT | os.O_WRONLY))
    (site / "public" / "a?b.html").write_text("x")
    with pytest.raises(ConfigError) as caught:
        publish.site_files(site, BACKEND)
    message = str(caught.value)
    assert "3 file name(s)" in message and "bytes that are not UTF-8" in message and "'a?b.html' (?)" in message
    assert "\\udcff" in message and "\\udcc3" in message  # escaped: printable, one line


def test_links_and_bad_names_together_are_one_error(site: Path) -> None:
    plant_link(site / "public", "settings.txt", "../.env")
    (site / "public" / "new\nline.html").write_text("x")
    with pytest.raises(ConfigError) as caught:
        publish.site_files(site, BACKEND)
    message = str(caught.value)
    assert "'settings.txt'" in message and "'new\\nline.html'" in message and "\n" not in message


@pytest.mark.filterwarnings("ignore:returning HTTPException object is deprecated:DeprecationWarning")
@pytest.mark.parametrize("path", ["new\nline.html", "tab\tx.css", "plain.html", "ünï/cødé.txt", "a b/c.js"])
def test_an_upload_404_is_one_line_with_advice_for_an_upload(client: api.NetlifyClient, path: str) -> None:
    """Not "Netlify has no the upload of ...; check NETLIFY_SITE_ID": the site exists; the draft or file does not."""
    with pytest.raises(api.NotFound) as caught:
        client.upload_file("no-such-draft", path, b"x")
    message = str(caught.value)
    assert "\n" not in message and "\t" not in message
    assert f"the upload of {path!r} to draft deploy 'no-such-draft'" in message
    assert "NETLIFY_SITE_ID" not in message and "has no the" not in message
    assert "HTTP 404" in message and "run the deploy again" in message


@pytest.mark.parametrize(
    "token", ["nfp_SECRET€x", "nfp_with space", "nfp_ÄÖÜ", "nfp_\u200bzero", "nfp_\u00a0x", "\uff4e\uff46\uff50"]
)
def test_a_token_no_header_can_carry_is_a_clear_error_without_its_characters(token: str) -> None:
    with pytest.raises(api.AuthError) as caught:
        api.NetlifyClient(token)
    message = str(caught.value)
    assert "NETLIFY_AUTH_TOKEN" in message and "printable ASCII" in message
    assert token not in message and not any(c in message for c in token if not c.isascii())


def test_a_config_error_stops_before_any_call(site: Path) -> None:
    (site / "netlify.toml").write_text("[build\n")
    with pytest.raises(ConfigError, match=r"netlify.toml:1"):
        publish.site_files(site, BACKEND)


def test_429_and_500_are_retried_honouring_retry_after(
    netlify: LocalNetlify, client: api.NetlifyClient, site: Path
) -> None:
    netlify.fail(429, 2, method="POST", path_prefix="/sites/", retry_after="3")
    netlify.fail(500, 2, method="PUT", path_prefix="/deploys/")
    netlify.fail(503, 1, method="GET")
    done = deploy(client, site)
    assert done.deploy.state == "ready" and done.uploaded == done.files
    waits = client.waits  # type: ignore[attr-defined]
    assert waits[:2] == [3.0, 3.0]  # Retry-After, as asked
    assert len(waits) == 5
    assert sorted(netlify.uploads()) == sorted(publish.site_files(site, BACKEND).digests)


@pytest.mark.parametrize("status", [401, 403, 404, 422])
def test_client_errors_are_not_retried_and_nothing_is_published(
    netlify: LocalNetlify, client: api.NetlifyClient, site: Path, status: int
) -> None:
    netlify.fail(status, 1, method="PUT")
    expected = {401: api.AuthError, 403: api.AuthError, 404: api.NotFound, 422: api.ValidationFailed}[status]
    with pytest.raises(expected) as caught:
        deploy(client, site)
    assert caught.value.status == status
    assert client.waits == []  # type: ignore[attr-defined]
    assert netlify.published() is None
    assert TOKEN not in str(caught.value)


def test_a_wrong_token_is_a_clear_stop_and_never_shown(netlify: LocalNetlify, site: Path) -> None:
    wrong = "nfp_wrong_token_abcdef0123456789"
    with api.NetlifyClient(wrong, netlify.api_url, sleep=lambda s: None) as bad, pytest.raises(api.AuthError) as caught:
        deploy(bad, site)
    message = str(caught.value)
    assert "NETLIFY_AUTH_TOKEN" in message and wrong not in message and "HTTP 401" in message
    assert [c.status for c in netlify.calls] == [401]  # one call, no retry, nothing created
    assert netlify.deploys == {} and wrong not in repr(bad)


def test_a_missing_token_says_how_to_get_one() -> None:
    with pytest.raises(api.AuthError, match="NETLIFY_AUTH_TOKEN is not set"):
        api.NetlifyClient("")


def test_an_unknown_site_names_the_setting(netlify: LocalNetlify, client: api.NetlifyClient, site: Path) -> None:
    with pytest.raises(api.NotFound, match="NETLIFY_SITE_ID"):
        publish.deploy_draft(client, "no-such-site", publish.site_files(site, BACKEND), sleep=lambda s: None)


def test_a_deploy_netlify_fails_shows_its_message_and_is_not_published(
    netlify: LocalNetlify, client: api.NetlifyClient, site: Path
) -> None:
    netlify.fail_next_deploy("Build script returned non-zero exit code: 2")
    with pytest.raises(api.NetlifyError, match=r"Build script returned non-zero exit code: 2; nothing was published"):
        deploy(client, site)
    assert netlify.published() is None


def test_a_deploy_that_never_gets_ready_times_out(netlify: LocalNetlify, client: api.NetlifyClient, site: Path) -> None:
    files = publish.site_files(site, BACKEND)
    netlify.fail(500, 1000, method="PUT")  # uploads never land: the deploy stays uploading
    with pytest.raises(api.ServerError, match="HTTP 500 after 6 tries"):
        publish.deploy_draft(client, SITE, files, sleep=lambda s: None)
    assert netlify.published() is None


def test_no_answer_is_a_connection_error_naming_the_url() -> None:
    closed = httpx.URL("http://127.0.0.1:9/api/v1")
    expected = r"no answer from Netlify's API at http://127.0.0.1:9/api/v1"
    with (
        api.NetlifyClient(TOKEN, str(closed), retries=2, sleep=lambda s: None) as dead,
        pytest.raises(api.ConnectionFailed, match=expected),
    ):
        dead.get_site(SITE)


def test_large_sites_deploy_async_and_files_with_odd_names_round_trip(
    netlify: LocalNetlify, client: api.NetlifyClient, site: Path
) -> None:
    """Over 100 files: an async deploy, whose required list comes on the next read. Names with
    spaces, unicode and percent signs are percent-encoded per segment and arrive intact."""
    rng = random.Random(7)
    odd = ["with space.html", "ünï/cødé.txt", "100%.txt", "a+b=c&d.css", "deep/er/still/x.js"]
    for i in range(130):
        (site / "public" / "many" / f"f{i}.txt").parent.mkdir(exist_ok=True)
        (site / "public" / "many" / f"f{i}.txt").write_bytes(rng.randbytes(rng.randint(0, 2000)))
    for name in odd:
        (site / "public" / name).parent.mkdir(parents=True, exist_ok=True)
        (site / "public" / name).write_text(name)
    counts: list[tuple[str, int, int]] = []
    files = publish.site_files(site, BACKEND)
    done = publish.deploy_draft(
        client, SITE, files, poll_interval=0, sleep=lambda s: None, on_count=lambda *a: counts.append(a)
    )
    assert done.files > 130 and done.uploaded == done.files
    assert [c[1] for c in counts] == list(range(1, done.uploaded + 1)), counts[:5]  # one count per file, in order
    assert {c[2] for c in counts} == {done.uploaded}
    for name in odd:
        assert netlify.site_body(done.deploy.id, name) == name.encode()


def test_the_server_refuses_what_netlify_refuses(netlify: LocalNetlify) -> None:
    """The oracle is only as good as its strictness: bad bodies, bad digests, wrong bytes."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = netlify.api_url
    with httpx.Client(headers=headers, timeout=60) as http:
        for files in [{"/lead.html": "0" * 40}, {"a#b": "0" * 40}, {"a/../b": "0" * 40}, {"x": "nothex"}, []]:
            assert http.post(f"{base}/sites/{SITE}/deploys", json={"files": files}).status_code == 422, files
        body = b"hello"
        sha = hashlib.sha1(body).hexdigest()
        made = http.post(f"{base}/sites/{SITE}/deploys", json={"files": {"index.html": sha}, "draft": True}).json()
        assert made["required"] == [sha]
        url = f"{base}/deploys/{made['id']}/files/index.html"
        octet = {"Content-Type": "application/octet-stream"}
        assert http.put(url, content=b"other", headers=octet).status_code == 422  # SHA1 mismatch
        assert http.put(url, content=body, headers={"Content-Type": "text/html"}).status_code == 422
        assert http.put(f"{base}/deploys/{made['id']}/files/nope.html", content=body, headers=octet).status_code == 422
        restore = f"{base}/sites/{SITE}/deploys/{made['id']}/restore"
        assert http.post(restore).status_code == 422  # not ready yet
        assert http.put(url, content=body, headers=octet).status_code == 200
        assert http.get(f"{base}/sites/{SITE}/deploys/{made['id']}").json()["state"] == "ready"
        assert http.post(restore).status_code == 201
    assert httpx.get(f"{base}/sites/{SITE}", timeout=60).status_code == 401


def test_retry_after_reads_seconds_and_dates() -> None:
    assert api.retry_after("7") == 7.0
    assert api.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert api.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    for bad in ["", None, "soon", "-1", "1.5"]:
        assert api.retry_after(bad) is None


def test_files_with_the_same_bytes_are_uploaded_once_and_all_served(
    netlify: LocalNetlify, client: api.NetlifyClient, site: Path
) -> None:
    """Netlify stores files by SHA1: a repeated file (empty ones, a copied image) is one upload,
    and the deploy serves it at every path."""
    copies = {"a.txt": b"same", "b/a.txt": b"same", "c.txt": b"same", "empty1": b"", "empty2": b"", "d/empty3": b""}
    for name, body in copies.items():
        (site / "public" / name).parent.mkdir(parents=True, exist_ok=True)
        (site / "public" / name).write_bytes(body)
    done = deploy(client, site)
    shas = {hashlib.sha1(body).hexdigest() for body in copies.values()}
    uploaded = [path for path in netlify.uploads() if path.lstrip("/") in copies]
    assert len(uploaded) == len(shas) == 2, uploaded
    for name, body in copies.items():
        assert netlify.site_body(done.deploy.id, name) == body


# -- branch deploys and split tests (the front end's canary) -----------------------------------


def branch_deploy(client: api.NetlifyClient, root: Path, branch: str) -> publish.Published:
    files = publish.site_files(root, BACKEND)
    return publish.deploy_draft(client, SITE, files, branch=branch, poll_interval=0, sleep=lambda s: None)


def live_and_canary(netlify: LocalNetlify, client: api.NetlifyClient, site: Path) -> tuple[str, str]:
    live = deploy(client, site)
    publish.publish(client, SITE, live.deploy.id)
    (site / "public" / "styles.css").write_text("/* v2 */\n")
    canary = branch_deploy(client, site, "canary")
    return live.deploy.id, canary.deploy.id


def test_a_branch_deploy_is_ready_and_not_published(
    netlify: LocalNetlify, client: api.NetlifyClient, site: Path
) -> None:
    live_id, canary_id = live_and_canary(netlify, client, site)
    canary = client.get_deploy(SITE, canary_id)
    assert canary.state == "ready" and canary.branch == "canary" and not canary.draft
    assert canary.raw["context"] == "branch-deploy"
    assert netlify.published().id == live_id  # type: ignore[union-attr]
    assert netlify.sites[SITE].branches == {"canary": canary_id}


def test_a_split_rollout_steps_then_publishes_the_canary_and_ends_the_test(
    netlify: LocalNetlify, client: api.NetlifyClient, site: Path
) -> None:
    live_id, canary_id = live_and_canary(netlify, client, site)
    said: list[str] = []
    rollout = split.SplitRollout(client, SITE, say=said.append)
    rollout.start(10)
    assert client.get_split_test(SITE, rollout.test.id).active  # type: ignore[union-attr]
    rollout.step(50)
    rollout.step(100)
    assert netlify.published().id == live_id  # type: ignore[union-attr]  (not yet)
    rollout.finish(canary_id)
    test = next(iter(netlify.sites[SITE].split_tests.values()))
    assert test.history == [
        ("create", {"main": 90, "canary": 10}),
        ("publish", {"main": 90, "canary": 10}),
        ("update", {"main": 50, "canary": 50}),
        ("update", {"main": 0, "canary": 100}),
        ("unpublish", {"main": 0, "canary": 100}),
    ]
    assert netlify.published().id == canary_id and not test.active  # type: ignore[union-attr]
    assert said[-1].endswith("ended")
    # The next canary reuses the site's one split test (a second create is refused).
    (site / "public" / "styles.css").write_text("/* v3 */\n")
    third = branch_deploy(client, site, "canary")
    again = split.SplitRollout(client, SITE)
    again.start(10)
    assert again.test.id == test.id and test.active  # type: ignore[union-attr]
    again.abort()
    assert netlify.published().id == canary_id and not test.active  # type: ignore[union-attr]
    assert third.deploy.id != canary_id and test.history[-1][0] == "unpublish"


def test_an_aborted_split_rollout_never_publishes(netlify: LocalNetlify, client: api.NetlifyClient, site: Path) -> None:
    live_id, _ = live_and_canary(netlify, client, site)
    rollout = split.SplitRollout(client, SITE)
    rollout.start(10)
    rollout.abort()
    restores = [c for c in netlify.calls if c.path.endswith("/restore")]
    assert len(restores) == 1  # the live deploy's own publish, before the canary
    assert netlify.published().id == live_id  # type: ignore[union-attr]
    assert not client.list_split_tests(SITE)[0].active


def test_the_local_api_refuses_what_a_split_test_cannot_be(
    netlify: LocalNetlify, client: api.NetlifyClient, site: Path
) -> None:
    # Before anything is published, the production branch has nothing to send traffic to.
    with pytest.raises(api.ValidationFailed, match="no published deploy"):
        client.create_split_test(SITE, {"main": 50, "canary": 50})
    live_and_canary(netlify, client, site)
    rng = random.Random(20261203)
    for _ in range(200):
        weights: dict[str, object] = {}
        for branch in rng.sample(["main", "canary", "other", "main-2"], rng.randint(0, 3)):
            weights[branch] = rng.choice([0, 10, 50, 90, 100, 101, -1, 49.5, True, "50", None])
        ok = (
            len(weights) >= 2
            and set(weights) <= {"main", "canary"}
            and all(type(v) is int and 0 <= v <= 100 for v in weights.values())
            and sum(v for v in weights.values() if type(v) is int) == 100
        )
        try:
            made = client.create_split_test(SITE, weights)  # type: ignore[arg-type]
        except api.ValidationFailed:
            assert not ok, weights
            continue
        assert ok, weights
        assert dict(made.weights) == weights
        netlify.sites[SITE].split_tests.clear()  # one per site: clear it for the next case
    made = client.create_split_test(SITE, {"main": 100, "canary": 0})
    with pytest.raises(api.ValidationFailed, match="split test already"):
        client.create_split_test(SITE, {"main": 50, "canary": 50})
    with pytest.raises(api.NotFound, match="no split test 'nope'"):
        client.update_split_test(SITE, "nope", {"main": 50, "canary": 50})
    with pytest.raises(api.NetlifyError, match=r"0\.\.100"):
        split.SplitRollout(client, SITE).step(120)
    assert client.get_split_test(SITE, made.id).weights == {"main": 100, "canary": 0}


# -- what a deploy serves: netlify.toml's headers and redirects travel with it ------------------
#
# Netlify applies netlify.toml to an API deploy only when the deploy carries it (as netlify-cli
# uploads its resolved config); the local Netlify serves each deploy from exactly the files
# uploaded to it, with its own matcher, so a deploy without the file is a site without them.


def declared_headers(root: Path, path: str) -> dict[str, str]:
    """The headers the project's netlify.toml declares for ``path``, read here with tomllib."""
    data = tomllib.loads((root / "netlify.toml").read_text())
    declared: dict[str, str] = {}
    for rule in data.get("headers", []):
        if rule["for"] == path:
            declared.update({name: str(value) for name, value in rule["values"].items()})
    return declared


def assert_headers(response: httpx.Response, expected: dict[str, str]) -> None:
    missing = {name: value for name, value in expected.items() if response.headers.get(name) != value}
    assert not missing, (str(response.url), missing, dict(response.headers))


def test_every_header_netlify_toml_declares_is_on_the_draft_and_then_on_the_published_site(
    netlify: LocalNetlify, client: api.NetlifyClient, site: Path
) -> None:
    declared = declared_headers(site, "/*")
    assert len(declared) >= 3, declared  # the project's security headers: the test has something to find
    draft = deploy(client, site)
    assert_headers(httpx.get(draft.deploy.url, timeout=60), declared)
    assert netlify.published() is None and netlify.site_url() == ""
    publish.publish(client, SITE, draft.deploy.id)
    live = httpx.get(netlify.site_url(), timeout=60)
    assert live.status_code == 200 and live.content == (site / "public" / "index.html").read_bytes()
    assert_headers(live, declared)
    # Everything the deploy uploaded is a public file of it, the config too: nothing build-only in it.
    uploaded = httpx.get(f"{netlify.site_url()}netlify.toml", timeout=60)
    assert uploaded.status_code == 200 and set(tomllib.loads(uploaded.text)) == {"headers"}
    assert (
        httpx.get(f"{netlify.site_url()}_redirects", timeout=60).text
        == netlify.site_body(draft.deploy.id, "_redirects").decode()
    )


REDIRECTS_ADDED = """
[[redirects]]
  from = "/old-page"
  to = "/"
  status = 301

[[redirects]]
  from = "/first"
  to = "/first-wins"
  status = 302

[[redirects]]
  from = "/first"
  to = "/second-loses"
  status = 302

[[redirects]]
  from = "/app/*"
  to = "/index.html"
  status = 200
"""


def test_redirects_added_to_netlify_toml_work_on_the_published_site_in_their_order(
    netlify: LocalNetlify, client: api.NetlifyClient, site: Path
) -> None:
    with (site / "netlify.toml").open("a") as toml:
        toml.write(REDIRECTS_ADDED)
    done = deploy(client, site)
    publish.publish(client, SITE, done.deploy.id)
    with httpx.Client(base_url=netlify.site_url(), timeout=60) as http:
        moved = http.get("/old-page?from=mail")
        assert (moved.status_code, moved.headers["Location"]) == (301, "/?from=mail")
        assert http.get("/first").headers["Location"] == "/first-wins"  # Netlify keeps the first match
        rewritten = http.get("/app/settings/profile")
        assert rewritten.status_code == 200 and rewritten.content == (site / "public" / "index.html").read_bytes()
        assert_headers(rewritten, declared_headers(site, "/*"))
        assert http.get("/app.js").status_code == 200  # not under /app/: the file itself
    uploaded = tomllib.loads(netlify.site_body(done.deploy.id, "netlify.toml").decode())
    assert uploaded["redirects"] == tomllib.loads(REDIRECTS_ADDED)["redirects"]


def edit(root: Path, old: str, new: str) -> None:
    text = (root / "netlify.toml").read_text()
    assert text.count(old) == 1, old  # the edit must change the file, or the test proves nothing
    (root / "netlify.toml").write_text(text.replace(old, new))


PLUGIN = '[[plugins]]\n  package = "./netlify/plugins/backend-ready"\n'
CACHE_PLUGIN = '\n[[plugins]]\n  package = "netlify-plugin-cache"\n  [plugins.inputs]\n    paths = [".cache"]\n'
STAGING = '[context.deploy-preview.environment]\n  BACKEND_URL = "https://staging.example.org"\n\n'
BUILD_ONLY_EDITS = [  # (old, new) in the project's netlify.toml: each changes only what the build reads
    (
        'python3 -m cnd_toolkit.netlify.redirects public"',
        'python3 -m cnd_toolkit.netlify.redirects public && make"',
    ),
    ("[build.environment]\n", '[build.environment]\n  NODE_VERSION = "20"\n'),
    (PLUGIN, PLUGIN + CACHE_PLUGIN),
    ("[build]\n", STAGING + "[build]\n"),
    ("[build]\n", '[dev]\n  framework = "#static"\n\n[build]\n'),
]


def test_only_a_change_to_what_is_served_uploads_the_config(
    netlify: LocalNetlify, client: api.NetlifyClient, site: Path
) -> None:
    first = deploy(client, site)
    assert "netlify.toml" in netlify.uploads() and first.uploaded == first.files
    assert deploy(client, site).uploaded == 0  # unchanged: nothing to send
    digests = dict(publish.site_files(site, BACKEND).digests)
    for old, new in BUILD_ONLY_EDITS:
        edit(site, old, new)
        assert publish.site_files(site, BACKEND).digests == digests, new
        assert deploy(client, site).uploaded == 0, new
    declared = declared_headers(site, "/*")
    name, value = next(iter(declared.items()))
    edit(site, f'{name} = "{value}"', f'{name} = "{value}; changed"')
    changed = deploy(client, site)
    assert changed.uploaded == 1 and netlify.uploads()[-1] == "netlify.toml"
    assert httpx.get(changed.deploy.url, timeout=60).headers[name] == f"{value}; changed"


# Characters that TOML must quote or escape, and a few that HTTP can carry as they are.
HOSTILE = "\"'\\#=[]{}$;:/.*?&%@!~`^|<>+-_" + "abcXYZ0189"


@pytest.mark.parametrize("seed", range(8))
def test_the_uploaded_config_is_the_served_part_exactly_and_nothing_secret(
    netlify: LocalNetlify, client: api.NetlifyClient, site: Path, seed: int
) -> None:
    """Seeded: header values and rules full of characters TOML escapes go up as the project has
    them, and secrets in the build settings (environment, contexts, plugin inputs, the build
    command) never do: the uploaded file is public on the deploy."""
    rng = random.Random(seed)

    def word(size: int) -> str:
        return "".join(rng.choice(HOSTILE) for _ in range(size)).strip()

    secrets = [f"nfp_{rng.randbytes(12).hex()}" for _ in range(5)]
    values = {f"X-Test-{i}": "v" + word(rng.randint(1, 30)) for i in range(rng.randint(1, 5))}
    paths = [f"/p{i}-{rng.randbytes(3).hex()}" for i in range(rng.randint(1, 4))]
    extra = "".join(
        f"\n[[redirects]]\n  from = {json.dumps(path)}\n  to = {json.dumps('/index.html?x=' + word(8))}\n"
        "  status = 200\n"
        for path in paths
    )
    extra += '\n[[headers]]\n  for = "/*"\n  [headers.values]\n'
    extra += "".join(f"    {name} = {json.dumps(value)}\n" for name, value in values.items())
    extra += f'\n{PLUGIN}  [plugins.inputs]\n    token = "{secrets[0]}"\n'
    extra += f'\n[context.production.environment]\n  API_TOKEN = "{secrets[1]}"\n'
    extra += '\n[images]\n  remote_images = ["https://cdn\\\\.example\\\\.org/.*"]\n'  # the Image CDN's: served
    extra += f'\n[context.branch-deploy]\n  command = "deploy --token {secrets[2]}"\n'
    with (site / "netlify.toml").open("a") as toml:
        toml.write(extra)
    edit(site, "[build.environment]\n", f'[build.environment]\n  SECRET_KEY = "{secrets[3]}"\n  DB = "{secrets[4]}"\n')
    files = publish.site_files(site, BACKEND)
    body = files.bodies["netlify.toml"]
    assert not [secret for secret in secrets if secret.encode() in body], body.decode()
    project = tomllib.loads((site / "netlify.toml").read_text())
    served = {key: project[key] for key in ("redirects", "headers", "images")}
    assert tomllib.loads(body.decode()) == served
    done = deploy(client, site)
    with httpx.Client(base_url=done.deploy.url, timeout=60) as http:
        assert_headers(http.get("/"), values)
        for path in paths:
            assert http.get(path).content == files.bodies["index.html"], path


def test_a_netlify_toml_in_the_publish_directory_is_refused_before_any_call(
    netlify: LocalNetlify, client: api.NetlifyClient, site: Path
) -> None:
    (site / "public" / "netlify.toml").write_text('[[headers]]\n  for = "/*"\n')
    with pytest.raises(ConfigError) as caught:
        deploy(client, site)
    message = str(caught.value)
    assert "\n" not in message and "public/netlify.toml" in message and "rename or remove" in message
    assert netlify.calls == []


def test_a_netlify_toml_netlifys_parser_cannot_read_is_refused(site: Path) -> None:
    """Netlify loses such a file whole (build, rules and all): shipping its served part alone
    would apply rules to the deploy that Netlify never applies to the project."""
    edit(site, PLUGIN, PLUGIN + '  [plugins.inputs]\n    paths = ["a", 1]\n')
    line = (site / "netlify.toml").read_text().split("\n").index('    paths = ["a", 1]') + 1
    expected = rf"^netlify.toml:{line}: `plugins.0.inputs.paths` mixes integer and string in one array; Netlify's"
    with pytest.raises(ConfigError, match=expected):
        publish.site_files(site, BACKEND)


@pytest.mark.parametrize(
    "table",
    [
        '[[context.production.headers]]\n  for = "/*"\n  [context.production.headers.values]\n    X-A = "b"\n',
        '[[context.deploy-preview.redirects]]\n  from = "/a"\n  to = "/b"\n',
    ],
)
def test_rules_in_a_deploy_context_are_refused_naming_the_line(site: Path, table: str) -> None:
    with (site / "netlify.toml").open("a") as toml:
        toml.write("\n" + table)
    line = (site / "netlify.toml").read_text().split("\n").index(table.split("\n")[0]) + 1
    with pytest.raises(ConfigError, match=rf"^netlify.toml:{line}: \[context\.[a-z-]+\] sets (headers|redirects); "):
        publish.site_files(site, BACKEND)


def test_a_preview_carries_the_headers_to_its_page_and_not_to_its_proxied_api(
    netlify: LocalNetlify, site: Path, api_origin: str
) -> None:
    """`inv preview` (cnd_toolkit.release.deploy.preview) goes through the same site_files: its draft has
    netlify.toml's headers on the page, and the API's answers through the proxy rule are the
    API's own (Netlify applies custom headers to the files it serves only)."""
    shutil.copy(project.ROOT / "pyproject.toml", site / "pyproject.toml")
    environ = {
        "NETLIFY_AUTH_TOKEN": TOKEN, "NETLIFY_SITE_ID": SITE, "NETLIFY_API_URL": netlify.api_url,
        "BACKEND_URL": api_origin, "HEALTH_TIMEOUT": "60",
    }  # fmt: skip
    done = deploy_mod.preview(project.load(site), settings_mod.load(site, environ=environ), say=lambda line: None)
    assert netlify.published() is None
    declared = declared_headers(site, "/*")
    assert_headers(httpx.get(done.deploy.url, timeout=60), declared)
    proxied = httpx.get(f"{done.deploy.url}api/version", timeout=60)
    direct = httpx.get(f"{api_origin}/api/version", timeout=60)
    assert proxied.json()["revision"] == "local-origin"
    assert {name: proxied.headers.get(name) for name in declared} == {
        name: direct.headers.get(name) for name in declared
    }
