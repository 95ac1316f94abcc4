"""Tasks you type while working: `inv -l` lists them, `inv --help TASK` explains one.

The deploy and operations tasks come from cnd-toolkit, pinned in pyproject.toml (`copier update`
moves the pin). Add your own tasks below and register them on `ns`; a task of yours with the name
of one of the toolkit's replaces it.
"""

from __future__ import annotations

from pathlib import Path

try:
    from cnd_toolkit.tasks import collection
except ImportError as exc:  # not installed here, or shadowed by a file of the project
    raise SystemExit(
        f"error: the tooling (cnd-toolkit) cannot be imported ({exc}): run `uv sync --locked` and activate "
        "the environment (. .venv/bin/activate), or prefix the command with `uv run`"
    ) from None

# The toolkit's tasks, for the project in this folder (wherever `inv` runs from, `inv -r` too).
ns = collection(Path(__file__).resolve().parent)

# Your tasks, for example:
#
#     from invoke import Context, task
#
#     @task
#     def seed(c: Context) -> None:
#         """Load the demo data into the local stack."""
#         c.run("python -m api.seed")
#
#     ns.add_task(seed)
