"""cnd_toolkit.release.traffic: `inv status`'s request rate, 5xx ratio and p95, from /metrics text."""

from __future__ import annotations

import random

import pytest
from cnd_toolkit.release import traffic

OPEN, CLOSE = "{", "}"  # (no doubled braces: generated files carry no template syntax)


def exposition(counts: dict[tuple[str, str], int], latencies: list[float]) -> str:
    lines = ["# TYPE http_requests_total counter"]
    for (route, status), value in counts.items():
        lines.append(f'http_requests_total{OPEN}method="GET",route="{route}",status="{status}"{CLOSE} {value}')
    lines.append("# TYPE http_request_duration_seconds histogram")
    cumulative = 0
    for bound in (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, float("inf")):
        cumulative = sum(1 for x in latencies if x <= bound)
        le = "+Inf" if bound == float("inf") else str(bound)
        lines.append(
            f'http_request_duration_seconds_bucket{OPEN}le="{le}",method="GET",route="/api/x"{CLOSE} {cumulative}'
        )
        # Probes are never counted as traffic, whatever their numbers.
        lines.append(f'http_request_duration_seconds_bucket{OPEN}le="{le}",method="GET",route="/healthz"{CLOSE} 999')
    lines.append(f'http_request_duration_seconds_count{OPEN}method="GET",route="/api/x"{CLOSE} {cumulative}')
    return "\n".join(lines) + "\n"


def test_probes_are_not_traffic_and_5xx_are_counted() -> None:
    text = exposition({("/api/x", "200"): 90, ("/api/x", "503"): 10, ("/healthz", "200"): 5000}, [0.003] * 100)
    counts = traffic.parse(text)
    assert (counts.requests, counts.errors) == (100, 10)
    found = traffic.figures(counts, 0.0)
    assert found.error_ratio == pytest.approx(0.1)
    assert "100 requests since start, 5xx 10.0%" in found.describe()


def test_p95_matches_prometheus_histogram_quantile_on_generated_latencies() -> None:
    rng = random.Random(42)
    for _ in range(200):
        latencies = [rng.choice([0.002, 0.007, 0.02, 0.04, 0.08, 0.2, 0.4, 0.9]) for _ in range(rng.randint(1, 400))]
        buckets = traffic.parse(exposition({("/api/x", "200"): len(latencies)}, latencies)).buckets
        p95 = traffic.quantile(0.95, buckets)
        assert p95 is not None
        # The true p95 lies in the bucket the estimate falls in (the estimate interpolates within it).
        true = sorted(latencies)[max(0, int(0.95 * len(latencies) + 0.999999) - 1)]
        bounds = [0.0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
        lower = max(b for b in bounds if b < true)
        upper = min(b for b in bounds[1:] if b >= true)
        assert lower <= p95 <= upper, (true, p95)


def test_a_window_is_the_difference_of_two_scrapes() -> None:
    before = traffic.parse(exposition({("/api/x", "200"): 100}, [0.003] * 100))
    after = traffic.parse(exposition({("/api/x", "200"): 180, ("/api/x", "500"): 20}, [0.003] * 100 + [0.3] * 100))
    found = traffic.figures(after - before, 2.0)
    assert found.rate == pytest.approx(50) and found.error_ratio == pytest.approx(0.2)
    assert found.p95_ms is not None and 250 <= found.p95_ms <= 500  # the new requests took 0.3 s
    assert "50.0 req/s, 5xx 20.0%" in found.describe()
    assert traffic.figures(traffic.Counts(), 0.0).describe() == "no API requests yet"
    assert traffic.quantile(0.95, ()) is None
