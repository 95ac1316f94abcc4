"""A release backend in memory, for testing the deploy pipeline (``deploy.deploy``) without an
engine: what it was asked to do, in order, and the releases, records and lock it holds.

It implements :class:`cnd_toolkit.release.backends.Backend` as a third target would, with the
same contract: a release goes live only through ``roll_out`` (or a promoted canary), the lock is
held for the block and then free, records are kept newest first. ``fail`` names a step that raises
(``build``, ``smoke``, ``push``, ``roll_out``, ``canary``) and with what.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from cnd_toolkit import monitor
from cnd_toolkit import project as proj
from cnd_toolkit.docker import images
from cnd_toolkit.logs import LineSink, Progress
from cnd_toolkit.release import backends, canary_rollout, lock, records, rollout, swarm


@dataclass
class Box:
    """What stands for a release container: a name, and a status as the engine reports it."""

    name: str
    status: str = "running"
    attrs: dict[str, Any] = field(default_factory=lambda: {"State": {"StartedAt": "2026-12-06T00:00:00Z"}})


class MemoryBackend(backends.Backend):
    kind = "memory"  # what a hook sees as CND_TARGET

    def __init__(self, target: rollout.Target, *, fail: Mapping[str, BaseException] | None = None) -> None:
        super().__init__(cast(Any, None), target, lambda: None)
        self.fail = dict(fail or {})
        self.calls: list[str] = []
        self.releases: list[rollout.Release] = []
        self.current: rollout.Release | None = None
        self.kept: list[records.Record] = []
        self.holder: lock.Holder | None = None
        self.canary_in_progress: backends.CanaryNow | None = None
        self.problems: list[str] = []

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    def _release(self, release: backends.Release) -> rollout.Release:
        colour = "green" if self.current is None or self.current.colour == "blue" else "blue"
        box = Box(f"{self.slug}-{colour}")
        made = rollout.Release(
            cast(Any, box), colour, release.version, release.revision, release.image, release.reference,
            dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        )  # fmt: skip
        self.releases.append(made)
        return made

    def _started(self, release: backends.Release) -> rollout.Release:
        """A new release, up and healthy, once its pre-switch hook passed (else it is removed)."""
        made = self._release(release)
        if release.before_switch is not None:
            try:
                release.before_switch(made.name)
            except BaseException:
                self.releases.remove(made)
                raise
        return made

    # the engine's
    def is_local(self) -> bool:
        return True

    def registry_problems(self, repository: str, username: str, password: str) -> list[str]:
        return []

    @contextlib.contextmanager
    def _held(self, revision: str, action: str) -> Iterator[lock.Holder]:
        if self.holder is not None:
            raise lock.LockHeld(f"{self.slug} is locked: {self.holder.describe()}")
        self.holder = lock.Holder(
            token="t", who="test", since=dt.datetime.now(dt.UTC), revision=revision, action=action
        )
        self.calls.append(f"lock {action}")
        try:
            yield self.holder
        finally:
            self.holder = None
            self.calls.append(f"unlock {action}")

    def hold_lock(
        self, *, revision: str = "", action: str = "deploy"
    ) -> contextlib.AbstractContextManager[lock.Holder]:
        return self._held(revision, action)

    def lock_holder(self) -> lock.Holder | None:
        return self.holder

    def history(self) -> list[records.Record]:
        return list(self.kept)

    def record(self, record: records.Record) -> None:
        self.calls.append(f"record {record.revision}")
        self.kept.insert(0, record)

    def in_maintenance(self) -> bool:
        return False

    def sites(self) -> dict[str, str]:
        return {}

    def build(
        self,
        project: proj.Project,
        *,
        tag: str,
        base_image: str,
        revision: str,
        on_line: LineSink | None,
        say: LineSink,
    ) -> images.BuildResult:
        self._step("build")
        return images.BuildResult(image_id=f"sha256:{revision[:12]:0<64}", tags=[f"{project.slug}:{tag}"], seconds=0)

    def smoke(
        self,
        project: proj.Project,
        image: str,
        *,
        environment: Mapping[str, str],
        on_line: LineSink | None,
        docker_host: str,
    ) -> None:
        self._step("smoke")

    def push(
        self,
        image: str,
        repository: str,
        tag: str,
        *,
        username: str,
        password: str,
        on_line: LineSink | None,
        on_progress: Progress | None,
    ) -> str:
        self._step("push")
        return f"{repository}@sha256:{'a' * 64}"

    # the target's
    def proxy(self) -> Any:
        return Box("proxy")

    def live(self) -> backends.Live | None:
        return self.current

    def check_host(self, say: LineSink) -> list[str]:
        return list(self.problems)

    def roll_out(self, release: backends.Release, *, say: LineSink, timings: rollout.Timings) -> backends.Live:
        self._step("roll_out")
        made = self._started(release)
        with timings.phase("switch"):
            self.current = made
        if "after_switch" in self.fail:
            raise self.fail["after_switch"]
        return self.current

    def canary(
        self, release: backends.Release, plan: canary_rollout.Plan, *, say: LineSink, timings: rollout.Timings
    ) -> backends.CanaryOutcome:
        self._step("canary")
        made = self._started(release)
        promoted = not plan.manual
        if promoted:
            self.current = made
        return canary_rollout.Outcome(made, promoted)

    def roll_back(
        self, history: list[records.Record], revision: str, environment: dict[str, str], *, say: LineSink
    ) -> backends.Live:
        self._step("roll_back")
        pick = next(r for r in self.releases if r.revision != (self.current.revision if self.current else ""))
        self.current = pick
        return pick

    def canary_now(self) -> backends.CanaryNow | None:
        return self.canary_in_progress

    def canary_figures(self, found: backends.CanaryNow, plan: canary_rollout.Plan, window: float) -> str:
        return ""

    def promote(self, *, say: LineSink) -> backends.Live:
        self._step("promote")
        self.current = self.releases[-1]  # the canary a manual deploy left
        return self.current

    def abort(self, *, say: LineSink) -> backends.Live:
        raise NotImplementedError

    def health(self, live: backends.Live | None) -> backends.Health:
        return backends.Health("healthy" if live else "not deployed")

    def idle_notes(self, history: list[records.Record]) -> list[str]:
        return []

    def watched(self) -> monitor.Watched:
        return monitor.Watched(f"memory={self.slug}", "kept")

    def log_containers(self) -> list[Any]:
        return []

    def serving_containers(self) -> tuple[list[Any], str]:
        return [], ""

    def release_names(self) -> list[str]:
        return [r.name for r in self.releases]

    def remove_releases(self, *, say: LineSink) -> list[str]:
        names = self.release_names()
        self.releases, self.current = [], None
        return names

    def scale(self, count: int, timeout: float, *, say: LineSink) -> swarm.SwarmRelease:
        raise NotImplementedError
