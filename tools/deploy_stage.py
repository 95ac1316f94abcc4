"""A deploy's outside world for template-level tests: a registry and a strict Netlify API.

``python tools/deploy_stage.py PROJECT TOKEN SITE_ID...`` starts, from the generated project at
PROJECT, the toolkit's loopback registry (``toolkit/tests/local_registry.py``, Debian's
docker-registry) and its strict local Netlify API (``toolkit/tests/netlify_api.py``) with one site per
SITE_ID, prints one JSON line (``registry``, ``netlify_api_url``) and serves until its stdin closes. A
process of its own: the toolkit's ``tests`` package cannot be imported beside this repository's.
"""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path


def main(argv: list[str]) -> int:
    project, token, *site_ids = argv
    del project  # the helpers are the toolkit's, not the project's
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "toolkit"))
    from tests.local_registry import RegistryUnavailable, serve  # the toolkit's
    from tests.netlify_api import LocalNetlify

    with ExitStack() as stack:
        try:
            registry = stack.enter_context(serve())
        except RegistryUnavailable as exc:
            print(json.dumps({"error": str(exc)}), flush=True)
            return 3
        netlify = stack.enter_context(LocalNetlify(token, {site: site for site in site_ids}))
        print(json.dumps({"registry": registry, "netlify_api_url": netlify.api_url}), flush=True)
        sys.stdin.read()  # until the test closes our stdin (or dies)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
