"""A module imported when one of its names is first used, not when the importer loads."""

from __future__ import annotations

import importlib
from typing import Any


class lazy:
    """``lazy("cnd_toolkit.dev").site_for`` imports ``cnd_toolkit.dev`` then, the usual way (import lock,
    sys.modules), so every importer shares the one module. For module-level names whose import is
    costly (Docker's SDK, aiohttp, httpx): the tasks' start-up stays that of Invoke and rich."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"
