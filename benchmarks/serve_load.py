"""Serving under realistic editing load: capacity at the latency objective, ablations, large files,
a container killed under load, and overload.

    python -m benchmarks.serve_load [--corpus data/small] [--editors 32] [--seconds 12] [--trials 1] [--quick]
                                    [--configuration NAME ...]

Each trial starts `codecomp-serve` afresh (cold caches) with the default checkpoints, and replays
simulated editors typing held-out files of the corpus (`benchmarks/loadgen/trials.py`) against it; the load
generator runs in this process, on the same machine. Editors start at random times during a 3 s
warm-up that is left out of the figures (as if already at work); their first requests, which find
no prefix state, are reported apart as cold sessions. Capacity at the objective is the highest
request rate at which p99 end-to-end latency stays within the objective and at most 5% of requests
are degraded, shed or failed, found by doubling and halving the rate, then one geometric bisection.
With `--trials N` each rate replays N traces (other seeds), each against a fresh server, and its figures
pool them: one 12 s trace's p99 rests on a handful of requests, and the search can flip on it.
Configurations, on the same trace: the full system, its line models batching a batch at a time
instead of continuously, batching off (batch size 1), prediction caches off, and a fixed batch size;
"wait char" is the mean time a Char-LSTM request waits in the frontend's queue; each trial's "model ms" the mean
time from a batch's sending to its answer, per model (continuous batching: one request's).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import re
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.loadgen.editors import documents_from_corpus
from benchmarks.loadgen.replay import meets_objective, replay, summarize
from benchmarks.loadgen.trials import Bench, cpu_seconds, fmt

CONFIGURATIONS = {
    "full system": [],
    # Line models batch at a time instead of continuously (a request waits for the running batch to come back).
    "batch at a time": [f"models.{m}.batching.continuous=false" for m in ("char", "ngram")],
    "batching off": [f"models.{m}.batching.{k}" for m in ("char", "tree") for k in ("max_batch=1", "fixed=true")],
    "caches off": ["service.cache_bytes=0", "service.approx_entries=0"],
    "fixed batch 16": [f"models.{m}.batching.{k}" for m in ("char", "tree") for k in ("max_batch=16", "fixed=true")],
}


def keystroke_latency(bench: Bench, documents: list[tuple[str, bytes]], keystrokes: int = 60) -> dict[str, float]:
    """Median latency of a completion after each keystroke, typing the same last line of a ~1 KB and a
    ~100 KB JavaScript file (one editor, one request per keystroke, each after the previous answer)."""
    text = b""
    for language, document in documents:
        if language == "javascript":
            text += document + b"\n"
        if len(text) >= 100_000:
            break
    text = text[:100_000]
    cut = text.rindex(b"\n", 0, len(text) - 200) + 1  # the line to type starts here
    line = text[cut : text.index(b"\n", cut)] if b"\n" in text[cut:] else text[cut:]
    small = text[cut - 1000 : cut]
    results = {}
    # Prediction caches off, so that every keystroke is computed; the containers' prefix state stays.
    caches_off = ["service.cache_bytes=0", "service.approx_entries=0", "service.typed_sessions=0"]
    with bench.server(caches_off, "keystrokes") as server, httpx.Client(timeout=5) as client:
        for name, before in (("1 KB", small), ("100 KB", text[:cut])):
            times = []
            for typed in range(min(keystrokes, len(line))):
                prefix = (before + line[:typed]).decode("utf-8", "ignore")
                body = {"language": "javascript", "segments": {"prefix": prefix, "suffix": "\n"}, "user": name}
                started = time.perf_counter()
                client.post(f"{server.url}/v1/completions", json=body).raise_for_status()
                times.append(1000 * (time.perf_counter() - started))
            results[name] = statistics.median(times[3:])  # the first requests read the whole window
    return results


def kill_under_load(bench: Bench, factor: float) -> dict[str, Any]:
    """Replay at `factor`; a third of the way in, SIGKILL a Char-LSTM container and time its return."""
    trace = bench.trace(factor, seed=1)
    with bench.server([], "kill") as server:
        url = server.url
        replicas = httpx.get(f"{url}/v1/models").json()["models"][0]["replicas"]
        victim = replicas[0]
        recovered: dict[str, float] = {}

        def killer() -> None:
            time.sleep(bench.warmup + bench.seconds / 3)
            os.kill(victim["pid"], signal.SIGKILL)
            killed = time.monotonic()
            while time.monotonic() - killed < 30:
                now = httpx.get(f"{url}/v1/models").json()["models"][0]["replicas"]
                if len(now) == len(replicas) and victim["pid"] not in [r["pid"] for r in now]:
                    recovered["seconds"] = time.monotonic() - killed
                    return
                time.sleep(0.02)

        thread = threading.Thread(target=killer)
        thread.start()
        outcomes = bench.measured(asyncio.run(replay(url, trace, timeout_s=5.0)))
        thread.join()
        restarts = re.findall(
            r'codecomp_container_restarts_total\{model="char"\} ([\d.]+)', httpx.get(f"{url}/metrics").text
        )
    latencies = [o.latency_s * 1000 for o in outcomes]
    return {
        "requests": len(outcomes),
        "answered": sum(o.status == 200 for o in outcomes),
        "shed_503": sum(o.status == 503 for o in outcomes),
        "within_objective": sum(o.status == 200 and o.latency_s * 1000 <= bench.objective_ms for o in outcomes),
        "max_ms": max(latencies),
        "degraded": sum(o.degraded for o in outcomes),
        "back_after_s": recovered.get("seconds"),
        "restarts_counted": float(restarts[0]) if restarts else 0.0,
    }


def overload(bench: Bench, factor: float) -> dict[str, Any]:
    summary = bench.run([], factor, "overload")
    outcomes = summary["outcomes"]
    limit_s = 1.5 * bench.objective_ms / 1000
    return {
        "rate": summary["rate"],
        "answered_within_1.5x": sum(o.status == 200 and o.latency_s <= limit_s for o in outcomes) / len(outcomes),
        "shed_503": sum(o.status == 503 for o in outcomes) / len(outcomes),
        "late_or_failed": sum(o.status not in (200, 503) or o.latency_s > limit_s for o in outcomes) / len(outcomes),
        "p99_ms": summary["p99_ms"],
    }


def cpu_per_request(bench: Bench, factor: float) -> dict[str, float]:
    """CPU milliseconds per request of each process of a fresh server (frontend, each model's containers)
    and of the load generator, replaying the trace at `factor`: where the machine's two cores go."""
    with bench.server([], f"cpu-x{factor:.3g}") as server:
        assert server.process is not None
        replicas = httpx.get(f"{server.url}/v1/models").json()["models"]
        names = {r["pid"]: m["name"] for m in replicas for r in m["replicas"]}
        processes = {server.process.pid: "frontend", **names}
        before = {pid: cpu_seconds(pid) for pid in processes}
        own = time.process_time()
        outcomes = asyncio.run(replay(server.url, bench.trace(factor), timeout_s=5.0))
        spent = {name: cpu_seconds(pid) - before[pid] for pid, name in processes.items()}
    spent["load generator"] = time.process_time() - own
    return {name: 1000 * seconds / len(outcomes) for name, seconds in spent.items()}


def cache_ceiling(bench: Bench, seconds: float = 5.0, distinct: int = 200) -> float:
    """The highest rate that holds the objective when no model runs: `distinct` requests spread over the
    trace (so over its range of file sizes), sent once to fill the exact cache, then over and over on the
    same server at doubling rates and one geometric bisection. The load generator, HTTP and the frontend
    share the machine with the models, so no configuration's capacity can exceed this here."""
    trace = bench.trace(1.0)
    requests = trace[:: max(1, len(trace) // distinct)][:distinct]

    def at(rate: float, count: int) -> list[Any]:
        return [dataclasses.replace(requests[i % len(requests)], t=i / rate) for i in range(count)]

    with bench.server([], "ceiling") as server:
        asyncio.run(replay(server.url, at(50.0, len(requests)), timeout_s=5.0))  # every answer now cached

        def meets(rate: float) -> bool:
            summary = summarize(asyncio.run(replay(server.url, at(rate, int(rate * seconds)), timeout_s=5.0)))
            ok = meets_objective(summary, bench.objective_ms)
            print(f"  {'cache ceiling':<15} {rate:7.0f} req/s  p99 {fmt(summary['p99_ms'])} ms  cache hits "
                  f"{summary['cache_hit_share']:6.1%}  {'meets' if ok else 'misses'}", flush=True)  # fmt: skip
            return ok

        rate = 100.0
        while meets(rate) and rate < 6400:
            rate *= 2
        low = rate / 2
        middle = math.sqrt(low * rate)
        return middle if meets(middle) else low


def approx_audit(bench: Bench) -> dict[str, Any]:
    """How often the approximate cache answers, and how often its answer differs from the model's."""
    trace = bench.trace(1.0, seed=2)
    with bench.server(["service.approx_audit=1.0"], "approx") as server:
        outcomes = asyncio.run(replay(server.url, trace, timeout_s=5.0))
        caches = httpx.get(f"{server.url}/v1/models").json()["caches"]
    answers = sum(len(o.cache) for o in outcomes)
    return {"audited_hits": caches["approx_audited"], "differing": caches["approx_differs"], "model_answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/small"))
    parser.add_argument("--editors", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each trial's measured trace")
    parser.add_argument("--objective-ms", type=float, default=50.0, help="as service.objective_ms in conf/serve.yaml")
    parser.add_argument("--trials", type=int, default=1, help="traces per rate, pooled (steadier p99 and capacity)")
    parser.add_argument("--quick", action="store_true", help="the full system and batching off only")
    parser.add_argument("--configuration", action="append", choices=list(CONFIGURATIONS),
                        help="only these (repeat it; the full system and batching off always run)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("overrides", nargs="*", help="for every server, e.g. models.char.checkpoint=PATH")
    args = parser.parse_args()
    documents = documents_from_corpus(args.corpus, "test")
    logs = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    bench = Bench(documents, args.editors, args.seconds, args.objective_ms, logs, args.overrides, trials=args.trials)
    print(
        f"{len(documents)} held-out files; {args.editors} editors; {args.trials} x {args.seconds:g} s trials per "
        f"rate; server logs in {logs}"
    )
    names = ["full system", "batching off"] if args.quick else list(CONFIGURATIONS)
    if args.configuration:
        names = [name for name in CONFIGURATIONS if name in {"full system", "batching off", *args.configuration}]
    capacities: dict[str, float] = {}
    base: dict[str, dict[str, Any]] = {}
    figures: dict[str, Any] = {"capacity": capacities}
    for name in names:
        capacities[name], base[name] = bench.capacity(CONFIGURATIONS[name], name)
    print(
        f"\nAt {args.editors} editors (x1), and capacity at the objective (p99 <= {args.objective_ms:g} ms, <= 5% bad):"
    )
    print(f"{'configuration':<15} {'req/s':>6} {'p50':>6} {'p95':>6} {'p99':>6} {'cache':>6} {'degr.':>6} {'shed':>6} "
          f"{'batch char/tree':>16} {'wait char':>9} {'capacity':>9} {'x batching off':>15}")  # fmt: skip
    for name in names:
        s = base[name]
        batch = "/".join(f"{s['batch'].get(m, 0):.1f}" for m in ("char", "tree"))
        ratio = capacities[name] / capacities["batching off"] if capacities["batching off"] else float("inf")
        print(f"{name:<15} {s['rate']:6.1f} {fmt(s['p50_ms'])} {fmt(s['p95_ms'])} {fmt(s['p99_ms'])} "
              f"{s['cache_hit_share']:6.1%} {s['degraded_share']:6.1%} {s['shed_share']:6.1%} {batch:>16} "
              f"{s['queue_wait_ms'].get('char', 0):6.2f} ms {capacities[name]:9.1f} {ratio:15.1f}")  # fmt: skip
    cpu = cpu_per_request(bench, 2.0)
    figures["cpu_ms_per_request_x2"] = cpu
    print("CPU per request at x2: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in cpu.items()))
    ceiling = cache_ceiling(bench)
    figures["cache_ceiling"] = ceiling
    off = capacities["batching off"]
    print(f"Ceiling with every request an exact-cache hit (no model runs): {ceiling:.0f} req/s, "
          f"{ceiling / off if off else float('inf'):.1f}x the batching-off capacity: no configuration can reach "
          f"more than that here")  # fmt: skip
    cold = base["full system"]["cold"]
    print(f"Cold sessions (each editor's first request, in the warm-up; full system): {cold['count']}, "
          f"p50 {cold['p50_ms']:.1f} ms, max {cold['max_ms']:.1f} ms, degraded {cold['degraded']:.0%}")  # fmt: skip
    keystrokes = keystroke_latency(bench, documents)
    figures["keystroke_ms"] = keystrokes
    print(f"\nPer-keystroke median latency: 1 KB file {keystrokes['1 KB']:.1f} ms, 100 KB file "
          f"{keystrokes['100 KB']:.1f} ms, ratio {keystrokes['100 KB'] / keystrokes['1 KB']:.2f}")  # fmt: skip
    capacity_factor = capacities["full system"] / base["full system"]["rate"] if base["full system"]["rate"] else 1
    base_factor = min(1.0, capacity_factor)  # at the load the system is sized for: past it requests miss anyway
    killed = kill_under_load(bench, base_factor)
    figures["sigkill"] = killed
    print(f"\nSIGKILL of a Char-LSTM container at x{base_factor:.3g} (the full system's capacity, at most x1): "
          f"{killed['answered']}/{killed['requests']} answered, {killed['shed_503']} shed with 503, "
          f"{killed['within_objective']} within {args.objective_ms:g} ms (max {killed['max_ms']:.0f} ms), "
          f"{killed['degraded']} degraded; back after {killed['back_after_s']} s; restarts counted: "
          f"{killed['restarts_counted']:g}")  # fmt: skip
    over = overload(bench, 4 * max(capacity_factor, 1 / 16))
    figures["overload_4x"] = over
    print(f"\nAt 4x capacity ({over['rate']:.0f} req/s): {over['answered_within_1.5x']:.1%} answered within "
          f"{1.5 * args.objective_ms:g} ms, {over['shed_503']:.1%} shed with 503, {over['late_or_failed']:.1%} late "
          f"or failed")  # fmt: skip
    if not args.quick:
        audit = approx_audit(bench)
        figures["approx_audit"] = audit
        print(f"\nApproximate cache at x1: {audit['audited_hits']} hits of {audit['model_answers']} model answers; "
              f"{audit['differing']} differ from the model's own answer")  # fmt: skip
    if args.json:
        figures["base"] = {k: {f: v for f, v in s.items() if f != "outcomes"} for k, s in base.items()}
        args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
