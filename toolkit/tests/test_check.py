"""`inv check` (cnd_toolkit.netlify.check) and the `_redirects` build step (cnd_toolkit.netlify.redirects)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cnd_toolkit import project
from cnd_toolkit.netlify import redirects
from cnd_toolkit.netlify.check import check_project

ROOT = project.ROOT  # the project under test: a default render


def make_site(tmp_path: Path, toml: str, redirects_text: str = "", headers_text: str = "") -> Path:
    (tmp_path / "netlify.toml").write_text(toml)
    public = tmp_path / "public"
    public.mkdir(exist_ok=True)
    if redirects_text:
        (public / "_redirects").write_text(redirects_text)
    if headers_text:
        (public / "_headers").write_text(headers_text)
    return tmp_path


def messages(root: Path) -> list[str]:
    return [str(problem) for problem in check_project(root)]


def test_the_generated_project_is_clean() -> None:
    assert messages(ROOT) == []


def test_typos_are_named_with_file_line_and_a_suggestion(tmp_path: Path) -> None:
    root = make_site(
        tmp_path,
        '[build]\n  publsh = "public"\n\n[[redirects]]\n  from = "/a"\n  to = "/b"\n  stauts = 302\n\n[buidl]\n',
    )
    assert messages(root) == [
        "netlify.toml:2: unknown key 'publsh' in [build]; did you mean 'publish'?",
        "netlify.toml:7: unknown key 'stauts' in [[redirects]]; did you mean 'status'?",
        "netlify.toml:9: unknown section [buidl]; did you mean 'build'?",
    ]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("/a /b 299", "public/_redirects:1: status 299 is not one Netlify supports"),
        ("/a", "public/_redirects:1: rule for /a has no destination"),
        ("/a/*/b /c/:splat 301", "public/_redirects:1: `from` '/a/*/b' has a splat (*) that is not the whole last"),
        ("/a /b/:splat 301", "public/_redirects:1: `to` uses :splat but `from` '/a' has no * to capture it"),
        (
            "/api/* api.example.com/:splat 200",
            "public/_redirects:1: rule for /api/*: the destination must start with /, http:// or https://",
        ),
        ("/api/* https:// 200", "public/_redirects:1: `to` 'https://' is not a valid URL"),
        ("/a /b/:id 301", "public/_redirects:1: `to` uses :id but `from` and the query define no :id"),
        ("/a /b 302 Contry=au", "public/_redirects:1: unknown condition 'Contry'; did you mean 'Country'?"),
    ],
)
def test_bad_redirect_rules(tmp_path: Path, rule: str, message: str) -> None:
    root = make_site(tmp_path, '[build]\n  publish = "public"\n', rule + "\n")
    found = messages(root)
    assert any(m.startswith(message) for m in found), found


def test_toml_redirect_problems_name_the_rule_line(tmp_path: Path) -> None:
    root = make_site(
        tmp_path,
        '[build]\npublish = "public"\n\n[[redirects]]\nfrom = "/x"\nto = "htps://api.example.com"\nstatus = 200\n',
    )
    assert messages(root) == [
        "netlify.toml:4: `to` 'htps://api.example.com' must start with / or http(s)://; "
        "a proxy to another host needs the full URL"
    ]


def test_missing_publish_directory(tmp_path: Path) -> None:
    (tmp_path / "netlify.toml").write_text('[build]\n  publish = "dist"\n')
    assert messages(tmp_path) == [
        "netlify.toml:2: publish directory 'dist' does not exist; create it or fix [build] publish"
    ]


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    root = make_site(tmp_path, '[build]\n  publish = "public\n')
    [message] = messages(root)
    assert message.startswith("netlify.toml:2: not valid TOML")


def test_headers_file_problems(tmp_path: Path) -> None:
    root = make_site(tmp_path, '[build]\n  publish = "public"\n', headers_text="  X-A: b\n/x\n  no colon here\n")
    assert messages(root) == [
        "public/_headers:1: a header line before any path; start with a path such as `/*`",
        "public/_headers:3: 'no colon here' is neither a path (starting with /) nor `Name: value`",
    ]


def test_check_command_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "cnd_toolkit.netlify.check", str(ROOT)], cwd=ROOT, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    bad = make_site(tmp_path, "[build]\n  publish = 'public'\n", "/x\n")
    failed = subprocess.run(
        [sys.executable, "-m", "cnd_toolkit.netlify.check", str(bad)], cwd=ROOT, capture_output=True, text=True
    )
    assert failed.returncode == 1
    assert "public/_redirects:1:" in failed.stderr and "1 error(s)" in failed.stderr


def test_build_step_rewrites_only_its_block(tmp_path: Path) -> None:
    public = tmp_path / "public"
    public.mkdir()
    (public / "_redirects").write_text("/mine /kept 301\n")
    redirects.write(public, "https://api-one.example.com")
    redirects.write(public, "https://api-two.example.com")
    text = (public / "_redirects").read_text()
    assert text.count(redirects.BEGIN) == 1
    assert "/api/*  https://api-two.example.com/api/:splat  200!" in text
    assert "api-one" not in text
    assert text.endswith("/mine /kept 301\n")
    assert text.index("/api/*") < text.index("/mine")  # first, so it is the first match


@pytest.mark.parametrize(
    "bad",
    [
        "http://api.example.com",
        "https://api.example.com/api",
        "api.example.com",
        "https://api.example.com:99999",
        "https://api.example.com:0",
        "https://",
        "https://-bad-.example",
        "https://a..example",
        "https://user@api.example.com",
        "https://api.example.com?x=1",
        "https://api.example.com#x",
        "https://api.example.com:",
        "https://api.example.com//",
    ],
)
def test_build_step_rejects_bad_backend_urls(tmp_path: Path, bad: str) -> None:
    (tmp_path / "public").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "cnd_toolkit.netlify.redirects", str(tmp_path / "public")],
        cwd=ROOT,
        env={"BACKEND_URL": bad, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "is not an https origin" in result.stderr
    assert not (tmp_path / "public" / "_redirects").exists()


def test_build_step_as_netlify_runs_it(tmp_path: Path) -> None:
    """Standard library only (-S: no site-packages), as in Netlify's build image: the package alone
    (the build installs it with --no-deps) on PYTHONPATH."""
    import cnd_toolkit

    (tmp_path / "public").mkdir()
    alone = tmp_path / "target"
    shutil.copytree(Path(cnd_toolkit.__file__).parent, alone / "cnd_toolkit")
    result = subprocess.run(
        [sys.executable, "-S", "-m", "cnd_toolkit.netlify.redirects", str(tmp_path / "public")],
        cwd=ROOT,
        env={
            "BACKEND_URL": "https://preview-api.example.com",
            "CONTEXT": "deploy-preview",
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(alone),
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "context deploy-preview" in result.stdout
    assert "https://preview-api.example.com/api/:splat" in (tmp_path / "public" / "_redirects").read_text()


def test_build_step_without_backend_url(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cnd_toolkit.netlify.redirects"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "BACKEND_URL is not set" in result.stderr


# Configurations that passed `inv check` once and then broke the edge at request time: each is
# now a file:line error from `inv check` and a one-line start-up error from the edge.
BREAKS_THE_EDGE = [
    ("[redirects]\n  from = '/a'\n  to = '/b'\n", "", "", "netlify.toml:1: `redirects` must be an array of tables"),
    ('build = "x"\n', "", "", "netlify.toml:1: `build` must be a table"),
    ("[[build]]\n  publish = 'public'\n", "", "", "netlify.toml:1: `build` must be a table"),
    ("[[redirects]]\n  from = 5\n  to = '/b'\n", "", "", "netlify.toml:2: `from` in [[redirects]] #1 must be a string"),
    (
        "[[redirects]]\n  from = '/a'\n  to = '/b'\n  status = '301'\n",
        "",
        "",
        "netlify.toml:4: `status` in [[redirects]] #1 must be a number",
    ),
    (
        "[[headers]]\n  for = '/*'\n  values = 'x'\n",
        "",
        "",
        "netlify.toml:3: `values` in [[headers]] #1 must be a table",
    ),
    ("", "/:1bad /b 301\n", "", "public/_redirects:1: placeholder ':1bad'"),
    ("", "/:id/:id /b/:id 301\n", "", "public/_redirects:1: placeholder :id is used twice"),
    ("", "", "/*\n  X-Bad: a\x01b\n", "public/_headers:2: header X-Bad has a control character"),
    (
        "[[headers]]\n  for = '/*'\n  [headers.values]\n    X-A = \"a\\nb\"\n",
        "",
        "",
        "netlify.toml:4: header X-A has a control",
    ),
    ("", "", "/*\n  X Bad: value\n", "public/_headers:2: 'X Bad' is not a valid header name"),
]


@pytest.mark.parametrize(("toml", "rules", "headers", "message"), BREAKS_THE_EDGE)
def test_what_would_break_the_edge_is_a_file_line_error(
    tmp_path: Path, toml: str, rules: str, headers: str, message: str
) -> None:
    from cnd_toolkit.edge.server import load_site
    from cnd_toolkit.errors import ConfigError

    root = make_site(tmp_path, toml, rules, headers)
    found = messages(root)
    assert any(m.startswith(message) for m in found), found
    with pytest.raises(ConfigError) as raised:
        load_site(root)
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith(message.split(": ")[0] + ":")


@pytest.mark.parametrize("name", ["netlify.toml", "public/_redirects", "public/_headers"])
def test_files_that_are_not_utf8(tmp_path: Path, name: str) -> None:
    root = make_site(tmp_path, '[build]\n  publish = "public"\n')
    (root / name).write_bytes(b"# fine\n# caf\xe9 in Latin-1\n")
    assert messages(root) == [f"{name}:2: is not UTF-8 (byte 0xe9 at line 2); save the file as UTF-8"]


def test_unindented_header_lines_apply_with_a_warning(tmp_path: Path) -> None:
    from cnd_toolkit.netlify.config import load
    from cnd_toolkit.netlify.urls import RequestPath

    root = make_site(tmp_path, '[build]\n  publish = "public"\n', headers_text="/*\nX-Frame-Options: DENY\n")
    assert messages(root) == [
        "public/_headers:2: warning: header line `X-Frame-Options: DENY` is not indented under its path; indent it"
    ]
    rule = load(root).headers[0]
    assert rule.values == {"X-Frame-Options": "DENY"} and rule.matches(RequestPath.parse("/x"))
    done = subprocess.run(
        [sys.executable, "-m", "cnd_toolkit.netlify.check", str(root)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0 and "1 warning(s)" in done.stdout


@pytest.mark.parametrize("marker", ["ops/redirects.py", "ops.netlify.redirects"])
def test_build_step_replaces_the_block_of_an_older_template(tmp_path: Path, marker: str) -> None:
    old = f"/a /b 301\n# BEGIN {marker}: the API proxy\n/api/*  https://x.example/api/:splat  200!\n# END {marker}\n"
    text = redirects.render(old, "https://new.example")
    assert text.count("/api/*") == 1 and "x.example" not in text and marker not in text
    assert text.startswith("/a /b 301\n# BEGIN cnd_toolkit.netlify.redirects")
    assert redirects.render(text, "https://new.example") == text


# Found by the config fuzzer (tests/test_config_fuzz.py) and the template's differential against
@pytest.mark.parametrize("name", ["netlify.toml", "public/_redirects", "public/_headers"])
@pytest.mark.parametrize("target", ["outside", "/proc/self/environ"])
def test_a_rules_file_linked_out_of_the_project_is_never_read(
    tmp_path: Path, name: str, target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the link's target holds (a key, the process's environment) never reaches a message."""
    from cnd_toolkit.edge.server import load_site
    from cnd_toolkit.errors import ConfigError
    from cnd_toolkit.netlify.publish import site_files

    secret = "s3cret-" + tmp_path.name
    monkeypatch.setenv("CND_PLANTED_SECRET", secret)  # in /proc/self/environ of this process
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "key").write_text(f"[[redirects]]\n{secret} = 1\n/{secret} /x 301\n/{secret}\n  X-{secret}: y\n")
    (tmp_path / "project").mkdir()
    root = make_site(tmp_path / "project", TOML_OK)
    (root / name).unlink(missing_ok=True)
    (root / name).symlink_to(outside / "key" if target == "outside" else target)
    found = messages(root)
    assert found[0] == f"{name}:1: is a link to a file outside the project; replace the link with a real file"
    assert secret not in "\n".join(found)
    with pytest.raises(ConfigError, match=f"^{name}:1: ") as refused:
        load_site(root)
    assert secret not in str(refused.value)
    with pytest.raises(ConfigError) as refused:
        site_files(root, "https://api.example.com")
    assert secret not in str(refused.value)


@pytest.mark.parametrize("depth", [2_000, 50_000])
@pytest.mark.parametrize("shape", ["[", "{a = "])
def test_toml_nested_too_deep_for_python_is_one_line(tmp_path: Path, depth: int, shape: str) -> None:
    """A pull request's netlify.toml reaches the preview's tooling: it must not crash it."""
    from cnd_toolkit.edge.server import load_site
    from cnd_toolkit.errors import ConfigError
    from cnd_toolkit.netlify.publish import site_files

    close = "]" if shape == "[" else "}"
    root = make_site(tmp_path, TOML_OK + "x = " + shape * depth + "1" + close * depth + "\n")
    assert messages(root) == [
        "netlify.toml:1: nests arrays or tables too deeply to be read; netlify.toml never needs more than a few levels"
    ]
    with pytest.raises(ConfigError, match=r"^netlify\.toml:1: nests"):
        load_site(root)
    with pytest.raises(ConfigError, match=r"^netlify\.toml:1: nests"):
        site_files(root, "https://api.example.com")


# Netlify's own parsers: one regression test per class of defect.
TOML_OK = '[build]\n  publish = "public"\n'


@pytest.mark.parametrize("name", ["netlify.toml", "public/_redirects", "public/_headers"])
def test_a_directory_where_a_file_should_be_is_named_at_line_1(tmp_path: Path, name: str) -> None:
    from cnd_toolkit.edge.server import load_site
    from cnd_toolkit.errors import ConfigError

    root = make_site(tmp_path, TOML_OK)
    (root / name).unlink(missing_ok=True)
    (root / name).mkdir()
    assert messages(root) == [f"{name}:1: is a directory, not a file; remove or rename it"]
    with pytest.raises(ConfigError, match=f"^{name}:1: "):
        load_site(root)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        # a key inside an inline table has no line of its own: the table's line, never 0
        (
            '# rules\n\nredirects = [{ from = "/a", to = "/b", stauts = 302 }]\n',
            "netlify.toml:3: unknown key 'stauts' in [[redirects]]; did you mean 'status'?",
        ),
        # "at end of document" names no line: the last line, not the first
        (TOML_OK + '\n[[redirects]]\n  from = "/a', "netlify.toml:5: not valid TOML: Unterminated string"),
        # a U+2028 inside a string does not end a TOML line
        (TOML_OK + '  command = "a\u2028b"\n  stauts = 1\n', "netlify.toml:4: unknown key 'stauts' in [build]"),
    ],
)
def test_toml_messages_point_at_the_right_line(tmp_path: Path, toml: str, message: str) -> None:
    found = messages(make_site(tmp_path, toml))
    assert any(m.startswith(message) for m in found), found


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("\ufeff" + TOML_OK, "netlify.toml:1: starts with a byte order mark (BOM)"),
        (TOML_OK + "[dev]\n  ports = [8888, 'x']\n", "netlify.toml:4: `dev.ports` mixes integer and string"),
        (TOML_OK + "[dev]\n  port = 9007199254740992\n", "netlify.toml:4: `dev.port` = 9007199254740992 is too large"),
        (TOML_OK + "[dev]\n  port = nan\n", "netlify.toml:4: `dev.port` = nan is read as null by Netlify"),
    ],
)
def test_toml_that_netlifys_toml_parser_rejects(tmp_path: Path, toml: str, message: str) -> None:
    """tomllib reads TOML 1.0; Netlify reads TOML 0.5 through JSON and loses the whole file."""
    found = messages(make_site(tmp_path, toml))
    assert any(m.startswith(message) for m in found), found


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        # urlsplit raised on these, a traceback out of `inv check`
        ("/a https://[::1 302\n", "public/_redirects:1: `to` 'https://[::1' is not a valid URL"),
        # control characters Python splits on and JavaScript does not: Netlify reads other tokens
        ("/a\x1c/b 301\n", "public/_redirects:1: has a control character (U+001C)"),
        ("/a /b\x85301\n", "public/_redirects:1: has a control character (U+0085)"),
        # a CR alone ends a line in an editor, not for Netlify: the whole file is one comment here
        ("# rules\r/old /new 301\r/a /b 302\r", "public/_redirects:1: has a carriage return (CR) inside the line"),
        # statuses that Netlify's parseInt reads as some other number, or as one at all
        ("/a /b 301x\n", "public/_redirects:1: status '301x' is not a number"),
        ("/a /b 200!!\n", "public/_redirects:1: status '200!!' is not a number"),
        ("/a /b 0x12d\n", "public/_redirects:1: status '0x12d' is not a number"),
        ("/a /b \u0663\u0660\u0661\n", "public/_redirects:1: '\u0663\u0660\u0661' after the destination is not"),
        # key=value tokens Netlify reads as something else than written
        ("/a q /b 301\n", "public/_redirects:1: 'q' has no `=`"),
        ("/a q=a=b /b 301\n", "public/_redirects:1: 'q=a=b' has more than one `=`"),
        ("/a =x /b 301\n", "public/_redirects:1: '=x' has no name before `=`"),
        ("/a /b 302 Country\n", "public/_redirects:1: 'Country' has no `=`"),
        # what Netlify's parser rejects
        ("/.netlify/functions/x /y 200\n", "public/_redirects:1: `from` '/.netlify/functions/x': paths under"),
        ("https://[::1 /b 301\n", "public/_redirects:1: `from` 'https://[::1' is not a valid URL"),
        ("https://host:99999/x /b 301\n", "public/_redirects:1: `from` 'https://host:99999/x' is not a valid URL"),
    ],
)
def test_redirect_lines_netlify_reads_otherwise_are_errors(tmp_path: Path, rules: str, message: str) -> None:
    found = messages(make_site(tmp_path, TOML_OK, rules))
    assert any(m.startswith(message) for m in found), found


def test_rule_lines_split_on_javascripts_whitespace(tmp_path: Path) -> None:
    """Netlify's parser splits on JavaScript's whitespace: a no-break space separates tokens."""
    from cnd_toolkit.netlify.config import load

    root = make_site(tmp_path, TOML_OK, "\ufeff/a\u00a0/b\u3000302\n/c\u2003/d 301\ufeffCountry=au,nz\n")
    assert messages(root) == []
    rules = load(root).redirects
    assert [(r.source, r.to, r.status, r.conditions) for r in rules] == [
        ("/a", "/b", 302, {}),
        ("/c", "/d", 301, {"Country": ["au", "nz"]}),
    ]


def test_header_rules_are_never_dropped_silently(tmp_path: Path) -> None:
    from cnd_toolkit.netlify.config import load

    headers = "/*\n  # X-A: b\n/a\x01\n  X-B: c\n/b\n  X-C: d\n# rules\r/c\r  X-D: e\n"
    root = make_site(tmp_path, TOML_OK + '\n[[headers]]\n  for = "/x"\n', headers_text=headers)
    assert messages(root) == [
        "netlify.toml:4: warning: [[headers]] for /x has no values; Netlify ignores it",
        "public/_headers:1: warning: path /* has no header lines under it; Netlify ignores it",
        "public/_headers:3: has a control character (U+0001); remove it",
        "public/_headers:7: has a carriage return (CR) inside the line; save the file with LF (or CRLF) line ends",
    ]
    # X-B belongs to the rejected /a block, not to the /* before it
    assert [(r.source, r.values) for r in load(root).headers] == [("/b", {"X-C": "d"})]


def test_header_and_condition_values_as_netlify_normalises_them(tmp_path: Path) -> None:
    from cnd_toolkit.netlify.config import load

    toml = TOML_OK + (
        '\n[[headers]]\n  for = " /x "\n  [headers.values]\n    X-A = ["a ,b", " c "]\n    X-B = "d ,e"\n'
        '\n[[redirects]]\n  from = "/g"\n  to = "/h"\n  conditions = { Country = "au , nz", country = "us" }\n'
    )
    root = make_site(tmp_path, toml)
    assert messages(root) == []
    config = load(root)
    # array items are trimmed and joined as they are; a string's commas are normalised
    assert [(r.source, r.values) for r in config.headers] == [("/x", {"X-A": "a ,b, c", "X-B": "d, e"})]
    assert config.redirects[0].conditions == {"Country": ["us"]}  # `country` wins, as in Netlify's parser


def test_identical_rules_keep_netlifys_last_copy(tmp_path: Path) -> None:
    """Netlify's merge keeps only the last of identical rules, so the rules between its copies
    come first: a single-page-app fallback after the API block then takes /api/* on Netlify."""
    from cnd_toolkit.edge.routing import Router
    from cnd_toolkit.netlify.config import load

    api = '[[redirects]]\n  from = "/api/*"\n  to = "https://api.example.com/api/:splat"\n  status = 200\n'
    api += "  force = true\n"
    block = "/api/*  https://api.example.com/api/:splat  200!\n"
    root = make_site(tmp_path, TOML_OK + api, block + "/*  /index.html  200\n")
    (root / "public" / "index.html").write_text("app")
    assert messages(root) == [
        "public/_redirects:1: warning: /api/* is repeated at netlify.toml:3; Netlify keeps only that copy, so "
        "1 rule(s) from public/_redirects:2 on are tried before it; remove one copy"
    ]
    config = load(root)
    assert [str(r.origin) for r in config.redirects] == ["public/_redirects:2", "netlify.toml:3"]
    assert Router(config).route("GET", "/api/x").kind == "rewrite"  # as on Netlify
    # the generated project's own pair (block and fallback together) is one rule and no warning
    (root / "public" / "_redirects").write_text(block)
    assert messages(root) == [] and [str(r.origin) for r in load(root).redirects] == ["netlify.toml:3"]


def test_a_trailing_slash_on_the_backend_url_is_dropped() -> None:
    assert redirects.check_backend_url("https://api.example.com/") == "https://api.example.com"
    assert redirects.check_backend_url("http://127.0.0.1:5000/", allow_local=True) == "http://127.0.0.1:5000"
    with pytest.raises(redirects.BackendUrlError, match="--backend='http://localhost:99999'"):
        redirects.check_backend_url("http://localhost:99999", allow_local=True, name="--backend")


@pytest.mark.parametrize(
    ("table", "value"),
    [
        ("[build.environment]", "https://api.example.com/api"),
        ("[context.deploy-preview.environment]", "http://staging.example.com"),
        ("[context.production.environment]", "https://api.example.com:99999"),
    ],
)
def test_check_validates_every_backend_url_as_the_build_does(tmp_path: Path, table: str, value: str) -> None:
    root = make_site(tmp_path, f'[build]\n  publish = "public"\n\n{table}\n  BACKEND_URL = "{value}"\n')
    assert [m.split(" is not")[0] for m in messages(root)] == [f"netlify.toml:5: BACKEND_URL={value!r}"]


def test_typos_in_a_context_are_named(tmp_path: Path) -> None:
    root = make_site(tmp_path, '[build]\n  publish = "public"\n\n[context.production]\n  publsh = "dist"\n')
    assert messages(root) == ["netlify.toml:5: unknown key 'publsh' in [context.production]; did you mean 'publish'?"]


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding", "Connection", "Keep-Alive", "Upgrade", "TE"])
def test_headers_that_frame_the_message_are_refused(tmp_path: Path, name: str) -> None:
    root = make_site(tmp_path, '[build]\n  publish = "public"\n', headers_text=f"/*\n  {name}: 5\n")
    assert messages(root) == [
        f"public/_headers:2: {name} describes the connection, not the file; the server sets it: remove it"
    ]


def test_a_publish_symlink_out_of_the_project_is_an_error(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    project = tmp_path / "project"
    project.mkdir()
    (project / "netlify.toml").write_text('[build]\n  publish = "public"\n')
    (project / "public").symlink_to(outside)
    found = messages(project)
    assert found == [
        f"netlify.toml:2: publish directory 'public' resolves to {outside}, outside the project; point it inside"
    ]


def test_open_redirects_are_a_warning(tmp_path: Path) -> None:
    root = make_site(tmp_path, '[build]\n  publish = "public"\n', "/go/*  /:splat  302\n/ok/*  /x/:splat  302\n")
    assert [m.split(" starts with")[0] for m in messages(root)] == ["public/_redirects:1: warning: `to` '/:splat'"]


def test_build_step_replaces_every_block_and_refuses_a_broken_one() -> None:
    two = f"{redirects.BEGIN}\n/api/* https://a.example/api/:splat 200!\n{redirects.END}\n/x /y 301\n"
    two += "# BEGIN ops/redirects.py\n/api/* https://b.example/api/:splat 200!\n# END ops/redirects.py\n"
    text = redirects.render(two, "https://new.example")
    assert text.count("/api/*") == 1 and "a.example" not in text and "b.example" not in text
    assert text.index("new.example") < text.index("/x /y 301")
    with pytest.raises(redirects.BackendUrlError, match=r"has no '# END cnd_toolkit\.netlify\.redirects' line"):
        redirects.render(f"/x /y 301\n{redirects.BEGIN}\n/api/* https://a.example/api/:splat 200!\n", "https://n.ex")


def test_a_broken_generated_block_is_named_by_check(tmp_path: Path) -> None:
    root = make_site(tmp_path, '[build]\n  publish = "public"\n', f"/a /b 301\n{redirects.BEGIN}\n/api/* /x 200\n")
    assert [m.split(" has no")[0] for m in messages(root)] == [
        "public/_redirects:2: the block that starts '# BEGIN cnd_toolkit.netlify.redirects'"
    ]


# Links out of the publish directory (to a file, a folder, nothing, a dotfile inside, itself) and
# names Netlify cannot serve (control characters, backslash, #, ?): as they appear in `inv check`.
CHECK_LINKS = [
    ("settings.txt", "../.env", "a link to '../.env', outside public/"),
    ("passwd.txt", "/etc/passwd", "a link to '/etc/passwd', outside public/"),
    ("private", "../secrets", "a link to '../secrets', outside public/"),
    ("gone.txt", "/nonexistent/x", "a link to '/nonexistent/x', outside public/"),
    ("hidden.txt", ".env", "a link to '.env', a file Netlify does not deploy"),
    ("sub/loop", "..", "a link to a folder that contains it (a loop)"),
]
CHECK_NAMES = [
    ("new\nline.html", "new\\nline.html", "a control character"),
    ("tab\t.html", "tab\\t.html", "a control character"),
    ("esc\x1b.txt", "esc\\x1b.txt", "a control character"),
    ("c1\x9b.txt", "c1\\x9b.txt", "a control character"),
    ("back\\slash.html", "back\\\\slash.html", "a backslash"),
    ("a#b.html", "a#b.html", "#"),
    ("what?.html", "what?.html", "?"),
    ("x#?.html", "x#?.html", "# and ?"),
]


@pytest.mark.parametrize("seed", range(10))
def test_links_out_of_public_and_unservable_names_are_check_errors(tmp_path: Path, seed: int) -> None:
    """What would make a deploy publish a secret, or fail half-way, fails `inv check` first: each
    path on its own file:line line, escaped so that a newline in a name cannot split it."""
    import random

    root = make_site(tmp_path, '[build]\n  publish = "public"\n')
    (root / ".env").write_text("NETLIFY_AUTH_TOKEN=nfp_secret\n")
    (root / "secrets").mkdir()
    (root / "public" / ".env").write_text("x")
    (root / "public" / "index.html").write_text("<p>hi</p>")
    (root / "public" / "alias.html").symlink_to("index.html")  # inside: fine
    rng = random.Random(seed)
    links = rng.sample(CHECK_LINKS, rng.randint(0, len(CHECK_LINKS)))
    names = rng.sample(CHECK_NAMES, rng.randint(0 if links else 1, len(CHECK_NAMES)))
    expected = []
    for link, target, why in links:
        (root / "public" / link).parent.mkdir(exist_ok=True)
        (root / "public" / link).symlink_to(target)
        expected.append(f"public/{link}:1: {why}: a deploy refuses it; replace the link with a real file, or remove it")
    for name, escaped, what in names:
        (root / "public" / name).write_text("x")
        expected.append(f"public/{escaped}:1: Netlify cannot serve a file name with {what}; rename it")
    found = messages(root)
    assert sorted(found) == sorted(expected)
    assert all("\n" not in line for line in found)
    result = subprocess.run(
        [sys.executable, "-m", "cnd_toolkit.netlify.check", str(root)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1 and f"{len(expected)} error(s)" in result.stderr
    assert len(result.stderr.splitlines()) == len(expected) + 1  # one line each, and the count


@pytest.mark.parametrize("seed", range(8))
def test_check_and_the_deploy_refuse_the_same_paths(tmp_path: Path, seed: int) -> None:
    """`inv check` passes exactly when the deploy's file walk does: the same walk, the same paths."""
    import random

    from cnd_toolkit.errors import ConfigError
    from cnd_toolkit.netlify import publish

    rng = random.Random(seed)
    root = make_site(tmp_path, '[build]\n  publish = "public"\n')
    (root / "secrets").mkdir()
    (root / "public" / "index.html").write_text("x")
    (root / "public" / ".env").write_text("x")
    pool = [("link", *item[:2]) for item in CHECK_LINKS] + [("name", item[0], "") for item in CHECK_NAMES]
    pool += [("link", "ok.html", "index.html"), ("name", "fine name.html", ""), ("name", "ünï.txt", "")]
    for kind, name, target in rng.sample(pool, rng.randint(1, 6)):
        (root / "public" / name).parent.mkdir(exist_ok=True)
        if kind == "link":
            (root / "public" / name).symlink_to(target)
        else:
            (root / "public" / name).write_text("x")
    errors = [p for p in check_project(root) if p.severity == "error"]
    try:
        publish.site_files(root, "https://api.example.com")
    except ConfigError as exc:
        refused = str(exc)
        assert errors, refused
        for problem in errors:
            assert repr(problem.origin.file.removeprefix("public/").encode().decode("unicode_escape")) in refused
    else:
        assert errors == []
