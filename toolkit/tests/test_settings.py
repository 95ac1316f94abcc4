"""cnd_toolkit.settings: the environment beats .env.NAME beats .env; bad values and bad lines are one message."""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from cnd_toolkit import settings as settings_mod
from cnd_toolkit.settings import BY_NAME, SETTINGS, SettingsError, load

TOKEN = "nfp_secret_do_not_print_0123456789"


def write(root: Path, name: str, text: str) -> None:
    (root / name).write_text(text, encoding="utf-8")


def test_defaults_without_files_or_environment(tmp_path: Path) -> None:
    settings = load(tmp_path, environ={})
    assert settings["PROXY_IMAGE"] == "caddy:2"
    assert settings.number("KEEP_RELEASES") == 3
    assert settings["NETLIFY_API_URL"] == "https://api.netlify.com/api/v1"
    assert all(settings.sources[s.name] == "default" for s in SETTINGS)


def test_the_environment_beats_the_named_file_which_beats_dot_env(tmp_path: Path) -> None:
    write(tmp_path, ".env", "IMAGE=ghcr.io/acme/base\nKEEP_RELEASES=5\nBACKEND_URL=https://dev.example.com\n")
    write(tmp_path, ".env.production", "# production\nexport IMAGE='ghcr.io/acme/prod'\nKEEP_RELEASES=7\n")
    settings = load(tmp_path, "production", environ={"KEEP_RELEASES": "9", "PATH": "/bin"})
    assert settings["IMAGE"] == "ghcr.io/acme/prod" and settings.sources["IMAGE"] == ".env.production:2"
    assert settings.number("KEEP_RELEASES") == 9 and settings.sources["KEEP_RELEASES"] == "environment"
    assert settings["BACKEND_URL"] == "https://dev.example.com" and settings.sources["BACKEND_URL"] == ".env:3"
    assert "PATH" not in settings.values  # only the tasks' own names are taken from the environment


def test_secrets_never_show(tmp_path: Path) -> None:
    write(tmp_path, ".env", f"NETLIFY_AUTH_TOKEN={TOKEN}\nREGISTRY_PASSWORD={TOKEN}\n")
    settings = load(tmp_path, environ={})
    assert settings["NETLIFY_AUTH_TOKEN"] == TOKEN
    shown = "\n".join(settings.describe()) + repr(settings) + str(settings)
    assert TOKEN not in shown
    assert "NETLIFY_AUTH_TOKEN = (set)  (.env:1)" in settings.describe()


def test_missing_settings_say_how_to_set_them(tmp_path: Path) -> None:
    write(tmp_path, ".env.staging", "IMAGE=ghcr.io/acme/svc\n")
    settings = load(tmp_path, "staging", environ={})
    assert settings.missing(["IMAGE", "NETLIFY_AUTH_TOKEN"]) == [
        "NETLIFY_AUTH_TOKEN is not set (Netlify personal access token): "
        "export it, or add NETLIFY_AUTH_TOKEN=... to .env.staging"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("KEEP_RELEASES=many\n", "KEEP_RELEASES='many' (.env:1) is not a whole number in 0..100"),
        ("KEEP_RELEASES=-1\n", "is not a whole number in 0..100"),
        ("PROXY_HTTP_PORT=70000\n", "PROXY_HTTP_PORT='70000' (.env:1) is not a whole number in 1..65535"),
        ("HEALTH_TIMEOUT=٣٠\n", "is not a whole number in 1..3600"),
        ("BACKEND_URL=api.example.com\n", "is not an http(s) URL"),
        ("NETLIFY_API_URL=ftp://x\n", "is not an http(s) URL"),
        ("IMAGE=GHCR.io/Acme\n", "is not an image reference"),
        ('IMAGE="ghcr.io/acme/x\n', ".env:1: cannot read this line"),
        ("x\nIMAGE ghcr.io/acme/x\n", ".env:2: cannot read this line"),
        ('BACKEND_URL="https://a.example\\n"\n', "contains a control character"),
        ("DEPLOY_TARGET=Swarm\n", "DEPLOY_TARGET='Swarm' (.env:1) is not one of host, swarm"),
        ("DEPLOY_TARGET=kubernetes\n", "is not one of host, swarm"),
        ("REPLICAS=0\n", "REPLICAS='0' (.env:1) is not a whole number in 1..100"),
    ],
)
def test_a_bad_line_or_value_is_one_message_naming_it(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, ".env", text)
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, environ={})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["Production", "../etc", "a b", "", "x" * 40])
def test_env_names_are_plain_and_their_file_must_exist(tmp_path: Path, name: str) -> None:
    if not name:
        load(tmp_path, name, environ={})  # no --env: fine without any file
        return
    with pytest.raises(SettingsError, match="--env"):
        load(tmp_path, name, environ={})


def test_a_named_environment_without_its_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"--env staging: \.env\.staging does not exist"):
        load(tmp_path, "staging", environ={})


def test_a_typo_in_a_file_is_pointed_out(tmp_path: Path) -> None:
    write(tmp_path, ".env", "NETLIFY_SITEID=abc\nMY_OWN_THING=1\n")
    warnings = load(tmp_path, environ={}).warnings
    assert warnings == (".env:1: NETLIFY_SITEID is not a setting; did you mean NETLIFY_SITE_ID?",)


def test_the_runtime_environment_is_the_servers_variables_and_app_env(tmp_path: Path) -> None:
    write(tmp_path, ".env", "APP_LOG_LEVEL=DEBUG\nGUNICORN_TIMEOUT=90\nDATABASE_URL=postgres://db\nOTHER=1\n")
    settings = load(tmp_path, environ={"APP_ENV": "DATABASE_URL", "WEB_CONCURRENCY": "3"})
    assert settings.runtime_environment() == {
        "APP_LOG_LEVEL": "DEBUG",
        "DATABASE_URL": "postgres://db",
        "GUNICORN_TIMEOUT": "90",
        "WEB_CONCURRENCY": "3",
    }


@pytest.mark.parametrize("seed", range(60))
def test_generated_env_files_load_or_fail_with_a_located_message(tmp_path: Path, seed: int) -> None:
    """Seeded files of valid lines, comments, blanks and hostile lines: every one loads, or names its line."""
    rng = random.Random(seed)
    pieces = [
        "KEEP_RELEASES=4",
        "# a comment",
        "",
        "export PROXY_IMAGE=caddy:2.8",
        "BACKEND_URL='https://api.example.com'",
        'NETLIFY_SITE_ID="a b c"',
        "APP_NAME=x # trailing comment",
        "=novalue",
        "NAME WITH SPACE=1",
        "'unterminated",
        "KEEP_RELEASES=12x",
        "\t",
        "IMAGE=ghcr.io/acme/svc:1.0",
        "ÜNICODE=1",
        "  ",
        "REPLICAS=" + "9" * rng.choice([3, 4301, 20_000]),  # int() refuses over 4,300 digits
        "KEEP_RELEASES=²",  # str.isdigit() says yes, int() says no
        "KEEP_RELEASES=0" * 3,
    ]
    lines = [rng.choice(pieces) for _ in range(rng.randint(1, 12))]
    write(tmp_path, ".env", "\n".join(lines) + "\n")
    try:
        settings = load(tmp_path, environ={})
    except SettingsError as exc:
        text = str(exc)
        assert "\n" not in text and len(text) < 400, text
        assert text.startswith(".env:") or "(.env:" in text, text
        line = int(text.split(".env:", 1)[1].split(":" if text.startswith(".env:") else ")", 1)[0])
        # The line named is the one at fault: blank lines before it do not move it.
        named = lines[line - 1]
        if text.startswith(".env:"):  # unreadable
            assert named in {"=novalue", "NAME WITH SPACE=1", "'unterminated", "ÜNICODE=1"}, (text, lines)
        else:
            assert named.split("=", 1)[0].removeprefix("export ") == text.split("=", 1)[0], (text, lines)
    else:
        for setting in SETTINGS:
            assert isinstance(settings[setting.name], str)


def test_the_project_supplies_image_and_backend_url_defaults(tmp_path: Path) -> None:
    """IMAGE defaults to the Copier answer, BACKEND_URL to netlify.toml's [build.environment], read
    through the one Netlify config model; the environment and the files still win over both."""

    from cnd_toolkit import project
    from cnd_toolkit.netlify import config
    from cnd_toolkit.settings import project_defaults

    root = tmp_path / "copy"
    root.mkdir()
    shutil.copy(project.ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copy(project.ROOT / "netlify.toml", root / "netlify.toml")
    shutil.copytree(project.ROOT / "public", root / "public")
    expected = config.load(root).build["environment"]["BACKEND_URL"]
    defaults = project_defaults(root)
    settings = load(root, environ={}, defaults=defaults)
    assert settings["IMAGE"] == project.load().registry_image
    assert settings.sources["IMAGE"] == "pyproject.toml [tool.cnd] image"
    assert settings["BACKEND_URL"] == expected
    assert settings.sources["BACKEND_URL"] == "netlify.toml [build.environment]"
    write(root, ".env", "BACKEND_URL=https://staging-api.example.com\nIMAGE=\n")
    settings = load(root, environ={"IMAGE": "registry.example.com/acme/svc"}, defaults=defaults)
    assert settings["BACKEND_URL"] == "https://staging-api.example.com" and settings.sources["BACKEND_URL"] == ".env:1"
    assert settings["IMAGE"] == "registry.example.com/acme/svc" and settings.sources["IMAGE"] == "environment"
    assert load(root, environ={}, defaults=defaults)["IMAGE"] == project.load().registry_image  # an empty line is unset
    (root / "netlify.toml").write_text("[build\n")  # broken: no default, and the error is inv check's to report
    assert "BACKEND_URL" not in project_defaults(root)


def test_the_readme_table_names_every_setting_with_its_default() -> None:
    from cnd_toolkit import project

    rows = {
        line.split("|")[1].strip(): line
        for line in (project.ROOT / "README.md").read_text().splitlines()
        if line.startswith("| `")
    }
    for setting in SETTINGS:
        row = rows.get(f"`{setting.name}`")
        assert row is not None, f"README's settings table misses {setting.name}"
        if setting.default:
            assert f"`{setting.default}`" in row, f"README gives no default `{setting.default}` for {setting.name}"


def test_every_task_but_relock_takes_env() -> None:
    """``--env NAME`` on every task that reads settings; a missing file is one line naming it."""
    from cnd_toolkit import tasks

    for name, task in tasks.ns.tasks.items():
        if name != "relock":
            assert "env" in task.help, f"inv {name} has no --env"


# -- an empty variable in the environment, and a bare NAME line, count as unset -----------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BACKEND_URL", "https://api.acme.dev"),
        ("IMAGE", "ghcr.io/acme/svc"),
        ("NETLIFY_SITE_ID", "site-123"),
        ("KEEP_RELEASES", "7"),
        ("NETLIFY_AUTH_TOKEN", TOKEN),
        ("APP_LOG_LEVEL", "DEBUG"),
    ],
)
@pytest.mark.parametrize("file_name", [".env", ".env.production"])
def test_an_empty_environment_variable_does_not_hide_the_files_value(
    tmp_path: Path, name: str, value: str, file_name: str
) -> None:
    """``BACKEND_URL= inv deploy``, as CI passes a secret that is not defined: the file's value is used,
    and a warning names the variable and where the value comes from, never the value."""
    write(tmp_path, ".env.production", "# production\n")
    write(tmp_path, file_name, f"# settings\n{name}={value}\n")
    settings = load(tmp_path, "production", environ={name: ""})
    assert settings[name] == value and settings.sources[name] == f"{file_name}:2"
    assert settings.warnings == (
        f"{name} is empty in the environment, which counts as unset; {name} comes from {file_name}:2 instead",
    )
    assert value not in "".join(settings.warnings)


def test_an_empty_environment_variable_with_nothing_behind_it_is_unset_without_a_warning(tmp_path: Path) -> None:
    settings = load(tmp_path, environ={"BACKEND_URL": "", "NETLIFY_AUTH_TOKEN": "", "KEEP_RELEASES": ""})
    assert settings["BACKEND_URL"] == "" and settings["NETLIFY_AUTH_TOKEN"] == ""
    assert settings.number("KEEP_RELEASES") == 3 and settings.sources["KEEP_RELEASES"] == "default"
    assert settings.warnings == (
        "KEEP_RELEASES is empty in the environment, which counts as unset; "
        "KEEP_RELEASES comes from its default instead",
    )
    assert settings.missing(["BACKEND_URL"]) != []


def test_a_bare_name_does_not_blank_an_earlier_value(tmp_path: Path) -> None:
    write(tmp_path, ".env", "BACKEND_URL=https://api.acme.dev\nIMAGE=ghcr.io/acme/svc\nIMAGE\nNETLIFY_SITE_ID\n")
    write(tmp_path, ".env.staging", "BACKEND_URL\nexport KEEP_RELEASES\n")
    settings = load(tmp_path, "staging", environ={})
    assert settings["BACKEND_URL"] == "https://api.acme.dev" and settings.sources["BACKEND_URL"] == ".env:1"
    assert settings["IMAGE"] == "ghcr.io/acme/svc" and settings.sources["IMAGE"] == ".env:2"
    assert settings.number("KEEP_RELEASES") == 3 and settings["NETLIFY_SITE_ID"] == ""
    assert settings.warnings == (
        ".env.staging:1: BACKEND_URL has no =, which counts as unset; BACKEND_URL comes from .env:1 instead",
        ".env.staging:2: KEEP_RELEASES has no =, which counts as unset; KEEP_RELEASES comes from its default instead",
        ".env:3: IMAGE has no =, which counts as unset; IMAGE comes from .env:2 instead",
        ".env:4: NETLIFY_SITE_ID has no =, which counts as unset; NETLIFY_SITE_ID stays unset",
    )


@pytest.mark.parametrize("seed", range(40))
def test_generated_layers_follow_the_precedence_with_empty_and_bare_as_unset(tmp_path: Path, seed: int) -> None:
    """Each source of each setting is absent, empty or bare (unset), ``NAME=`` (a value, empty), or a
    value: the first source with a value wins, an empty value falls back to the default, as before."""
    rng = random.Random(seed)
    values = {
        "KEEP_RELEASES": ("71", "52", "43"),
        "NETLIFY_SITE_ID": ("site-from-env", "site-from-named", "site-from-dotenv"),
        "APP_X": ("x-from-env", "x-from-named", "x-from-dotenv"),
    }
    environ: dict[str, str] = {}
    files: dict[str, list[str]] = {".env.production": [], ".env": []}
    expected: dict[str, tuple[str, str]] = {}
    for name, (in_env, in_named, in_dotenv) in values.items():
        env_kind = rng.choice(["absent", "empty", "value"])
        if env_kind != "absent":
            environ[name] = in_env if env_kind == "value" else ""
        layers = [("environment", in_env if env_kind == "value" else None)]  # None: unset
        for file_name, value in ((".env.production", in_named), (".env", in_dotenv)):
            lines = files[file_name]
            kind = rng.choice(["absent", "bare", "blank", "value", "value then bare"])
            if kind == "value then bare":  # the bare line leaves the value above it
                lines.append(f"{name}={value}")
                layers.append((f"{file_name}:{len(lines)}", value))
                lines.append(name)
                continue
            if kind != "absent":
                lines.append({"bare": name, "blank": f"{name}=", "value": f"{name}={value}"}[kind])
            layers.append((f"{file_name}:{len(lines)}", {"blank": "", "value": value}.get(kind)))
        source, value = next(((s, v) for s, v in layers if v is not None), ("default", ""))
        default = BY_NAME[name].default if name in BY_NAME else ""
        expected[name] = (source, value) if value or not default else ("default", default)
    for file_name, lines in files.items():
        write(tmp_path, file_name, "\n".join(lines) + "\n")
    settings = load(tmp_path, "production", environ=environ)
    for name, (source, value) in expected.items():
        assert (settings.sources.get(name, "default"), settings.values.get(name, "")) == (source, value), (
            name,
            environ,
            files,
        )
    assert all("\n" not in warning for warning in settings.warnings)
    assert not any(value in warning for row in values.values() for value in row for warning in settings.warnings)


# -- tokens, URLs and what a deploy cannot go to ------------------------------------------------


@pytest.mark.parametrize(
    "token",
    ["nfp_SECRET€x", "nfp_with space", "nfp_ÄÖÜ", "nfp_\u200bzero", "nfp_\u00a0nbsp", "\uff4e\uff46\uff50_x", " nfp_x"],
)
@pytest.mark.parametrize("where", ["environment", ".env"])
def test_a_token_that_no_http_header_can_carry_is_refused_without_showing_it(
    tmp_path: Path, token: str, where: str
) -> None:
    """A non-ASCII token crashed the deploy with a UnicodeEncodeError naming one of its characters."""
    environ = {"NETLIFY_AUTH_TOKEN": token} if where == "environment" else {}
    if where == ".env":
        write(tmp_path, ".env", f"NETLIFY_AUTH_TOKEN='{token}'\n")
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, environ=environ)
    message = str(caught.value)
    assert message.startswith(f"NETLIFY_AUTH_TOKEN ({'environment' if where == 'environment' else '.env:1'})")
    assert "printable ASCII without spaces" in message and "\n" not in message
    assert "nfp_" not in message and not any(c in message for c in token if not c.isascii())


@pytest.mark.parametrize("token", [TOKEN, "nfp_AbC-123_x.y~z", "!#$%&()*+,-./:;<=>?@[]^_`{|}~"])
def test_printable_ascii_tokens_load(tmp_path: Path, token: str) -> None:
    assert load(tmp_path, environ={"NETLIFY_AUTH_TOKEN": token})["NETLIFY_AUTH_TOKEN"] == token


@pytest.mark.parametrize(
    "url",
    [
        " http://127.0.0.1:18471",
        "https://api.acme.dev ",
        "https://api .acme.dev",
        "https://api.acme.dev/\u00a0",
        "\u2003https://api.acme.dev",
        "https://api.acme.dev\u3000",
        "https://api.acme.dev\u2028",
        "\thttps://api.acme.dev",
        "https://api.acme.dev\n",
    ],
)
def test_whitespace_anywhere_in_backend_url_is_refused(tmp_path: Path, url: str) -> None:
    quoted = url.replace("\n", "\\n").replace("\t", "\\t")  # python-dotenv's escapes in double quotes
    for environ, text in (({"BACKEND_URL": url}, ""), ({}, f'BACKEND_URL="{quoted}"\n')):
        write(tmp_path, ".env", text)
        with pytest.raises(SettingsError) as caught:
            load(tmp_path, environ=environ)
        message = str(caught.value)
        assert message.startswith("BACKEND_URL") and "\n" not in message
        assert "whitespace" in message or "control character" in message


@pytest.mark.parametrize("port", ["0", "00", "99999", "65536", "-1", "abc", "+5", "٣"])
def test_every_bad_port_in_a_url_is_the_same_message(tmp_path: Path, port: str) -> None:
    url = f"https://api.acme.dev:{port}"
    with pytest.raises(SettingsError) as caught:
        load(tmp_path, environ={"BACKEND_URL": url})
    assert str(caught.value) == (
        f"BACKEND_URL={url!r} (environment) has a port that is not a number in 1..65535; fix the port, or leave it out"
    )


@pytest.mark.parametrize("port", ["1", "443", "8443", "65535"])
def test_good_ports_load(tmp_path: Path, port: str) -> None:
    assert load(tmp_path, environ={"BACKEND_URL": f"https://api.acme.dev:{port}"}).values["BACKEND_URL"]


RESERVED = [
    "https://api.example.com",
    "https://example.com",
    "https://example.org",
    "https://a.b.example.net",
    "https://API.EXAMPLE.COM",
    "https://api.test",
    "https://foo.invalid",
    "https://shop.example",
    "https://api.example.com:8443",
]
REAL = [
    "https://api.acme.dev",
    "https://example.com.au",
    "https://myexample.com",
    "https://example.co",
    "https://testing.io",
    "http://127.0.0.1:8000",
]


@pytest.mark.parametrize("url", RESERVED)
def test_a_reserved_example_host_loads_but_is_no_deploy_target(tmp_path: Path, url: str) -> None:
    """`inv dev`, `inv edge` and `inv check` run with netlify.toml's placeholder; a deploy may not."""
    settings = load(tmp_path, environ={"BACKEND_URL": url})
    problems = settings.deploy_problems(["BACKEND_URL", "IMAGE"])
    assert len(problems) == 1 and "\n" not in problems[0]
    assert problems[0].startswith(f"BACKEND_URL={url!r} (environment) is a reserved example host")
    assert "set BACKEND_URL" in problems[0]
    assert settings.deploy_problems(["IMAGE"]) == []  # only the names the deploy needs


@pytest.mark.parametrize("url", REAL)
def test_real_hosts_are_deploy_targets(tmp_path: Path, url: str) -> None:
    assert load(tmp_path, environ={"BACKEND_URL": url}).deploy_problems() == []


def test_a_deploy_that_falls_back_to_the_netlify_toml_placeholder_is_refused(tmp_path: Path) -> None:
    from cnd_toolkit import project
    from cnd_toolkit.settings import project_defaults

    (tmp_path / "public").mkdir()
    shutil.copy(project.ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    write(
        tmp_path,
        "netlify.toml",
        '[build]\npublish = "public"\n\n[build.environment]\nBACKEND_URL = "https://api.example.com"\n',
    )
    settings = load(tmp_path, environ={"BACKEND_URL": ""}, defaults=project_defaults(tmp_path))
    assert settings.deploy_problems(["BACKEND_URL"]) == [
        "BACKEND_URL='https://api.example.com' (netlify.toml [build.environment]) is a reserved example host, "
        "not your API: set BACKEND_URL to the API's public origin (export it, or add BACKEND_URL=https://... to .env)"
    ]


@pytest.mark.parametrize(
    ("image", "refused"),
    [
        ("ghcr.io/acme/review-one:v1", True),
        ("localhost:5000/acme/x:latest", True),
        ("acme/x:1.0", True),
        ("x:1", True),
        ("ghcr.io/acme/x", False),
        ("localhost:5000/acme/x", False),
        ("127.0.0.1:5000/x", False),
        ("registry.example.com/acme/svc", False),
    ],
)
def test_a_deploys_image_is_a_registry_path_without_tag(tmp_path: Path, image: str, refused: bool) -> None:
    """IMAGE=.../review-one:v1 pushed the invalid reference ...:v1:4a0029d86de4."""
    settings = load(tmp_path, environ={"IMAGE": image})
    problems = settings.deploy_problems(["IMAGE"])
    assert bool(problems) is refused
    if refused:
        assert problems == [
            f"IMAGE={image!r} (environment) has a tag or digest: give the registry path alone "
            "(e.g. ghcr.io/acme/service); each deploy tags the image with its revision"
        ]


def test_a_digest_is_no_deploy_image_either() -> None:
    from cnd_toolkit.settings import Settings

    image = "ghcr.io/acme/x@sha256:" + "0" * 64
    settings = Settings(values={"IMAGE": image}, sources={"IMAGE": "environment"})
    assert settings.deploy_problems()[0].startswith(f"IMAGE={image!r} (environment) has a tag or digest")


# -- .gitignore ---------------------------------------------------------------------------------


def test_gitignore_keeps_every_env_file_out_but_the_example(tmp_path: Path) -> None:
    import subprocess

    from cnd_toolkit import project

    from tests.conftest import needed_tool

    git = needed_tool("git", "to read .gitignore as git does")
    subprocess.run([git, "init", "-q", str(tmp_path)], check=True)
    shutil.copy(project.ROOT / ".gitignore", tmp_path / ".gitignore")

    def ignored(path: str) -> bool:
        done = subprocess.run([git, "check-ignore", "-q", "--no-index", path], cwd=tmp_path)
        assert done.returncode in (0, 1), done
        return done.returncode == 0

    for path in [".env", ".env.production", ".env.staging", ".env.prod.bak", "sub/.env.staging"]:
        assert ignored(path), f".gitignore does not ignore {path}"
    # The example and the local target hold no secrets, and are committed (a deploy refuses a
    # secret set in a file git tracks: test_deploy).
    for path in [".env.example", ".env.local", "env.py", "cnd_toolkit/settings.py", "environment.md"]:
        assert not ignored(path), f".gitignore ignores {path}"


@pytest.mark.parametrize("name", ["review proxy", "-x", "a/b", "x" * 61, "caddy:2", "é"])
def test_a_proxy_name_that_cannot_name_a_container_says_so(tmp_path: Path, name: str) -> None:
    with pytest.raises(SettingsError, match=r"PROXY_NAME=.* is not a container name"):
        load(tmp_path, environ={"PROXY_NAME": name})


@pytest.mark.parametrize("name", ["cnd-proxy", "edge.1", "Proxy_2"])
def test_container_names_are_accepted(tmp_path: Path, name: str) -> None:
    assert load(tmp_path, environ={"PROXY_NAME": name})["PROXY_NAME"] == name


@pytest.mark.parametrize("url", ["HTTP://127.0.0.1:8080", "Https://api.acme.dev", "hTTps://api.acme.dev"])
def test_a_scheme_in_capitals_is_refused(tmp_path: Path, url: str) -> None:
    """Netlify's _redirects (and the local edge) take only http:// and https:// as written."""
    with pytest.raises(SettingsError, match=r"scheme in capitals"):
        load(tmp_path, environ={"BACKEND_URL": url})


def test_a_task_option_overrides_a_setting_and_is_checked_like_one(tmp_path: Path) -> None:
    write(tmp_path, ".env", "DEPLOY_TARGET=host\n")
    loaded = load(tmp_path, environ={})
    swarm = loaded.override("DEPLOY_TARGET", "swarm", "--target")
    assert (swarm["DEPLOY_TARGET"], swarm.sources["DEPLOY_TARGET"]) == ("swarm", "--target")
    assert loaded["DEPLOY_TARGET"] == "host"  # the loaded settings are left as they were
    with pytest.raises(SettingsError, match=r"DEPLOY_TARGET='nomad' \(--target\) is not one of host, swarm"):
        loaded.override("DEPLOY_TARGET", "nomad", "--target")


@pytest.mark.parametrize("seed", range(4))
def test_app_env_cannot_pass_a_variable_the_image_sets(tmp_path: Path, seed: int) -> None:
    """PORT, METRICS_PORT and the rest of the image's own (any case, beside names it may pass):
    refused in one line by the deploy's preflight and by every path to a container."""
    rng = random.Random(seed)
    owned = rng.choice([*sorted(settings_mod.IMAGE_VARIABLES), "PYTHONPATH", "PYTHONSTARTUP", "LD_PRELOAD", "port"])
    listed = [*rng.sample(["DATABASE_URL", "FEATURE_FLAGS", "SENTRY_ENV"], 2), owned]
    rng.shuffle(listed)
    environ = {name: "x" for name in listed} | {"APP_ENV": ",".join(listed)}
    settings = load(tmp_path, environ=environ)
    [problem] = settings.app_env_problems()
    assert f"lists {owned}, which the image sets for itself" in problem, problem
    with pytest.raises(SettingsError, match=f"lists {owned}, "):
        settings.runtime_environment()
    fine = load(tmp_path, environ={**environ, "APP_ENV": ",".join(n for n in listed if n != owned)})
    assert set(fine.runtime_environment()) >= set(listed) - {owned}
    # GUNICORN_CMD_ARGS looks like a server variable, and would beat gunicorn.conf.py (--bind): never passed.
    shell = load(tmp_path, environ={"GUNICORN_CMD_ARGS": "--bind 0.0.0.0:9", "GUNICORN_TIMEOUT": "90"})
    assert shell.runtime_environment() == {"GUNICORN_TIMEOUT": "90"}


@pytest.mark.parametrize("name", [".env", ".env.production"])
@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda path: path.mkdir(), "is a directory"),
        (lambda path: os.mkfifo(path), "is not a regular file"),  # reading it would wait forever
        (lambda path: path.symlink_to("/dev/zero"), "is not a regular file"),
        (lambda path: path.symlink_to(path.with_name("gone")), "is a link to"),
        (lambda path: os.truncate(path.open("w").name, 2 * settings_mod.MAX_ENV_FILE), "is 524,288 bytes"),
        (lambda path: path.symlink_to("/proc/self/mem"), "cannot be read"),  # EIO, even as root
    ],
    ids=["directory", "fifo", "device", "dangling-link", "huge", "unreadable"],
)
def test_a_settings_file_that_is_not_a_small_regular_file_is_one_line(
    tmp_path: Path, name: str, make: Any, says: str
) -> None:
    make(tmp_path / name)
    with pytest.raises(SettingsError, match=f"^{re.escape(name)} {re.escape(says)}"):
        load(tmp_path, env_name="production" if name != ".env" else "", environ={})


@pytest.mark.parametrize("seed", range(30))
def test_warnings_stop_at_a_readable_number_and_say_how_many_more(tmp_path: Path, seed: int) -> None:
    """A .env of bare names and misspelt settings, few or thousands: every warning while they are
    few; past MAX_WARNINGS, the first ones in order, then one line with the number not shown."""
    rng = random.Random(seed)
    cap = settings_mod.MAX_WARNINGS
    n_bare = rng.choice([0, rng.randint(1, cap), rng.randint(cap, 3 * cap), rng.randint(1000, 5000)])
    spelt = [s.name for s in SETTINGS if not settings_mod.is_server_variable(s.name)]
    typos = [name[:2] + name[1] + name[2:] for name in rng.sample(spelt, rng.randint(0, 8))]  # IMMAGE
    lines = [f"MY_NAME_{i}" for i in range(n_bare)] + [f"{typo}=1" for typo in typos] + ["KEEP_RELEASES=4"]
    rng.shuffle(lines)
    write(tmp_path, ".env", "\n".join(lines) + "\n")
    at = {line.split("=")[0]: number for number, line in enumerate(lines, start=1)}
    expected = [f".env:{at[f'MY_NAME_{i}']}: MY_NAME_{i} has no=" for i in range(n_bare)]
    expected.sort(key=lambda warning: int(warning.split(":")[1]))
    expected += sorted((f".env:{at[typo]}: {typo} is not a setting" for typo in typos), key=lambda w: at[w.split()[1]])
    warnings = load(tmp_path, environ={}).warnings
    shown = [w.replace(" has no =", " has no=") for w in warnings]
    if len(expected) <= cap:
        assert len(shown) == len(expected) and all(w.startswith(e) for w, e in zip(shown, expected, strict=True))
        return
    assert len(shown) == cap + 1 and all(w.startswith(e) for w, e in zip(shown[:cap], expected[:cap], strict=True))
    more = re.fullmatch(r"([\d,]+) more warnings are not shown \(and no more names were looked at\); fix .*", shown[-1])
    assert more, shown[-1]
    if n_bare > cap:  # no misspelling is looked for: the number is that of the bare names left
        assert int(more.group(1).replace(",", "")) == n_bare - cap
