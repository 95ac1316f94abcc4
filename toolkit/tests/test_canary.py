"""cnd_toolkit.release.canary: the share each step gives the canary, and the gate between steps, judged on
generated, seeded traffic as the app's own histogram would count it."""

from __future__ import annotations

import random

import pytest
from api.metrics import BUCKETS
from cnd_toolkit.errors import OpsError
from cnd_toolkit.release import canary
from cnd_toolkit.release.traffic import Counts


def counts(latencies: list[float], errors: int = 0) -> Counts:
    """What a scrape's difference says of these answers (seconds each), ``errors`` of them 5xx."""
    bounds = (*BUCKETS, float("inf"))
    buckets = tuple((bound, float(sum(1 for s in latencies if s <= bound))) for bound in bounds)
    return Counts(float(len(latencies)), float(errors), buckets)


def test_steps_rise_to_100() -> None:
    assert canary.parse_steps("10,50,100") == (10, 50, 100)
    assert canary.parse_steps(" 5, 25 ,100") == (5, 25, 100)
    assert canary.parse_steps("1,100") == (1, 100)
    with pytest.raises(OpsError, match="no step below 100"):  # no canary at all: --manual would have nothing to stop at
        canary.parse_steps("100")
    for bad in ["", "10,50", "50,10,100", "10,10,100", "0,100", "10,50,101", "10;50;100", "10,,100", "1e1,100",
                "10,50,100\n", "\u0661\u0660,100", "-5,100"]:  # fmt: skip
        with pytest.raises(OpsError, match="CANARY_STEPS"):
            canary.parse_steps(bad)


@pytest.mark.parametrize("seed", range(40))
def test_a_canary_like_the_live_release_passes(seed: int) -> None:
    rng = random.Random(seed)
    gate = canary.Gate()
    base = rng.choice([0.004, 0.02, 0.08, 0.3])
    live = [rng.lognormvariate(0, 0.4) * base for _ in range(rng.randint(500, 3000))]
    new = [rng.lognormvariate(0, 0.4) * base for _ in range(rng.randint(60, 400))]
    rate = rng.choice([0.0, 0.002])
    live_errors = sum(rng.random() < rate for _ in live)
    new_errors = sum(rng.random() < rate for _ in new)
    verdict = canary.judge(counts(new, new_errors), counts(live, live_errors), 10.0, gate)
    if new_errors and new_errors / len(new) > live_errors / len(live) + gate.max_error_ratio:
        assert verdict.failed  # chance made it worse than allowed: the rule, not luck, decides
    else:
        assert verdict.outcome == "pass", verdict.describe()


@pytest.mark.parametrize("seed", range(40))
def test_a_canary_three_times_slower_fails_on_latency(seed: int) -> None:
    rng = random.Random(1000 + seed)
    base = rng.choice([0.02, 0.08, 0.3])  # slow enough for the buckets to tell 3x apart
    live = [rng.lognormvariate(0, 0.3) * base for _ in range(2000)]
    new = [3 * rng.lognormvariate(0, 0.3) * base for _ in range(rng.randint(40, 300))]
    verdict = canary.judge(counts(new), counts(live), 10.0, canary.Gate())
    assert verdict.failed and "p95" in verdict.reasons[0], verdict.describe()


@pytest.mark.parametrize("seed", range(40))
def test_a_canary_failing_some_requests_fails_on_errors(seed: int) -> None:
    rng = random.Random(2000 + seed)
    share = rng.choice([0.03, 0.1, 0.5])
    new = [0.01] * rng.randint(30, 300)
    errors = max(2, round(len(new) * share))
    verdict = canary.judge(counts(new, errors), counts([0.01] * 1000), 10.0, canary.Gate())
    assert verdict.failed and "5xx" in verdict.reasons[0]
    assert "against the live release's 0.0%" in verdict.describe()


def test_too_few_answers_are_inconclusive_unless_one_failed() -> None:
    gate = canary.Gate(min_requests=20)
    live = counts([0.01] * 500)
    assert canary.judge(counts([0.01] * 5), live, 10.0, gate).outcome == "inconclusive"
    assert canary.judge(Counts(), live, 10.0, gate).outcome == "inconclusive"
    assert canary.judge(counts([0.01] * 5, errors=1), live, 10.0, gate).failed
    # Slow but few: not judged on latency (a handful of answers says little about a p95).
    assert canary.judge(counts([1.0] * 5), live, 10.0, gate).outcome == "inconclusive"


def test_the_canary_settings_are_checked_where_they_are_read(tmp_path: object) -> None:
    from cnd_toolkit import project, settings
    from cnd_toolkit.project import ROOT
    from cnd_toolkit.release import deploy

    loaded = settings.load(ROOT, environ={"CANARY_STEPS": "5,25,100", "CANARY_MAX_P95_PERCENT": "200"})
    made = deploy.canary_plan(loaded, manual=True)
    assert made.steps == (5, 25, 100) and made.gate.max_latency_ratio == 2.0 and made.manual
    assert made.interval == 60.0 and made.gate.max_error_ratio == 0.01
    assert deploy.target(project.load(), settings.load(ROOT, environ={"CANARY_STICKY": "cookie"})).sticky
    bad = [("CANARY_STEPS", "50,10"), ("CANARY_STEPS", "10,50"), ("CANARY_STEPS", "100"), ("CANARY_INTERVAL", "0"),
           ("CANARY_MAX_P95_PERCENT", "99"), ("CANARY_STICKY", "ip")]  # fmt: skip
    for name, value in bad:
        with pytest.raises(OpsError, match=name):
            settings.load(ROOT, environ={name: value})
