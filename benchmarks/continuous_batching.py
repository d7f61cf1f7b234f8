"""Continuous batching against batch at a time, end to end, in the same run: queueing delay and latency.

    python -m benchmarks.continuous_batching [--corpus data/small] [--editors 32] [--seconds 12] [--factors 1 2]

The trials of `benchmarks.serve_load` (a fresh `codecomp-serve` per trial, simulated editors typing held-out files,
the warm-up left out), for its configurations "full system" (line models batch continuously: a request joins the
rows decoding at the next step) and "batch at a time" (`batching.continuous=false`: a request waits for the running
batch to come back), alternating at each rate factor so that both see the machine alike. Per trial: the mean time
a request waits in the frontend's queue (Char-LSTM, n-gram), the mean rows per batch (in flight, when continuous),
p50 and p99 end-to-end latency, and the share degraded, shed or failed. `serve_load` reports their capacities.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.loadgen.editors import documents_from_corpus
from benchmarks.loadgen.trials import Bench, bad_share, fmt
from benchmarks.serve_load import CONFIGURATIONS

COMPARED = ("full system", "batch at a time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/small"))
    parser.add_argument("--editors", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each trial's measured trace")
    parser.add_argument("--objective-ms", type=float, default=50.0, help="as service.objective_ms in conf/serve.yaml")
    parser.add_argument("--factors", type=float, nargs="*", default=[1.0], help="request rates, x the editors' own")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("overrides", nargs="*", help="for every server, e.g. models.char.checkpoint=PATH")
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="continuous-bench-"))
    documents = documents_from_corpus(args.corpus, "test")
    bench = Bench(documents, args.editors, args.seconds, args.objective_ms, logs, args.overrides)
    print(f"{len(documents)} held-out files; {args.editors} editors; {args.seconds:g} s trials; server logs in {logs}")
    rows = []
    for factor in args.factors:
        for name in COMPARED:
            summary = bench.run(CONFIGURATIONS[name], factor, name)
            waits, batch = summary["queue_wait_ms"], summary["batch"]
            rows.append({"configuration": name, "factor": factor, "rate": summary["rate"],
                         "queue_wait_ms": waits, "batch": batch, "p50_ms": summary["p50_ms"],
                         "p99_ms": summary["p99_ms"], "bad_share": bad_share(summary),
                         "degraded_share": summary["degraded_share"]})  # fmt: skip
    print(f"\n{'configuration':<16} {'rate':>5} {'req/s':>6} {'wait char':>9} {'wait ngram':>10} {'rows char':>9} "
          f"{'p50':>6} {'p99':>6} {'bad':>6}")  # fmt: skip
    for row in rows:
        waits, batch = row["queue_wait_ms"], row["batch"]
        print(f"{row['configuration']:<16} x{row['factor']:<4g} {row['rate']:6.1f} {waits.get('char', 0):6.2f} ms "
              f"{waits.get('ngram', 0):7.2f} ms {batch.get('char', 0):9.1f} {fmt(row['p50_ms'])} {fmt(row['p99_ms'])} "
              f"{row['bad_share']:6.1%}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
