"""Small helpers shared by the benchmarks: timing, medians, a result table,
and ``record_results``: every bench merges its figures into one flat JSON
object (``tests/bench/results.json``, or ``$BENCH_RESULTS``), figure name to
number, with the machine, the Python version and the date of the run;
tests/bench/report.py turns it into Markdown."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("BENCH_RESULTS", HERE / "results.json"))
META_KEYS = ("machine", "python", "date")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_of(repeats: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeats))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for row in [header, *rows]:
        print(
            "  "
            + "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def verdict(name: str, ok: bool, detail: str) -> None:
    print(f"  target {name}: {'met' if ok else 'MISSED'} ({detail})")


def machine() -> str:
    """``x86_64, 2 cores, AMD EPYC``: what the figures were measured on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return ", ".join(x for x in (platform.machine(), f"{os.cpu_count()} cores", model) if x)


def record_results(figures: dict[str, float], path: Path = RESULTS) -> None:
    """Merge ``figures`` into the results file (written whole, then renamed:
    a bench that dies half-way never leaves a torn file)."""
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError):
        results = {}
    for name, value in figures.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name}: figures are numbers, not {value!r}")
        results[name] = round(value, 4) if isinstance(value, float) else value
    results.update(
        machine=machine(),
        python=platform.python_version(),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(results.items())), indent=1) + "\n")
    os.replace(tmp, path)
