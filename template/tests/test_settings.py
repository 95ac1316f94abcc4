"""ops.settings: the environment beats .env.NAME beats .env; bad values and bad lines are one message."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ops.settings import SETTINGS, SettingsError, load

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


@pytest.mark.parametrize("seed", range(20))
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
    ]
    lines = [rng.choice(pieces) for _ in range(rng.randint(1, 8))]
    write(tmp_path, ".env", "\n".join(lines) + "\n")
    try:
        settings = load(tmp_path, environ={})
    except SettingsError as exc:
        text = str(exc)
        assert "\n" not in text
        assert text.startswith(".env:") or "(.env:" in text, text
        line = int(text.split(".env:", 1)[1].split(":" if text.startswith(".env:") else ")", 1)[0])
        assert 1 <= line <= len(lines)
    else:
        for setting in SETTINGS:
            assert isinstance(settings[setting.name], str)


def test_the_project_supplies_image_and_backend_url_defaults(tmp_path: Path) -> None:
    """IMAGE defaults to the Copier answer, BACKEND_URL to netlify.toml's [build.environment], read
    through the one Netlify config model; the environment and the files still win over both."""
    import shutil

    from ops import project
    from ops.netlify import config
    from ops.settings import project_defaults

    root = tmp_path / "copy"
    root.mkdir()
    shutil.copy(project.ROOT / "netlify.toml", root / "netlify.toml")
    shutil.copytree(project.ROOT / "public", root / "public")
    expected = config.load(root).build["environment"]["BACKEND_URL"]
    defaults = project_defaults(root)
    settings = load(root, environ={}, defaults=defaults)
    assert settings["IMAGE"] == project.DEFAULT_IMAGE and settings.sources["IMAGE"] == "ops/project.py"
    assert settings["BACKEND_URL"] == expected
    assert settings.sources["BACKEND_URL"] == "netlify.toml [build.environment]"
    write(root, ".env", "BACKEND_URL=https://staging-api.example.com\nIMAGE=\n")
    settings = load(root, environ={"IMAGE": "registry.example.com/acme/svc"}, defaults=defaults)
    assert settings["BACKEND_URL"] == "https://staging-api.example.com" and settings.sources["BACKEND_URL"] == ".env:1"
    assert settings["IMAGE"] == "registry.example.com/acme/svc" and settings.sources["IMAGE"] == "environment"
    assert load(root, environ={}, defaults=defaults)["IMAGE"] == project.DEFAULT_IMAGE  # an empty line is unset
    (root / "netlify.toml").write_text("[build\n")  # broken: no default, and the error is inv check's to report
    assert "BACKEND_URL" not in project_defaults(root)


def test_the_readme_table_names_every_setting_with_its_default() -> None:
    from ops import project

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
    import tasks

    for name, task in tasks.ns.tasks.items():
        if name != "relock":
            assert "env" in task.help, f"inv {name} has no --env"
