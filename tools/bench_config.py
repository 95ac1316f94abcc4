"""How reading the Netlify configuration grows with its size, for ``nox -s bench``: each input
class that once cost quadratic time (issue 24), swept over sizes, timed through the toolkit's
own ``inv check`` path (``cnd_toolkit.netlify.config.load`` and ``check_config``).

Each class's figure is its growth exponent over the sizes: the slope of log(time) over log(size),
1.0 for linear and about 1.1 for n log n over this range; quadratic is 2.0. The target is under
1.3 (every deploy, `inv check`, `inv edge` and the Netlify build read the configuration this way).
``python -m tools.bench_config`` runs it alone (no engine needed).
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SIZES = (2_000, 4_000, 8_000, 16_000)


def distinct_rules(n: int) -> dict[str, str]:
    return {"public/_redirects": "".join(f"/r{i}/* /t{i}/:splat 301\n" for i in range(n))}


def rules_pasted_twice(n: int) -> dict[str, str]:
    half = "".join(f"/r{i}/* /t{i}/:splat 301\n" for i in range(n // 2))
    return {"public/_redirects": half + half}


def long_toml_line(n: int) -> dict[str, str]:
    # Spaces inside a key line: what the key-line reader once backtracked over quadratically.
    return {"netlify.toml": "a" + " " * (n * 20) + "b = 1\n" + "[" + " " * (n * 20) + "x]\n"}


def headers_blocks(n: int) -> dict[str, str]:
    return {"public/_headers": "".join(f"/p{i}/*\n  X-N: {i}\n" for i in range(n))}


def many_placeholders(n: int) -> dict[str, str]:
    # One rule with n placeholders (each named once in the target): what the repeated-name check
    # once counted in quadratic time.
    names = [f":p{i}" for i in range(n)]
    return {"public/_redirects": f"/{'/'.join(names)} /b/{'/'.join(names)} 301\n"}


def dotted_key(n: int) -> dict[str, str]:
    # One key of n parts, which tomllib reads in time quadratic in n: refused before it is read.
    return {"netlify.toml": "a" + ".a" * n + " = 1\n"}


def keys_at_the_depth_limit(n: int) -> dict[str, str]:
    # n // 8 keys of as many parts as netlify.toml may have, each with a dotted string value.
    return {"netlify.toml": "".join(f"k{i}" + ".a" * 31 + f' = "{".v" * 31}"\n' for i in range(n // 8))}


def unknown_sections(n: int) -> dict[str, str]:
    # n // 4 sections netlify.toml has no use for: each a warning, the first hundred with a suggestion.
    return {"netlify.toml": "".join(f"sect{i} = {i}\n" for i in range(n // 4))}


CLASSES: dict[str, Callable[[int], dict[str, str]]] = {
    "distinct_rules": distinct_rules,
    "rules_pasted_twice": rules_pasted_twice,
    "long_toml_line": long_toml_line,
    "headers_blocks": headers_blocks,
    "many_placeholders": many_placeholders,
    "dotted_key": dotted_key,
    "keys_at_the_depth_limit": keys_at_the_depth_limit,
    "unknown_sections": unknown_sections,
}


def seconds(files: dict[str, str], runs: int = 5) -> float:
    from cnd_toolkit.netlify.check import check_config
    from cnd_toolkit.netlify.config import load

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "public").mkdir()
        if "netlify.toml" not in files:
            (root / "netlify.toml").write_text('[build]\npublish = "public"\n')
        for name, text in files.items():
            (root / name).write_text(text)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            check_config(load(root))
            times.append(time.perf_counter() - started)
        return statistics.median(times)


def bench(*_: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {"sizes": list(SIZES)}
    for name, make in CLASSES.items():
        times = [seconds(make(n)) for n in SIZES]
        figures[name] = {"seconds": [round(t, 4) for t in times], "growth": round(growth(SIZES, times), 2)}
    return figures


def growth(sizes: tuple[int, ...], times: list[float]) -> float:
    """The least-squares slope of log(time) over log(size): one slow run moves it less than a
    slope between two points would."""
    xs, ys = [math.log(n) for n in sizes], [math.log(max(t, 1e-6)) for t in times]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum((x - mean_x) ** 2 for x in xs)


if __name__ == "__main__":
    print(json.dumps(bench(), indent=2))
