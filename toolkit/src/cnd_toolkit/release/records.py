"""Release records on the Docker host: what each deploy shipped, for `inv releases` and `inv rollback`.

Kept as JSON in the shared proxy's configuration volume (``/etc/caddy/releases/<slug>.json``),
written and read through the Docker API, so every machine that deploys to the host sees the same
history. A record holds the version, revision, image digest, the Netlify deploy id and the time.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from docker.models.containers import Container

from cnd_toolkit.release import caddy, proxy

HISTORY = 50  # records kept per project


@dataclass(frozen=True)
class Record:
    version: str
    revision: str
    image: str = ""  # repository@sha256:... (or the local tag when nothing was pushed)
    container: str = ""
    netlify_deploy: str = ""
    netlify_url: str = ""
    time: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    who: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: str(v) for k, v in data.items() if k in known})


def path(slug: str) -> str:
    return f"{caddy.CONFIG_DIR}/releases/{caddy.site_file_name(slug).removesuffix('.caddy')}.json"


def load(proxy_container: Container | None, slug: str) -> list[Record]:
    """The project's records, newest first (empty before the first deploy)."""
    if proxy_container is None:
        return []
    text = proxy.read_file(proxy_container, path(slug))
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError:
        return []
    return [Record.from_json(item) for item in data if isinstance(item, dict)]


def add(proxy_container: Container, slug: str, record: Record) -> list[Record]:
    records = [record, *load(proxy_container, slug)][:HISTORY]
    proxy.put_file(proxy_container, path(slug), json.dumps([asdict(r) for r in records], indent=1) + "\n")
    return records


def remove(proxy_container: Container, slug: str) -> None:
    proxy_container.exec_run(["rm", "-f", path(slug)])


def find(records: list[Record], revision: str) -> Record | None:
    """The newest record whose revision starts with ``revision``."""
    return next((r for r in records if revision and r.revision.startswith(revision)), None)
