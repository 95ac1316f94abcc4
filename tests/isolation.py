"""The toolkit tests' leak check (toolkit/tests/isolation.py), used by these tests too: one copy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "cnd_template_isolation", Path(__file__).resolve().parent.parent / "toolkit" / "tests" / "isolation.py"
)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

module_leaves_nothing = _module.module_leaves_nothing
test_leaves_nothing = _module.test_leaves_nothing
pytest_configure = _module.pytest_configure
pytest_runtest_protocol = _module.pytest_runtest_protocol
pytest_terminal_summary = _module.pytest_terminal_summary
