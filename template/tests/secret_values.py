"""Seeded secret values that stress every escaping a message or an echo could apply: quotes,
``%`` and ``\\``, unicode, base64-looking runs, URL punctuation. Each kind is what its setting
accepts (a token is printable ASCII without spaces; a password anything but control characters;
the metrics token 32+ characters; the webhook an https URL whose path is the key)."""

from __future__ import annotations

import random
import string

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
