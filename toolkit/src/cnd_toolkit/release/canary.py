"""A canary of the API: the share of traffic it gets at each step, and the gate between steps.

Pure: numbers in, decisions out. The roll-out (``cnd_toolkit.release.rollout``) starts the canary beside
the live release, gives it a share of the requests through the proxy, scrapes both releases'
own ``/metrics`` over the step (``cnd_toolkit.release.traffic``), and asks :func:`judge` whether to go on.

The gate compares the canary with the live release over the same seconds, the same traffic
mix: a canary fails when its 5xx ratio is above the live one's by more than
``max_error_ratio``, or its p95 latency is more than ``max_latency_ratio`` times the live one's
(and slower by more than ``min_latency_ms``: a histogram's buckets are coarse near zero). With
fewer than ``min_requests`` answers the canary cannot be judged on ratios; then any 5xx beyond
the live release's ratio fails it, and otherwise the step is inconclusive and the roll-out waits
another step's time before it moves on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cnd_toolkit.errors import OpsError
from cnd_toolkit.release.traffic import Counts, Traffic, figures

DEFAULT_STEPS = (10, 50, 100)


def parse_steps(text: str) -> tuple[int, ...]:
    """``CANARY_STEPS``: rising whole percentages, comma-separated, ending at 100 (``10,50,100``)."""
    if not re.fullmatch(r" *[0-9]{1,3} *(, *[0-9]{1,3} *)*", text or ""):
        raise OpsError(f"CANARY_STEPS={text!r} is not a list of percentages such as 10,50,100")
    steps = tuple(int(part) for part in text.split(","))
    if any(not 1 <= s <= 100 for s in steps) or list(steps) != sorted(set(steps)) or steps[-1] != 100:
        raise OpsError(
            f"CANARY_STEPS={text!r}: each step a percentage in 1..100, rising, the last one 100 (for example 10,50,100)"
        )
    if len(steps) < 2:
        raise OpsError(
            f"CANARY_STEPS={text!r} has no step below 100: a canary needs at least one (for example 10,100); "
            "a plain `inv deploy` switches every request at once"
        )
    return steps


@dataclass(frozen=True)
class Gate:
    max_error_ratio: float = 0.01  # the canary's 5xx ratio may exceed the live one's by this much
    max_latency_ratio: float = 1.5  # ... and its p95 be this many times the live one's
    min_latency_ms: float = 25.0  # ... or slower by no more than this (bucket resolution)
    min_requests: int = 20  # answers the canary needs in a step to be judged on ratios


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "pass", "fail" or "inconclusive"
    reasons: tuple[str, ...]
    canary: Traffic
    live: Traffic

    @property
    def failed(self) -> bool:
        return self.outcome == "fail"

    def describe(self) -> str:
        """The comparison, as the deploy prints it (and on a failure, why)."""
        why = f": {'; '.join(self.reasons)}" if self.reasons else ""
        return f"canary {self.canary.describe()} | live {self.live.describe()} -> {self.outcome}{why}"


def judge(canary: Counts, live: Counts, seconds: float, gate: Gate) -> Verdict:
    """The gate over one step: ``canary`` and ``live`` are what each answered in its ``seconds``."""
    mine, theirs = figures(canary, seconds), figures(live, seconds)
    reasons: list[str] = []
    baseline = theirs.error_ratio or 0.0
    ratio = mine.error_ratio
    if ratio is not None and canary.errors > 0 and ratio > baseline + gate.max_error_ratio:
        reasons.append(
            f"5xx {ratio:.1%} of {canary.requests:.0f} answers against the live release's {baseline:.1%} "
            f"(allowed: {gate.max_error_ratio:.1%} more)"
        )
    enough = canary.requests >= gate.min_requests
    if enough and mine.p95_ms is not None and theirs.p95_ms is not None:
        limit = max(theirs.p95_ms * gate.max_latency_ratio, theirs.p95_ms + gate.min_latency_ms)
        if mine.p95_ms > limit:
            reasons.append(
                f"p95 {mine.p95_ms:.0f} ms against the live release's {theirs.p95_ms:.0f} ms "
                f"(allowed: {gate.max_latency_ratio:g}x, at least +{gate.min_latency_ms:g} ms)"
            )
    if reasons:
        return Verdict("fail", tuple(reasons), mine, theirs)
    if not enough:
        why = f"{canary.requests:.0f} answers, fewer than the {gate.min_requests} needed to judge"
        return Verdict("inconclusive", (why,), mine, theirs)
    return Verdict("pass", (), mine, theirs)
