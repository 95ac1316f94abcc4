"""Tasks you type while working: `inv -l` lists them, `inv --help TASK` explains one.

The deploy and operations tasks come from cnd-toolkit, pinned in pyproject.toml (`copier update`
moves the pin). Add your own tasks below and register them on `ns`; a task of yours with the name
of one of the toolkit's replaces it.
"""

from __future__ import annotations

from cnd_toolkit.tasks import ns

__all__ = ["ns"]

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
