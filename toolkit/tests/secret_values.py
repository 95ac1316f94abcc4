"""Seeded secret values that stress every escaping a message or an echo could apply: quotes,
``%`` and ``\\``, unicode, base64-looking runs, URL punctuation. Each kind is what its setting
accepts (a token is printable ASCII without spaces; a password anything but control characters;
the metrics token 32+ characters; the webhook an https URL whose path is the key).

And the judge of whether a secret can still be read in a text (:func:`leaks`), which decodes
what it finds on its own: it shares nothing with cnd_toolkit.redact, which it judges."""

from __future__ import annotations

import base64
import json
import random
import re
import string
import urllib.parse

QUOTES = "'\"`"
ESCAPES = "%\\$&=+/?#@:;,{}[]<>!*"
UNICODE = "éüßøñ中文😀Ωж"
BASE64 = string.ascii_letters + string.digits + "+/="
PLAIN = string.ascii_letters + string.digits


def _mixed(rng: random.Random, length: int, pools: list[str]) -> str:
    """``length`` characters with at least one from each pool, the rest from all of them."""
    chars = [rng.choice(pool) for pool in pools]
    every = "".join(pools)
    chars += [rng.choice(every) for _ in range(max(0, length - len(chars)))]
    rng.shuffle(chars)
    return "".join(chars)


def password(rng: random.Random) -> str:
    """A registry password: quotes, ``%``, unicode, a base64-looking run, maybe a space inside."""
    body = _mixed(rng, rng.randint(12, 28), [PLAIN, QUOTES, "%", UNICODE, ESCAPES])
    run = "".join(rng.choice(BASE64) for _ in range(rng.randint(8, 16)))
    middle = " " if rng.random() < 0.3 else ""
    return f"{body[:6]}{middle}{run}{body[6:]}"


def token(rng: random.Random, low: int = 24, high: int = 48, prefix: str = "") -> str:
    """A token: printable ASCII without spaces, with quotes, ``%``, ``\\`` and base64 characters."""
    printable = "".join(chr(c) for c in range(33, 127))
    return prefix + _mixed(rng, rng.randint(low, high), [PLAIN, QUOTES, "%\\", "+/=", printable])


def username(rng: random.Random) -> str:
    return "ci-" + "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(10))


def webhook_url(rng: random.Random) -> str:
    key = "".join(rng.choice(PLAIN + "-_") for _ in range(rng.randint(24, 40)))
    return f"https://hooks.chat.acme.dev/services/T0{rng.randint(1000, 9999)}/{key}"


def deploy_secrets(seed: int) -> dict[str, str]:
    """A value for each of the deploy's secrets and its registry user name, from ``seed``."""
    rng = random.Random(seed)
    return {
        "NETLIFY_AUTH_TOKEN": token(rng, prefix="nfp_"),
        "REGISTRY_PASSWORD": password(rng),
        "REGISTRY_USERNAME": username(rng),
        "METRICS_TOKEN": token(rng, low=32, high=64),
        "ALERT_WEBHOOK_URL": webhook_url(rng),
    }


def leaks(text: str, secret: str) -> list[str]:
    """How ``secret`` can still be read in ``text``: as it is, JSON-, ``repr``- or percent-escaped,
    or decoded from a run of base64 in it (both alphabets, each of the four starting points)."""
    found = []
    readable = {
        "as it is": secret,
        "JSON-escaped": json.dumps(secret)[1:-1],
        "JSON-escaped, unicode kept": json.dumps(secret, ensure_ascii=False)[1:-1],
        "repr": repr(secret)[1:-1],
        "percent-encoded": urllib.parse.quote(secret, safe=""),
    }
    found += [how for how, form in readable.items() if form in text]
    needles = {secret.encode(), json.dumps(secret)[1:-1].encode()}
    for run_ in re.findall(r"[A-Za-z0-9+/_-]{8,}", text):
        for start in range(4):
            chunk = run_[start:]
            chunk = chunk[: len(chunk) - len(chunk) % 4]
            decoded = base64.b64decode(chunk.replace("-", "+").replace("_", "/"), validate=False)
            if any(needle in decoded for needle in needles):
                found.append(f"in the base64 {run_[:16]}...")
    return found


def no_leaks(text: str, secrets: dict[str, str]) -> dict[str, list[str]]:
    """Each secret (of the deploy's: not the user name) that can be read in ``text``, and how."""
    withheld = {name: value for name, value in secrets.items() if name != "REGISTRY_USERNAME"}
    return {name: how for name, value in withheld.items() if (how := leaks(text, value))}
