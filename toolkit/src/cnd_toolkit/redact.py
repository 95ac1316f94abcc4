"""Secrets out of every message: each one masked wherever it shows, in whatever form it shows.

A registry or an engine that echoes what it was sent (the ``X-Registry-Auth`` header, a login's
JSON body, a Basic authorization) hands a secret back escaped or encoded, and a message may quote
it with ``repr``. So a secret is looked for as it is, JSON-escaped, as Python's ``repr`` and
``ascii`` write it, percent-encoded, HTML-escaped, and inside base64 (standard and URL-safe, at
each of the three alignments it can have inside a longer encoded text, and of its JSON form,
which is what the Docker SDK encodes into ``X-Registry-Auth``).

The secrets settings load are remembered for the life of the process (:func:`remember`), as CI
runners mask a secret in every log line once it is known: every :class:`cnd_toolkit.errors.OpsError`
passes its message through :func:`scrub`, and so does everything a task writes to the terminal
(its consoles write to a :class:`ScrubbingStream`). Pure standard library: ``cnd_toolkit.errors`` imports it.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

# A shorter secret is not looked for: masking every "abc" would garble messages, and settings
# ask more of real secrets (a token is printable ASCII, METRICS_TOKEN 32+ characters).
MIN_LENGTH = 4
# The shortest run of base64 characters taken for a secret inside a longer encoded text.
MIN_BASE64 = 8

_known: dict[str, str] = {}  # secret -> its mask


def mask(name: str) -> str:
    """What a secret named ``name`` (its setting) shows as: ``[REGISTRY_PASSWORD]``."""
    return f"[{name}]"


def remember(name: str, value: str) -> None:
    """Mask ``value`` as the setting ``name`` in every later :func:`scrub`, for the rest of the process."""
    if len(value) >= MIN_LENGTH:
        _known[value] = mask(name)


def _base64_fragments(data: bytes) -> set[str]:
    """The base64 characters that depend on ``data`` alone, wherever it sits in a longer text.

    Base64 turns 3 bytes into 4 characters, so ``data`` at offset 0, 1 or 2 (mod 3) of the encoded
    text gives three different encodings; in each, the characters whose 6 bits all come from
    ``data`` are the same whatever surrounds it.
    """
    found = set()
    for offset in range(3):
        padded = b"\0" * offset + data
        first = -(-8 * offset // 6)  # the first character whose bits start inside data
        last = 8 * (offset + len(data)) // 6  # past the last character whose bits end inside data
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            fragment = encode(padded).decode("ascii")[first:last]
            if len(fragment) >= MIN_BASE64:
                found.add(fragment)
    return found


def forms(secret: str) -> set[str]:
    """Every text a message could carry ``secret`` as (see the module's docstring)."""
    if len(secret) < MIN_LENGTH:
        return set()
    texts = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
        repr(secret + "'\"")[1:-4],  # inside a repr that had to escape single quotes
        ascii(secret)[1:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret),
        urllib.parse.quote_plus(secret),
        html.escape(secret),
        html.escape(secret, quote=False),
    }
    encoded: set[str] = set()
    for text in (secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]):
        encoded |= _base64_fragments(text.encode("utf-8"))
    return {text for text in texts | encoded if len(text) >= MIN_LENGTH}


@functools.lru_cache(maxsize=64)
def _pattern(secrets: tuple[tuple[str, str], ...]) -> tuple[re.Pattern[str], dict[str, str]] | None:
    masks: dict[str, str] = {}
    for secret, shown in secrets:
        for text in forms(secret):
            masks.setdefault(text.lower(), shown)
    if not masks:
        return None
    # Longest first: a secret's escaped form is masked whole, not around its raw part. In any case:
    # a server may echo a token lowercased or uppercased (a base64 fragment matched in another case
    # is masked too, which costs nothing).
    alternatives = sorted(masks, key=lambda text: (-len(text), text))
    return re.compile("|".join(re.escape(text) for text in alternatives), re.IGNORECASE), masks


def scrub(text: str, secrets: Mapping[str, str] | None = None) -> str:
    """``text`` with every remembered secret, and each of ``secrets`` (``name -> value``), masked."""
    if not text:
        return text
    wanted = dict(_known)
    for name, value in (secrets or {}).items():
        if len(value) >= MIN_LENGTH:
            wanted[value] = mask(name)
    if not wanted:
        return text
    found = _pattern(tuple(sorted(wanted.items())))
    if found is None:
        return text
    pattern, masks = found
    fallback = next(iter(masks.values()))  # a match whose lowercase is not a key (Unicode's special cases)
    return pattern.sub(lambda match: masks.get(match.group(0).lower(), fallback), text)


class ScrubbingStream:
    """A text stream that scrubs each write before passing it to ``target()`` (looked up at each
    write, so ``lambda: sys.stderr`` follows whatever ``sys.stderr`` is then, a test's capture too).
    Everything else (``isatty``, ``encoding``, ``flush``) is the target's.

    A rich progress display swaps ``sys.stderr`` for a proxy that prints through the console,
    which would print through this stream again: the file behind such a proxy
    (``rich_proxied_file``) is the target then, as rich itself does for its own consoles."""

    def __init__(self, target: Callable[[], TextIO]) -> None:
        self._target = target

    def _stream(self) -> TextIO:
        stream = self._target()
        proxied: TextIO = getattr(stream, "rich_proxied_file", stream)
        return proxied

    def write(self, text: str) -> int:
        self._stream().write(scrub(text))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        if name == "rich_proxied_file":  # this stream is the end of the line: it must not be skipped
            raise AttributeError(name)
        return getattr(self._stream(), name)


def remembered() -> list[str]:
    """The secrets :func:`remember` was given."""
    return list(_known)


def forget() -> None:
    """Remember no secret any more (each test starts afresh; a task's process never needs this)."""
    _known.clear()
