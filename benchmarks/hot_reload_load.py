"""A hot reload under the editors' load: failed requests, requests past their deadline, p99 during the swap.

    python -m benchmarks.hot_reload_load [--corpus data/small] [--editors 32] [--seconds 30] [--to CKPT] [overrides]

One fresh `codecomp-serve` (conf/serve.yaml's models and checkpoints) takes the simulated editors of
`benchmarks/serve_load.py` (its `Bench`: 32 editors typing held-out files, replayed open-loop after a 3 s
warm-up left out of the figures). A third of the way into the measured part, the Char-LSTM is reloaded
(`POST /v1/admin/reload`) to a re-saved copy of its checkpoint: the same weights under another version, so
the figures show what the swap costs and nothing else (`--to` reloads to another checkpoint instead).
Requests are split by when they were sent: before the reload; during it, from the request to its answer
(the new containers loading and warming up beside the old ones, the switch, the old ones draining); after it.
A request fails when it is not answered with 200 (503 included); it is past its deadline when answered
later than the objective, as the client measures it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.loadgen.editors import documents_from_corpus
from benchmarks.loadgen.replay import Outcome, replay, summarize
from benchmarks.loadgen.trials import Bench, fmt

DEFAULT_CHAR = Path("checkpoints/char_lstm_quick/best.ckpt")  # conf/serve.yaml's


def resaved_copy(source: Path, folder: Path) -> Path:
    """The checkpoint with one more entry: the same weights, another file, so another version."""
    import torch  # here: only this step needs it

    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    checkpoint["resaved_at"] = time.time()
    target = folder / f"{source.stem}-resaved.ckpt"
    torch.save(checkpoint, target)
    return target


def window(outcomes: list[Outcome], objective_ms: float) -> dict[str, Any]:
    """Failures, deadline misses and latency percentiles of the requests sent in one window."""
    summary = summarize(outcomes)
    return {
        "requests": len(outcomes),
        "failed": sum(o.status != 200 for o in outcomes),
        "past_deadline": sum(o.status == 200 and o.latency_s * 1000 > objective_ms for o in outcomes),
        "degraded": summary["degraded"],
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "max_ms": max((o.latency_s * 1000 for o in outcomes), default=None),
    }


def reload_under_load(bench: Bench, target: Path, factor: float = 1.0) -> dict[str, Any]:
    """Replay the trace at `factor`; a third of the way into the measured part, reload `char` to `target`."""
    trace = bench.trace(factor, seed=3)
    with bench.server([], "hot-reload") as server:
        url = server.url
        before = next(m for m in httpx.get(f"{url}/v1/models").json()["models"] if m["name"] == "char")
        swap: dict[str, Any] = {}
        origin = time.monotonic()  # the replay starts its clock a moment later: windows are a few ms early

        def reloader() -> None:
            time.sleep(bench.warmup + bench.seconds / 3)
            swap["start_s"] = time.monotonic() - origin
            response = httpx.post(f"{url}/v1/admin/reload", json={"model": "char", "checkpoint": str(target)},
                                  timeout=600)  # fmt: skip
            swap["end_s"] = time.monotonic() - origin
            swap["status"], swap["answer"] = response.status_code, response.json()

        thread = threading.Thread(target=reloader)
        thread.start()
        outcomes = bench.measured(asyncio.run(replay(url, trace, timeout_s=5.0)))
        thread.join()
        after = next(m for m in httpx.get(f"{url}/v1/models").json()["models"] if m["name"] == "char")
    if swap["status"] != 200:
        raise RuntimeError(f"the reload was refused: {swap['answer']}")
    start, end = swap["start_s"], swap["end_s"]
    windows = {
        "before": [o for o in outcomes if o.scheduled_s < start],
        "during": [o for o in outcomes if start <= o.scheduled_s <= end],
        "after": [o for o in outcomes if o.scheduled_s > end],
    }
    return {
        "swap_s": end - start,
        "ended_before_the_replay": end <= bench.warmup + bench.seconds,
        "version": {"before": before["version"], "after": after["version"]},
        "old_pids_left": sorted({r["pid"] for r in before["replicas"]} & {r["pid"] for r in after["replicas"]}),
        "all": window(outcomes, bench.objective_ms),
        **{name: window(part, bench.objective_ms) for name, part in windows.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/small"))
    parser.add_argument("--editors", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the measured trace")
    parser.add_argument("--objective-ms", type=float, default=50.0, help="as service.objective_ms in conf/serve.yaml")
    parser.add_argument("--factor", type=float, default=1.0, help="request rate, times the editors' human speed")
    parser.add_argument(
        "--to", type=Path, help="reload to this checkpoint (default: a re-saved copy of the served one)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("overrides", nargs="*", help="for the server, e.g. models.char.replicas=2")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="hot-reload-bench-"))
    served = next((Path(o.split("=", 1)[1]) for o in args.overrides if o.startswith("models.char.checkpoint=")),
                  DEFAULT_CHAR)  # fmt: skip
    target = args.to or resaved_copy(served, logs)
    bench = Bench(documents_from_corpus(args.corpus, "test"), args.editors, args.seconds, args.objective_ms, logs,
                  args.overrides)  # fmt: skip
    print(f"{args.editors} editors x{args.factor:g}, {args.seconds:g} s measured; char reloaded to {target} a third "
          f"of the way in; server log in {logs}", flush=True)  # fmt: skip
    figures = reload_under_load(bench, target, args.factor)
    print(f"swap: {figures['swap_s']:.2f} s (request to answer: new containers up, switch, old ones drained), "
          f"version {figures['version']['before'][:8]} -> {figures['version']['after'][:8]}; old containers left: "
          f"{len(figures['old_pids_left'])}")  # fmt: skip
    if not figures["ended_before_the_replay"]:
        print("  (the swap outlasted the replay: run with more --seconds for an 'after' window)")
    print(
        f"{'sent':<8} {'requests':>8} {'failed':>7} {'late':>6} {'degr.':>6} {'p50 ms':>6} {'p99 ms':>6} {'max ms':>6}"
    )
    for name in ("before", "during", "after", "all"):
        w = figures[name]
        print(f"{name:<8} {w['requests']:8d} {w['failed']:7d} {w['past_deadline']:6d} {w['degraded']:6d} "
              f"{fmt(w['p50_ms'])} {fmt(w['p99_ms'])} {fmt(w['max_ms'])}")  # fmt: skip
    print(f"late: answered past the {args.objective_ms:g} ms objective (client-measured); failed: not 200 (503 too)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
