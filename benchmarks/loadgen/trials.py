"""Trials of simulated editors against a fresh server: one rate's replay and its figures, and the search for the
highest rate that meets the latency objective. `serve_load` and the other load benchmarks run them.

A trial starts `codecomp-serve` afresh (cold caches), replays editors typing held-out files at a rate factor
(`benchmarks.loadgen.editors`), leaves out a warm-up, and summarises what the editors saw (`replay.summarize`)
with the frontend's own metrics beside it: batch sizes, queue waits, per-model latency.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import math
import os
import re
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from benchmarks.loadgen.editors import TraceConfig, build_trace, scale_trace
from benchmarks.loadgen.launch import ServerProcess
from benchmarks.loadgen.replay import meets_objective, replay, summarize


@dataclasses.dataclass
class Bench:
    documents: list[tuple[str, bytes]]
    editors: int
    seconds: float
    objective_ms: float
    logs: Path
    extra: list[str]  # overrides for every server (other checkpoints, say)
    warmup: float = 3.0  # seconds at the start of each trial left out of its figures
    trials: int = 1  # traces (seeds) per rate, each against a fresh server, their outcomes pooled

    def server(self, overrides: Sequence[str], name: str) -> ServerProcess:
        return ServerProcess([*self.extra, *overrides], log=self.logs / f"{name}.log")

    @contextlib.contextmanager
    def serving(self, overrides: Sequence[str], name: str) -> Iterator[list[str]]:
        """The frontends one trial replays against, by URL: one server here (benchmarks.two_frontends: several)."""
        with self.server(overrides, name) as server:
            yield [server.url]

    def trace(self, factor: float, seed: int = 0) -> list[Any]:
        """The editors' requests over a warm-up and `seconds`, typed `factor` times faster (factor x the
        request rate). Editors start at random times during the warm-up, as if already at work."""
        span = (self.warmup + self.seconds) * factor
        config = TraceConfig(editors=self.editors, duration_s=span, seed=seed, start_within_s=self.warmup * factor)
        return scale_trace(build_trace(self.documents, config), factor)

    def measured(self, outcomes: list[Any]) -> list[Any]:
        """The outcomes after the warm-up."""
        return [o for o in outcomes if o.scheduled_s >= self.warmup]

    def run(self, overrides: Sequence[str], factor: float, name: str) -> dict[str, Any]:
        """One rate: `trials` traces of different seeds, each against a fresh server, figures over all of them."""
        everything: list[Any] = []
        firsts: list[Any] = []
        metrics = ""
        for seed in range(self.trials):
            trace = self.trace(factor, seed)
            with self.serving(overrides, f"{name}-x{factor:.3g}-{seed}") as urls:
                trial = asyncio.run(replay(urls, trace, timeout_s=5.0))
                metrics += "".join(httpx.get(f"{url}/metrics").text for url in urls)  # the means pool the trials
            everything += trial
            firsts += first_requests(trial)
        outcomes = self.measured(everything)
        summary = summarize(outcomes, self.seconds * self.trials)
        summary["rate"] = len(outcomes) / (self.seconds * self.trials)
        summary["cold"] = cold_sessions(firsts)
        summary["batch"] = mean_batch_sizes(metrics)
        waits = mean_batch_sizes(metrics, "codecomp_queue_wait_seconds")  # in the frontend's queue, s
        summary["queue_wait_ms"] = {model: 1000 * seconds for model, seconds in waits.items()}
        latency = mean_batch_sizes(metrics, "codecomp_model_latency_seconds")  # a batch sent to its answer, s
        summary["model_ms"] = {model: 1000 * seconds for model, seconds in latency.items()}
        summary["meets"] = meets_objective(summary, self.objective_ms)
        summary["outcomes"] = outcomes
        print(f"  {name:<15} x{factor:<6.3g} {summary['rate']:7.1f} req/s  p99 {fmt(summary['p99_ms'])} ms  "
              f"degraded+shed+errors {bad_share(summary):6.1%}  {'meets' if summary['meets'] else 'misses'}  "
              f"model ms {model_ms(summary)}  ({why_bad(outcomes)})", flush=True)  # fmt: skip
        return summary

    def capacity(self, overrides: Sequence[str], name: str, start: float = 1.0) -> tuple[float, dict[str, Any]]:
        """The highest rate factor meeting the objective, and the summary of the trial at the base rate."""
        results = {start: self.run(overrides, start, name)}
        factor = start
        step = 2.0 if results[start]["meets"] else 0.5
        while 1 / 64 <= factor <= 64:
            factor *= step
            results[factor] = self.run(overrides, factor, name)
            if results[factor]["meets"] != results[start]["meets"] or not results[factor]["count"]:
                break  # found the edge, or a rate too low to send anything within one trial
        passing = [f for f, r in results.items() if r["meets"]]
        failing = [f for f, r in results.items() if not r["meets"]]
        if passing and failing:
            low, high = max(passing), min(f for f in failing if f > max(passing))
            middle = math.sqrt(low * high)
            results[middle] = self.run(overrides, middle, name)
            passing = [f for f, r in results.items() if r["meets"]]
        best = max(passing) if passing else 0.0
        return (results[best]["rate"] if passing else 0.0), results[start]


def mean_batch_sizes(metrics: str, name: str = "codecomp_batch_size") -> dict[str, float]:
    """Mean batch size per model (or mean of another per-model histogram `name`); `metrics` may hold several
    frontends' texts one after another (they add up)."""
    totals: dict[str, dict[str, float]] = {"sum": {}, "count": {}}
    for kind, model, value in re.findall(name + r'_(sum|count)\{model="(\w+)"\} ([\d.e+-]+)', metrics):
        totals[kind][model] = totals[kind].get(model, 0.0) + float(value)
    sums, counts = totals["sum"], totals["count"]
    return {m: sums[m] / counts[m] for m in sums if counts.get(m)}


def first_requests(outcomes: list[Any]) -> list[Any]:
    """The first request of each editor in one trial: no prefix state, no cache."""
    first: dict[str, Any] = {}
    for outcome in sorted(outcomes, key=lambda o: o.scheduled_s):
        first.setdefault(outcome.user, outcome)
    return list(first.values())


def cold_sessions(firsts: list[Any]) -> dict[str, float]:
    """Editors' first requests (`first_requests`), shown apart from the steady state."""
    latencies = sorted(o.latency_s * 1000 for o in firsts)
    return {
        "count": len(latencies),
        "p50_ms": statistics.median(latencies) if latencies else 0.0,
        "max_ms": latencies[-1] if latencies else 0.0,
        "degraded": sum(o.degraded for o in firsts) / max(1, len(firsts)),
    }


def why_bad(outcomes: list[Any]) -> str:
    """What the bad answers were: models late, expired, shed or failed, lines cut short, 503s, errors."""
    reasons: collections.Counter[str] = collections.Counter()
    for o in outcomes:
        if o.status != 200:
            reasons["503" if o.status == 503 else "error"] += 1
        elif o.degraded:
            missing = [f"{model} {status}" for model, status in o.models.items() if status != "ok"]
            reasons.update(missing or ["cut short"])
    return ", ".join(f"{reason} {n}" for reason, n in reasons.most_common()) or "none"


def model_ms(summary: dict[str, Any]) -> str:
    """Mean milliseconds from a batch's sending to its answer, per model (`char 27.3/tree 20.1/...`)."""
    return "/".join(f"{model} {ms:.1f}" for model, ms in sorted(summary["model_ms"].items())) or "-"


def bad_share(summary: dict[str, Any]) -> float:
    return (summary["degraded"] + summary["shed"] + summary["errors"]) / max(1, summary["count"])


def fmt(value: float | None) -> str:
    return "   -" if value is None else f"{value:6.1f}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
