"""BACKEND_URL as a class of hostile input: seeded, generated values through every writer and
checker of it, each held to what an independent reader makes of the result.

The value is read in three places: the Netlify build step that writes the API's proxy rule
(``cnd_toolkit.netlify.redirects``), ``inv check`` on netlify.toml's ``[context.*.environment]``,
and the backend-ready build plugin (Node's ``URL``). For every generated value:

- the build step accepts it or refuses it with its own error, never anything else;
- what it accepts is printable ASCII (no whitespace, control, or letter a parser folds), is
  what ``urlsplit`` reads as an https origin and nothing more, and is the value as given (a
  trailing slash and the scheme's case aside): the value written is the value checked;
- Netlify's own parser (@netlify/redirect-parser) reads the file it writes as one rule, from
  ``/api/*`` to that origin;
- ``inv check`` finds a problem in netlify.toml exactly when the build step would refuse it;
- the plugin refuses every value with whitespace, a control or a non-ASCII character, and checks
  the same host as the one written for every value the build step accepts.

``BACKEND_URL_SEED`` and ``BACKEND_URL_COUNT`` change the run.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import tomli_w

from tests.helpers import unavailable
from tools.generated import REPO

NODE_MODULES = REPO / ".cache/netlify-tools/node_modules"
SCRIPT = Path(__file__).with_name("backend_url.mjs")
SEED = int(os.environ.get("BACKEND_URL_SEED", "20261207"))
COUNT = int(os.environ.get("BACKEND_URL_COUNT", "3000"))
# Characters a hostile value slips in: every C0 and C1 control, Unicode spaces and line breaks,
# and the URL delimiters that move what a parser takes for the host.
HOSTILE = [chr(c) for c in range(0x21)] + [chr(c) for c in range(0x7F, 0xA1)]
HOSTILE += ["\u1680", "\u2000", "\u200b", "\u2028", "\u2029", "\u3000", "\ufeff", "\u00e9", "\u0131"]
# Letters URL parsers or lower() fold into ASCII: the Kelvin and Angstrom signs, dotted I, long s,
# fullwidth and mathematical letters, a Roman numeral, a ligature.
HOSTILE += ["\u212a", "\u212b", "\u0130", "\u017f", "\uff41", "\U0001d41a", "\u2160", "\ufb01", "\u00df"]
HOSTILE += [*"@#?/\\:[]%.-_", "%0a", "%00", "//", "\r\n"]
LABELS = ["api", "acme", "x1", "a-b", "svc", "www", "good", "evil", "xn--bcher-kva", "0", "1-2", "xn--a", "xn--xn--a"]
LABELS += ["[v1.a]", "[::1]", "[2001:db8::1]"]


def unsafe(text: str) -> bool:
    """Anything but printable ASCII: whitespace, controls, and letters a parser may fold."""
    return any(not 0x21 <= ord(c) <= 0x7E for c in text)


def generate(rng: random.Random) -> str:
    scheme = rng.choice(["https"] * 6 + ["HTTPS", "http", "ftp", "javascript", ""])
    host = ".".join(rng.choice(LABELS) for _ in range(rng.randint(1, 3))) + rng.choice([".com", ".dev", ".io", ""])
    value = f"{scheme}://{host}" if scheme else host
    value += rng.choice([""] * 6 + [":443", ":8443", ":0", ":65536", ":x", ":", ":08", ":00443"])
    value += rng.choice([""] * 6 + ["/", "/", "/api", "?q=1", "#f", "?", "#", "//"])
    for _ in range(rng.choice([0, 0, 0, 0, 1, 1, 2, 3])):
        at = rng.randint(0, len(value))
        value = value[:at] + rng.choice(HOSTILE) + value[at:]
    return value


@pytest.fixture(scope="module")
def cases() -> list[str]:
    rng = random.Random(SEED)
    known = ["https://evil.com\n.good.com", "\x01https://api.acme.dev", "https://api.acme.dev\t", "https://a.dev#"]
    return known + [generate(rng) for _ in range(COUNT)]


def build_step(raw: str) -> str | None:
    """The origin the build step writes for ``raw``, or None if it refuses it."""
    from cnd_toolkit.netlify import redirects

    try:
        return redirects.check_backend_url(raw)
    except redirects.BackendUrlError:
        return None


def test_the_value_written_is_the_value_checked_and_netlify_reads_it_so(cases: list[str]) -> None:
    from cnd_toolkit.netlify import redirects

    accepted = 0
    written: list[tuple[str, str]] = []
    for raw in cases:
        origin = build_step(raw)
        if origin is None:
            continue
        accepted += 1
        assert not unsafe(raw), repr(raw)
        parts = urlsplit(origin)
        assert (parts.scheme, parts.path, parts.query, parts.fragment) == ("https", "", "", ""), repr(raw)
        assert origin == f"https://{parts.netloc}" and origin.lower() == raw.lower().removesuffix("/"), repr(raw)
        text = redirects.render("", raw if raw == origin else origin)
        assert text.splitlines()[1] == redirects.api_rule(origin)
        written.append((origin, text))
    assert accepted >= COUNT // 20, f"only {accepted} of {len(cases)} generated values were valid: a weak generator"
    results = node([{"raw": origin, "redirects": base64.b64encode(text.encode()).decode()} for origin, text in written])
    for (origin, _), result in zip(written, results, strict=True):
        parsed = result["redirects"]
        assert parsed["errors"] == [], (origin, parsed)
        [rule] = parsed["rules"]
        assert (rule["from"], rule["to"], rule["status"], rule["force"]) == (
            "/api/*",
            f"{origin}/api/:splat",
            200,
            True,
        ), (origin, rule)


def test_the_plugin_refuses_what_the_build_step_refuses_for_its_characters_and_checks_the_host_written(
    cases: list[str],
) -> None:
    # No environment variable holds a NUL (the OS ends the value there), so none reaches the plugin.
    values = [raw for raw in cases if "\x00" not in raw]
    results = node([{"raw": raw, "redirects": None} for raw in values])
    for raw, result in zip(values, results, strict=True):
        plugin = result["plugin"]
        assert "crashed" not in plugin, (raw, plugin)
        if unsafe(raw) and raw:
            assert "refused" in plugin, (raw, plugin)
        origin = build_step(raw)
        if origin is not None:
            assert "checks" in plugin, (raw, plugin)
            checked = urlsplit(plugin["checks"])
            # The host as written, read by hand: urlsplit's hostname is lower(), which folds letters.
            netloc = origin.removeprefix("https://")
            host, _, port = netloc.partition(":")
            # The port as text: :08 is port 8 to a parser, and not the text written.
            said = "" if port in {"", "443"} else port
            assert host.isascii() and (checked.hostname, str(checked.port or "")) == (host.lower(), said), (raw, plugin)


def test_inv_check_finds_a_problem_exactly_where_the_build_step_would_refuse(cases: list[str], tmp_path: Path) -> None:
    from cnd_toolkit.netlify.check import check_backend_urls
    from cnd_toolkit.netlify.config import load

    (tmp_path / "public").mkdir()
    for raw in cases[:: max(1, len(cases) // 600)]:
        if "\x00" in raw:  # TOML cannot hold NUL, even escaped as \u0000: tomli-w refuses it too
            continue
        site = {"build": {"publish": "public"}, "context": {"deploy-preview": {"environment": {"BACKEND_URL": raw}}}}
        (tmp_path / "netlify.toml").write_text(tomli_w.dumps(site))
        problems = check_backend_urls(load(tmp_path))
        assert bool(problems) == (build_step(raw) is None), (raw, problems)


def node(batch: list[dict[str, str | None]]) -> list[dict[str, object]]:
    plugin = REPO / "template/netlify/plugins/backend-ready/index.js"
    if shutil.which("node") is None or not (NODE_MODULES / "@netlify/redirect-parser").is_dir():
        unavailable("node and @netlify/redirect-parser are needed (.ci/run installs them)")
    done = subprocess.run(
        ["node", str(SCRIPT), str(NODE_MODULES), str(plugin)],
        input=json.dumps(batch),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results: list[dict[str, object]] = json.loads(done.stdout)
    return results


def test_the_settings_refuse_what_the_build_step_refuses(cases: list[str], tmp_path: Path) -> None:
    """BACKEND_URL from the environment or .env: `inv check` and every task load it through the
    settings, which must refuse each value the build step would refuse (a deploy writes it); plain
    http is taken only to a loopback port, for a backend on this machine."""
    from cnd_toolkit.settings import SettingsError, load

    loopback = re.compile(r"http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?/?")
    for raw in cases:
        if not raw or "\x00" in raw:  # empty is unset; no environment variable holds a NUL
            continue
        try:
            load(tmp_path, environ={"BACKEND_URL": raw})
            refused = False
        except SettingsError:
            refused = True
        if not loopback.fullmatch(raw) and build_step(raw) is None:  # stricter may be (HTTPS:// is refused)
            assert refused, raw
