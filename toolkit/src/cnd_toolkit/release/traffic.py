"""Request rate, 5xx ratio and p95 latency of the live release, from its own /metrics.

``inv status`` reads the app's metrics listener from inside the release's container (``docker
exec``, so any ``DOCKER_HOST`` works and nothing is published), twice, ``window`` seconds
apart, and works out the figures from the difference; with no requests in between, from the
totals since the release started. Probes (``/healthz``, ``/readyz``: Docker's and Caddy's
health checks) are left out: they are not traffic.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import docker.errors
from docker.models.containers import Container
from prometheus_client.parser import text_string_to_metric_families

from cnd_toolkit import logs
from cnd_toolkit.errors import OpsError

PROBES = frozenset({"/healthz", "/readyz"})
_FETCH = (
    "import os, urllib.request; "
    "print(urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ.get('METRICS_PORT', '9101'), "
    "timeout=5).read().decode())"
)


@dataclass(frozen=True)
class Counts:
    """What a scrape says, probes left out: requests, 5xx answers, and the latency histogram."""

    requests: float = 0.0
    errors: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()  # (upper bound, cumulative count), +Inf last

    def __sub__(self, other: Counts) -> Counts:
        before = dict(other.buckets)
        return Counts(
            self.requests - other.requests,
            self.errors - other.errors,
            tuple((bound, count - before.get(bound, 0.0)) for bound, count in self.buckets),
        )

    def __add__(self, other: Counts) -> Counts:
        theirs = dict(other.buckets)
        bounds = sorted({b for b, _ in self.buckets} | set(theirs))
        mine = dict(self.buckets)
        return Counts(
            self.requests + other.requests,
            self.errors + other.errors,
            tuple((b, mine.get(b, 0.0) + theirs.get(b, 0.0)) for b in bounds),
        )


@dataclass(frozen=True)
class Traffic:
    seconds: float  # the window the figures cover (0: since the release started)
    requests: float
    rate: float  # requests per second (0 for totals)
    error_ratio: float | None  # 5xx over all answers; None without requests
    p95_ms: float | None

    def describe(self) -> str:
        if not self.requests:
            return "no API requests yet"
        ratio = f"{self.error_ratio:.1%}" if self.error_ratio is not None else "-"
        p95 = f"{self.p95_ms:.0f} ms" if self.p95_ms is not None else "-"
        if self.seconds:
            return f"{self.rate:.1f} req/s, 5xx {ratio}, p95 {p95} (last {self.seconds:.0f} s)"
        return f"{self.requests:.0f} requests since start, 5xx {ratio}, p95 {p95} (none in the last moment)"


def parse(text: str) -> Counts:
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("route") in PROBES:
                continue
            if sample.name == "http_requests_total":
                requests += sample.value
                if sample.labels.get("status", "").startswith("5"):
                    errors += sample.value
            elif sample.name == "http_request_duration_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return Counts(requests, errors, tuple(sorted(buckets.items())))


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus's histogram_quantile: linear within the bucket the rank falls in."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound  # beyond the highest finite bucket: its bound, as Prometheus does
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return None


def figures(delta: Counts, seconds: float) -> Traffic:
    p95 = quantile(0.95, delta.buckets)
    return Traffic(
        seconds=seconds,
        requests=delta.requests,
        rate=delta.requests / seconds if seconds else 0.0,
        error_ratio=delta.errors / delta.requests if delta.requests else None,
        p95_ms=p95 * 1000 if p95 is not None else None,
    )


def scrape(container: Container) -> Counts:
    """One container's counts (its metrics listener, read from inside it)."""
    return parse(exposition(container))


def exposition(container: Container) -> str:
    """One container's /metrics as its metrics listener serves it, read from inside it."""
    try:
        code, output = container.exec_run(["python", "-c", _FETCH])
    except docker.errors.APIError as exc:  # stopped or removed meanwhile
        raise OpsError(f"could not read {container.name}'s /metrics: {exc.explanation or exc}") from None
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
    if code != 0:
        last = text.strip().splitlines()[-1] if text.strip() else f"exit code {code}"
        raise OpsError(f"could not read {container.name}'s /metrics: {logs.clean_line(last)}")
    return text


def measure(containers: Iterable[Container], window: float = 2.0) -> Traffic:
    """The figures of these containers together (a swarm's tasks), over ``window`` seconds."""
    found = list(containers)

    def total() -> Counts:
        summed = Counts()
        for container in found:
            summed = summed + scrape(container)
        return summed

    before = total()
    started = time.monotonic()
    time.sleep(window)
    after = total()
    seconds = time.monotonic() - started
    delta = after - before
    return figures(delta, seconds) if delta.requests > 0 else figures(after, 0.0)
