"""A pull request's preview: its site taken from git's objects as data (cnd_toolkit.netlify.snapshot) and
deployed by this project's `inv preview --site` code, against the strict local Netlify API and the
real app as the backend. Nothing of the pull request is checked out or run; whatever its tree
holds (links out, submodules, names with `..`, odd bytes), no file outside it and no variable of
the process reaches Netlify or an error message."""

from __future__ import annotations

import os
import random
import re
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from api import create_app
from cnd_toolkit import project as proj
from cnd_toolkit import settings as settings_mod
from cnd_toolkit.errors import ConfigError, OpsError
from cnd_toolkit.netlify import publish, snapshot
from cnd_toolkit.release import deploy as deploy_ops
from werkzeug.serving import make_server

from tests.netlify_api import LocalNetlify

TOKEN = "nfp_preview_test_token_0123456789abcdef"
SECRET = "s3cr3t-" + "9f2c1e7a" * 4  # planted outside the site and in the environment: never sent
SEEDS = range(40)


def git(repo: Path, *args: str, data: bytes | None = None) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-C", str(repo), *args],
        input=data,
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose main branch holds this project's site and a file beside it."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(proj.ROOT / "netlify.toml", root / "netlify.toml")
    shutil.copytree(proj.ROOT / "public", root / "public")
    (root / "tasks.py").write_text("raise SystemExit('the pull request's code must never run')\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    return root


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A secret in a file next to the site and in this process's environment."""
    monkeypatch.setenv("PLANTED_SECRET", SECRET)
    secret = tmp_path / "secret.txt"
    secret.write_text(f"TOKEN={SECRET}\n")
    return secret


@pytest.fixture
def backend() -> Iterator[str]:
    """The real app on 127.0.0.1: the staging backend a draft's /api/* goes to."""
    server = make_server("127.0.0.1", 0, create_app({"TESTING": True, "VERSION": "9.9.9", "REVISION": "staging"}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


@pytest.fixture
def netlify() -> Iterator[LocalNetlify]:
    with LocalNetlify(TOKEN) as server:
        yield server


def staging(netlify: LocalNetlify, backend: str) -> settings_mod.Settings:
    environ = {
        "NETLIFY_AUTH_TOKEN": TOKEN,
        "NETLIFY_SITE_ID": "site-1",
        "NETLIFY_API_URL": netlify.api_url,
        "BACKEND_URL": backend,
        "HEALTH_TIMEOUT": "60",  # a deadline only: a working draft passes at once
    }
    return settings_mod.load(proj.ROOT, environ=environ)


def pull_request(repo: Path) -> str:
    """A branch that changes the page, adds one, and changes a file outside the site; then an
    edit nobody committed. Returns the branch's commit."""
    git(repo, "switch", "-q", "-c", "feature")
    index = repo / "public" / "index.html"
    index.write_text(index.read_text().replace("</body>", "<p>from pull request 7</p></body>"))
    (repo / "public" / "pr-page.html").write_text("<!doctype html><title>new</title><p>new page</p>\n")
    (repo / "tasks.py").write_text("raise SystemExit('changed by the pull request')\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "pull request")
    head = git(repo, "rev-parse", "HEAD")
    index.write_text("UNCOMMITTED")
    git(repo, "switch", "-q", "-f", "main")
    return head


def tree_files(repo: Path, commit: str, under: str) -> dict[str, bytes]:
    listed = git(repo, "ls-tree", "-r", "--name-only", "-z", commit, "--", under).split("\0")
    return {name: subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{name}"], capture_output=True,
                                 check=True).stdout for name in listed if name}  # fmt: skip


def written(dest: Path) -> dict[str, bytes]:
    found = {}
    for path in dest.rglob("*"):
        assert not path.is_symlink(), path
        if path.is_file():
            found[path.relative_to(dest).as_posix()] = path.read_bytes()
    return found


def test_the_snapshot_is_the_commits_netlify_toml_and_public_as_git_holds_them(repo: Path, tmp_path: Path) -> None:
    head = pull_request(repo)
    done = snapshot.write(repo, head, tmp_path / "site")
    expected = tree_files(repo, head, "public") | tree_files(repo, head, "netlify.toml")
    assert written(tmp_path / "site") == expected
    assert "<p>from pull request 7</p>" in expected["public/index.html"].decode()
    assert done.commit == head and done.publish == "public" and set(done.files) == set(expected)
    assert "UNCOMMITTED" not in (tmp_path / "site" / "public" / "index.html").read_text()
    assert not (tmp_path / "site" / "tasks.py").exists()  # only the site: nothing that could run
    # By branch name too, and never into a folder that already holds something.
    assert snapshot.write(repo, "feature", tmp_path / "again").commit == head
    with pytest.raises(snapshot.SnapshotError, match="not an empty folder"):
        snapshot.write(repo, head, tmp_path / "site")


def test_a_netlify_toml_that_is_a_folder_is_refused_not_taken_for_no_config(repo: Path, tmp_path: Path) -> None:
    """Taken for "no netlify.toml", the preview would ship without the project's headers."""
    git(repo, "switch", "-q", "-c", "folder")
    (repo / "netlify.toml").unlink()
    (repo / "netlify.toml").mkdir()
    (repo / "netlify.toml" / "x.toml").write_text("[build]\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "folder")
    refused = re.escape("'netlify.toml' (a folder, not the site's configuration")
    with pytest.raises(snapshot.SnapshotError, match=refused):
        snapshot.write(repo, "folder", tmp_path / "site")
    assert not any((tmp_path / "site").iterdir())


def test_the_publish_folder_is_the_one_the_commits_netlify_toml_names(repo: Path, tmp_path: Path) -> None:
    git(repo, "switch", "-q", "-c", "moved")
    git(repo, "mv", "public", "site")
    toml = (repo / "netlify.toml").read_text()
    (repo / "netlify.toml").write_text(toml.replace('publish = "public"', 'publish = "site"'))
    assert 'publish = "site"' in (repo / "netlify.toml").read_text()
    git(repo, "commit", "-q", "-am", "publish site/")
    done = snapshot.write(repo, "moved", tmp_path / "out")
    assert done.publish == "site" and (tmp_path / "out" / "site" / "index.html").is_file()
    assert not (tmp_path / "out" / "public").exists()
    assert set(publish.site_files(tmp_path / "out", "https://api.example.com").digests) >= {"index.html"}


def test_a_preview_deploys_the_pull_requests_site_with_this_projects_code(
    repo: Path, tmp_path: Path, netlify: LocalNetlify, backend: str
) -> None:
    head = pull_request(repo)
    site = tmp_path / "pull-request-site"
    snapshot.write(repo, head, site)
    lines: list[str] = []
    done = deploy_ops.preview(
        proj.load(), staging(netlify, backend), title=f"PR #7 {head}", site=site, say=lines.append
    )
    assert done.deploy.draft and netlify.published() is None  # a draft: nothing went live
    assert set(netlify.uploads()) == set(publish.site_files(site, backend).digests)
    assert b"from pull request 7" in netlify.site_body(done.deploy.id, "index.html")
    assert b"new page" in netlify.site_body(done.deploy.id, "pr-page.html")
    # The draft works: its /api/* reaches the staging backend (this is what the smoke test checked).
    answer = httpx.get(f"{done.deploy.url.rstrip('/')}/api/version", timeout=30)
    assert answer.status_code == 200 and answer.json()["version"] == "9.9.9"
    assert "from pull request 7" not in (proj.ROOT / "public" / "index.html").read_text()


# ------------------------------------------------------------------ hostile trees, as a class

# What a hostile pull request can put in its tree, as (kind, name, payload). The targets of links
# reach a file beside the site (its absolute path is filled in), the process's environment,
# parent folders, and a file inside the site.
LINK_TARGETS = ["/proc/self/environ", "../secret.txt", "{outside}", "../../..", "..", "/", "index.html", "."]
ODD_NAMES = ["caf\u00e9 menu.html", "-rf.html", "new\nline.html", "q?.html", "hash#.html", "back\\slash.html",
             "\u202eevil.html", "x" * 200 + ".html", ".env", ".well-known/security.txt"]  # fmt: skip
BAD_PARTS = ["..", ".", ".git", ".GIT"]
KINDS = ["link", "link", "config-link", "public-link", "submodule", "bad-part", "odd", "odd", "bytes", "exec"]
KINDS += ["twice", "clash"]
KEPT = ["odd", "odd", "bytes", "exec"]  # what the snapshot writes: then the deploy's own checks judge


@dataclass
class Hostile:
    # The root tree: name -> bytes | ("link", target) | ("exec", bytes) | ("submodule",) | dict (a folder)
    layout: dict[bytes, Any]
    refused: list[str]  # paths the snapshot must refuse, each named in its message


def refusals(layout: dict[bytes, Any], prefix: str = "") -> list[str]:
    """What the snapshot must refuse in the site's part of a tree, by the rule it documents: a
    link, a submodule, or a path with an empty, '.', '..' or '.git' part."""
    found = []
    for name, value in layout.items():
        text = name.decode("utf-8", "surrogateescape")
        path = prefix + text
        if not prefix and name not in {b"netlify.toml", b"public"}:
            continue
        bad = text.lower() in {"", ".", "..", ".git"}
        if isinstance(value, dict):
            found += _all(value, path + "/") if bad else refusals(value, path + "/")
        elif bad or (isinstance(value, tuple) and value[0] in {"link", "submodule", "twice", "clash"}):
            found.append(path)
    return found


def _all(layout: dict[bytes, Any], prefix: str) -> list[str]:
    paths = []
    for name, value in layout.items():
        path = prefix + name.decode("utf-8", "surrogateescape")
        paths += _all(value, path + "/") if isinstance(value, dict) else [path]
    return paths


def hostile(seed: int, outside: Path, kinds: list[str] = KINDS) -> Hostile:
    rng = random.Random(seed)
    public: dict[bytes, Any] = {
        name.encode(): (proj.ROOT / "public" / name).read_bytes() for name in ("index.html", "404.html", "app.js")
    }
    layout: dict[bytes, Any] = {b"netlify.toml": (proj.ROOT / "netlify.toml").read_bytes(), b"public": public}
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(kinds)
        folder = public if rng.random() < 0.7 else public.setdefault(b"deep", {}).setdefault(b"er", {})
        if kind == "link":
            target = rng.choice(LINK_TARGETS).format(outside=outside)
            folder[f"link{rng.randrange(10**6)}.html".encode()] = ("link", target)
        elif kind == "config-link":
            layout[b"netlify.toml"] = ("link", rng.choice([str(outside), "/proc/self/environ", "public/index.html"]))
        elif kind == "public-link":
            layout[b"public"] = ("link", rng.choice(["/", "..", str(outside.parent)]))
        elif kind == "submodule":
            folder[f"vendor{rng.randrange(10**6)}".encode()] = ("submodule",)
        elif kind == "bad-part":
            part = rng.choice(BAD_PARTS).encode()
            folder[part] = {b"x.html": b"<p>x</p>"} if rng.random() < 0.5 else b"<p>x</p>"
        elif kind == "odd":
            *dirs, leaf = rng.choice(ODD_NAMES).split("/")
            here = folder
            for part in dirs:
                here = here.setdefault(part.encode(), {})
            here[leaf.encode()] = rng.randbytes(rng.randint(0, 64))
        elif kind == "twice":  # two entries of one name (git never makes such a tree; a crafted push can)
            folder[f"dup{rng.randrange(10**6)}.html".encode()] = ("twice", b"<p>one</p>")
        elif kind == "clash":  # a file and a folder of one name
            folder[f"both{rng.randrange(10**6)}".encode()] = ("clash",)
        elif kind == "exec":
            folder[b"run.sh"] = ("exec", b"#!/bin/sh\necho hi\n")
        else:
            folder[b"latin1-\xe9.html"] = b"<p>not utf-8 name</p>"
    return Hostile(layout, sorted(refusals(layout)))


def build_tree(repo: Path, layout: dict[bytes, Any]) -> str:
    """Write ``layout`` as git objects (names as given, even ones git would not make) -> tree id."""
    raw = b""
    for name in sorted(layout, key=lambda n: n + b"/" if isinstance(layout[n], dict) else n):
        value = layout[name]
        if isinstance(value, dict):
            mode, oid = b"40000", build_tree(repo, value)
        elif isinstance(value, bytes):
            mode, oid = b"100644", git(repo, "hash-object", "-w", "--stdin", data=value)
        elif value[0] == "exec":
            mode, oid = b"100755", git(repo, "hash-object", "-w", "--stdin", data=value[1])
        elif value[0] == "link":
            mode, oid = b"120000", git(repo, "hash-object", "-w", "--stdin", data=value[1].encode())
        elif value[0] == "twice":
            oid = git(repo, "hash-object", "-w", "--stdin", data=value[1])
            raw += b"100644 " + name + b"\0" + bytes.fromhex(oid)
            mode = b"100644"
        elif value[0] == "clash":
            raw += b"100644 " + name + b"\0" + bytes.fromhex(git(repo, "hash-object", "-w", "--stdin", data=b"f"))
            mode, oid = b"40000", build_tree(repo, {b"x.html": b"<p>x</p>"})
        else:  # a submodule: a commit id git does not have, as in a real superproject
            mode, oid = b"160000", "0123456789abcdef0123456789abcdef01234567"
        raw += mode + b" " + name + b"\0" + bytes.fromhex(oid)
    return git(repo, "hash-object", "-t", "tree", "--literally", "-w", "--stdin", data=raw)


def hostile_commit(repo: Path, case: Hostile) -> str:
    return git(repo, "commit-tree", build_tree(repo, case.layout), "-p", "HEAD", "-m", "hostile")


@pytest.mark.parametrize("seed", SEEDS)
def test_whatever_a_pull_requests_tree_holds_only_its_plain_files_are_written(
    repo: Path, tmp_path: Path, outside: Path, seed: int
) -> None:
    case = hostile(seed, outside)
    commit = hostile_commit(repo, case)
    dest = tmp_path / "site"
    if case.refused:
        with pytest.raises(snapshot.SnapshotError) as caught:
            snapshot.write(repo, commit, dest)
        message = str(caught.value)
        for path in case.refused:
            assert repr(path) in message, (path, message)
        assert "\n" not in message.replace("\\n", "") and SECRET not in message
        assert written(dest) == {}  # nothing was written
        return
    done = snapshot.write(repo, commit, dest)
    files = written(dest)
    assert set(files) == set(done.files)
    for path in dest.rglob("*"):
        assert dest.resolve() in path.resolve().parents
        assert path.is_dir() or not path.stat().st_mode & (stat.S_IXUSR | stat.S_IWOTH)
    assert all(SECRET.encode() not in body for body in files.values())


@pytest.mark.parametrize("seed", SEEDS)
def test_what_a_pull_request_can_preview_never_carries_a_secret_to_netlify(
    repo: Path, tmp_path: Path, outside: Path, netlify: LocalNetlify, backend: str, seed: int
) -> None:
    case = hostile(seed, outside, KINDS if seed % 2 else KEPT)
    dest = tmp_path / "site"
    try:
        snapshot.write(repo, hostile_commit(repo, case), dest)
    except snapshot.SnapshotError:
        assert case.refused
        return
    try:
        done = deploy_ops.preview(proj.load(), staging(netlify, backend), site=dest, say=lambda line: None)
    except OpsError as exc:  # names Netlify cannot serve: refused, every one named
        assert isinstance(exc, ConfigError) and SECRET not in str(exc), exc
        assert not netlify.deploys
        return
    for path in publish.site_files(dest, backend).bodies:
        assert SECRET.encode() not in netlify.site_body(done.deploy.id, path)
    assert netlify.published() is None


# ------------------------------------------------------------------ --site given by hand

LINK_SPOTS = ["netlify.toml", "public/_headers", "public/_redirects", "public/index.html", "public/deep/x.html"]


@pytest.mark.parametrize("seed", range(12))
def test_a_site_folder_with_a_link_out_is_refused_before_anything_is_read(
    tmp_path: Path, outside: Path, netlify: LocalNetlify, backend: str, seed: int
) -> None:
    rng = random.Random(seed)
    site = tmp_path / "site"
    shutil.copytree(proj.ROOT / "public", site / "public")
    shutil.copy(proj.ROOT / "netlify.toml", site / "netlify.toml")
    spots = rng.sample(LINK_SPOTS, rng.randint(1, 3))
    for spot in spots:
        link = site / spot
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(rng.choice([str(outside), "/proc/self/environ", "../" * (spot.count("/") + 1) + "secret.txt"]))
    with pytest.raises(ConfigError) as caught:
        deploy_ops.preview(proj.load(), staging(netlify, backend), site=site, say=lambda line: None)
    message = str(caught.value)
    assert all(repr(spot) in message for spot in spots), message
    assert SECRET not in message and "nothing was deployed" in message
    assert not netlify.deploys


def test_a_site_folder_that_is_not_there_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--site .*missing is not a folder"):
        snapshot.checked_site(tmp_path / "missing")
    inside = tmp_path / "site"
    (inside / "public").mkdir(parents=True)
    (inside / "public" / "index.html").write_text("<p>x</p>")
    (inside / "public" / "home.html").symlink_to("index.html")  # a link that stays inside is fine
    assert snapshot.checked_site(inside) == inside.resolve()


# ------------------------------------------------------------------ revisions and the command line

BAD_REVISIONS = ["", "--output=/tmp/pwned", "-h", "HEAD\n", "nonexistent-branch", "HEAD^{tree}", "a" * 40, "\0"]


@pytest.mark.parametrize("revision", BAD_REVISIONS)
def test_a_revision_that_names_no_commit_is_refused_in_one_line(repo: Path, tmp_path: Path, revision: str) -> None:
    with pytest.raises(snapshot.SnapshotError) as caught:
        snapshot.write(repo, revision, tmp_path / "out")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()
    assert not Path("/tmp/pwned").exists()


def test_the_workflows_snapshot_step_runs_as_written(repo: Path, tmp_path: Path) -> None:
    """preview.yml's step, run by bash as a runner would, in a checkout of the base branch."""
    head = pull_request(repo)
    workflow = yaml.safe_load((proj.ROOT / ".github" / "workflows" / "preview.yml").read_text())
    steps = workflow["jobs"]["preview"]["steps"]
    [step] = [s for s in steps if "cnd_toolkit.netlify.snapshot" in str(s.get("run", ""))]
    assert step["env"] == {"HEAD_SHA": "${" + "{ github.event.pull_request.head.sha }" + "}"}
    shims = tmp_path / "bin"
    shims.mkdir()
    uv = shims / "uv"  # `uv run --no-sync CMD...` runs CMD in the synced environment: this one
    uv.write_text('#!/bin/sh\n[ "$1 $2" = "run --no-sync" ] || exit 97\nshift 2\nexec "$@"\n')
    uv.chmod(0o755)
    # This environment's python (a link to it would not find the environment: no pyvenv.cfg beside it).
    (shims / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (shims / "python").chmod(0o755)
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    environ = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "HEAD_SHA": head, "RUNNER_TEMP": str(runner_temp)}
    environ.pop("PYTHONPATH", None)
    done = subprocess.run(
        ["bash", "-e", "-c", step["run"]], cwd=repo, env=environ, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"at {head[:12]} to {runner_temp}/pull-request-site" in done.stdout
    assert written(runner_temp / "pull-request-site") == tree_files(repo, head, "public") | tree_files(
        repo, head, "netlify.toml"
    )
    # The site inv preview deploys is that folder.
    [deploy_step] = [s for s in workflow["jobs"]["preview"]["steps"] if "inv preview" in str(s.get("run", ""))]
    assert '--site "$RUNNER_TEMP/pull-request-site"' in deploy_step["run"]
    # A revision that is not there: one line, exit 1.
    environ["HEAD_SHA"] = "f" * 40
    failed = subprocess.run(
        ["bash", "-e", "-c", step["run"]], cwd=repo, env=environ, capture_output=True, text=True, timeout=120
    )
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1, failed.stderr
    assert failed.stderr.startswith("error: revision 'ffffffff")
