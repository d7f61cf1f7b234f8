"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(repeat: int, work: Callable[[], object]) -> float:
    """Median wall time of `work()` over `repeat` runs after one warm-up run, in milliseconds."""
    work()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)
