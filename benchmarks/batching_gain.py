"""What batching buys each model container, honestly: throughput at its batching objective, batched against batch 1.

    python -m benchmarks.batching_gain [--corpus data/small] [--seconds 2] [--models char tree ngram] [--device cpu]

Each model of conf/serve.yaml is loaded as its container loads it (the family's completer with the model's
`settings`, the container's torch threads, its warm-up) and driven in-process through the container's message core
(`ContainerCore`: Predict frames in, Result frames out), with the requests of simulated editors typing the held-out
files of the corpus (`benchmarks.loadgen.editors`: whole documents, sessions and all; the Tree-LSTM only where a
token is typed, as its trigger says), the model's own options, and budgets that no batch reaches (the work is
whole, never cut by a deadline). A fresh completer per run, so no run finds another's prefix states; each first
answers the trace's first requests unmeasured, so that the measured ones find sessions as a server at work has them
(a Char-LSTM session reads the bytes typed since its last request, not its whole prefix).

For each batch size B (1, 2, 4, ... up to the model's `max_batch`), for `--seconds`:
- batch at a time: batches of B consecutive requests of the trace, each answered whole; latency per batch;
- continuous (line models): B rows in flight, a new request joining at the next step as soon as one leaves;
  latency per request.
Throughput in requests/s and sequences/s (the rows a model computes per request: a line model's `beam`
hypotheses, the Tree-LSTM's one hole). The best B within the objective is the one of highest throughput whose
p90 latency stays within the model's `batching.objective_ms`, as the AIMD controller holds it; the gain is its
throughput over batch 1's. For the Char-LSTM, where the time goes at each B (batch at a time): reading prefixes
when rows join (a session's last few bytes are read in the decoding's steps), the LSTM step, and the beam search's
own work, per step and per hypothesis row.
Device: CUDA when `torch.cuda.is_available()`, else CPU (`--device` forces one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from benchmarks.loadgen.editors import TraceConfig, build_trace, documents_from_corpus
from codecomp.checkpoint import load
from codecomp.inference.families import load_completer
from codecomp.serve import protocol
from codecomp.serve.container.core import ContainerCore
from codecomp.serve.container.process import warm_up
from codecomp.serve.container.runners import CompleterRunner, runner_for
from codecomp.serve.protocol import Options, WireRequest
from codecomp.text.tokens import at_token

BUDGET_MS = 600_000.0  # no batch here comes near it: every answer is whole
SETTLED = 128  # the trace's first requests (4 per editor) are answered unmeasured: a server at work has sessions


@dataclasses.dataclass
class Model:
    name: str
    checkpoint: str
    settings: dict[str, Any]
    options: Options
    objective_ms: float
    max_batch: int
    threads: int
    trigger: str


@dataclasses.dataclass
class Run:
    """One mode at one size: how many requests in how long, and the latencies (per batch, or per request)."""

    mode: str
    size: int
    requests: int
    seconds: float
    latencies_ms: list[float]
    sequences_per_request: int
    profile: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def p50(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.latencies_ms, 90))


def served_models(path: Path) -> dict[str, Model]:
    models = {}
    for name, m in yaml.safe_load(path.read_text())["models"].items():
        models[name] = Model(name, m["checkpoint"], m.get("settings", {}), Options(**m["options"]),
                             m["batching"]["objective_ms"], m["batching"]["max_batch"], m.get("threads", 1),
                             m.get("trigger", "always"))  # fmt: skip
    return models


def trace_requests(documents: list[tuple[str, bytes]], trigger: str, count: int) -> list[WireRequest]:
    """The requests of 32 editors in the order they would arrive (sessions as the service names them)."""
    trace = build_trace(documents, TraceConfig(editors=32, duration_s=count / 20, seed=0))
    requests = []
    for r in trace:
        prefix = r.prefix.encode()
        if trigger == "token" and not at_token(prefix):
            continue
        session = f"{r.user}\0doc{r.document}\0{r.language}"
        requests.append(WireRequest(prefix, r.suffix.encode(), r.language, session, BUDGET_MS))
    return requests[:count]


def frames(requests: list[WireRequest], size: int, options: Options) -> Iterator[bytes]:
    """Predict frames of `size` consecutive requests each, the trace wrapping around if it runs out."""
    for batch, start in enumerate(range(0, 1 << 40, size)):
        chosen = [requests[i % len(requests)] for i in range(start, start + size)]
        yield protocol.pack(protocol.Predict(batch=batch, requests=chosen, options=options))


def batch_at_a_time(runner: CompleterRunner, requests: list[WireRequest], size: int, model: Model,
                    seconds: float, sequences: int, clock: Callable[[], float]) -> Run:  # fmt: skip
    core = ContainerCore(runner, model.name, runner.version)
    latencies, done, started = [], 0, clock()
    for frame in frames(requests, size, model.options):
        before = clock()
        reply = protocol.unpack(core.handle(frame, time.monotonic()) or b"")
        latencies.append(1000 * (clock() - before))
        if not isinstance(reply, protocol.Result):
            raise RuntimeError(f"{model.name}: {reply}")
        done += size
        if clock() - started >= seconds and len(latencies) >= 3:
            break
    return Run("batch", size, done, clock() - started, latencies, sequences)


def continuous(runner: CompleterRunner, requests: list[WireRequest], size: int, model: Model,
               seconds: float, sequences: int, clock: Callable[[], float]) -> Run:  # fmt: skip
    """`size` rows in flight: a new request joins at the next step as soon as one leaves."""
    core = ContainerCore(runner, model.name, runner.version)
    arrivals = frames(requests, 1, model.options)
    sent: dict[int | None, float] = {}  # batch -> when it was sent

    def send() -> None:
        frame = next(arrivals)
        sent[_batch(frame)] = clock()
        core.receive(frame, time.monotonic())

    latencies: list[float] = []
    started = clock()
    for _ in range(size):
        send()
    while clock() - started < seconds or len(latencies) < 3 * size:
        for reply in core.step():
            latencies.append(1000 * (clock() - sent.pop(_batch(reply))))
            send()
    return Run("continuous", size, len(latencies), clock() - started, latencies, sequences)


def _batch(frame: bytes) -> int | None:
    message = protocol.unpack(frame)
    if not isinstance(message, protocol.Predict | protocol.Result):
        raise RuntimeError(f"unexpected {message}")
    return message.batch


class Timed:
    """Wraps a callable and adds up its wall time and calls."""

    def __init__(self, work: Callable[..., Any], clock: Callable[[], float], rows: Callable[..., int] | None = None):
        self.work, self.clock, self.rows = work, clock, rows
        self.seconds, self.calls, self.row_total = 0.0, 0, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = self.clock()
        try:
            return self.work(*args, **kwargs)
        finally:
            self.seconds += self.clock() - started
            self.calls += 1
            self.row_total += 0 if self.rows is None else self.rows(*args, **kwargs)


def profiled(run: Callable[[], Run], completer: Any, clock: Callable[[], float]) -> Run:
    """Run with the Char-LSTM's prefix reading and LSTM step timed: where a batch's time goes."""
    read = Timed(completer.resume, clock)  # what a decoding reads when rows join (its last bytes: in its steps)
    step = Timed(completer.model.step, clock, rows=lambda tokens, state: len(tokens))
    completer.resume, completer.model.step = read, step
    result = run()
    total = sum(result.latencies_ms) / 1000
    steps = max(1, step.calls)
    result.profile = {
        "steps_per_batch": step.calls / len(result.latencies_ms),
        "rows_per_step": step.row_total / steps,
        "lstm_step_ms": 1000 * step.seconds / steps,
        "search_step_ms": 1000 * (total - read.seconds - step.seconds) / steps,
        "search_per_row_us": 1e6 * (total - read.seconds - step.seconds) / max(1, step.row_total),
        "read_per_request_ms": 1000 * read.seconds / result.requests,
        "share_lstm": step.seconds / total,
        "share_read": read.seconds / total,
    }
    return result


def measure(model: Model, documents: list[tuple[str, bytes]], device: torch.device, seconds: float,
            clock: Callable[[], float]) -> list[Run]:  # fmt: skip
    torch.set_num_threads(model.threads)  # as the container runs it
    loaded = load(model.checkpoint)
    line = loaded.family != "tree_lstm"
    requests = trace_requests(documents, model.trigger, 6000)
    sequences = model.options.beam if line else 1
    sizes = [1 << i for i in range(model.max_batch.bit_length()) if 1 << i <= model.max_batch]
    runs = []
    for size in sizes:  # the modes side by side at each size, so that both see the machine alike
        for mode in ("batch", "continuous") if line else ("batch",):
            runner = runner_for(load_completer(loaded, device=device, **model.settings), loaded.version)
            warm_up(runner, size, model.options)  # as the container does before its hello
            for start in range(0, SETTLED, 32):  # the editors' first requests: sessions in their steady state
                chunk = requests[start : start + 32]
                runner.predict(chunk, [time.monotonic() + BUDGET_MS / 1000] * len(chunk), model.options)
            drive = batch_at_a_time if mode == "batch" else continuous
            work = lambda: drive(runner, requests[SETTLED:], size, model, seconds, sequences, clock)  # noqa: B023, E731
            profile = loaded.family == "char_lstm" and mode == "batch"
            run = profiled(work, runner.completer, clock) if profile else work()
            runs.append(run)
            print(f"  {model.name:<6} {mode:<10} {size:>3}  {run.per_second:8.1f} req/s  "
                  f"{run.per_second * sequences:8.1f} seq/s  latency p50 {run.p50:7.1f} p90 {run.p90:7.1f} ms",
                  flush=True)  # fmt: skip
    return runs


def best_within(runs: list[Run], mode: str, objective_ms: float) -> Run | None:
    fitting = [r for r in runs if r.mode == mode and r.p90 <= objective_ms]
    return max(fitting, key=lambda r: r.per_second, default=None)


def report(model: Model, runs: list[Run]) -> dict[str, Any]:
    one = next(r for r in runs if r.mode == "batch" and r.size == 1)
    summary: dict[str, Any] = {"objective_ms": model.objective_ms, "batch_1_req_s": one.per_second}
    for mode in sorted({r.mode for r in runs}):
        best = best_within(runs, mode, model.objective_ms)
        if best is None:
            print(f"{model.name:<6} {mode:<10} no size meets the {model.objective_ms:g} ms objective")
            continue
        gain = best.per_second / one.per_second
        seq_s = best.per_second * best.sequences_per_request
        summary[mode] = {"size": best.size, "req_s": best.per_second, "seq_s": seq_s, "p90_ms": best.p90, "gain": gain}
        print(f"{model.name:<6} {mode:<10} batch 1: {one.per_second:7.1f} req/s; best within "
              f"{model.objective_ms:g} ms: B={best.size:<3} {best.per_second:7.1f} req/s ({seq_s:7.1f} seq/s, "
              f"p90 {best.p90:5.1f} ms): {gain:5.1f}x")  # fmt: skip
    return summary


def print_profile(runs: list[Run]) -> None:
    print("\nChar-LSTM, batch at a time, where the time goes (per decoding step unless said):")
    print(f"{'B':>3} {'steps/batch':>11} {'rows/step':>9} {'LSTM ms':>8} {'search ms':>9} {'search us/row':>13} "
          f"{'read ms/req':>11} {'LSTM':>5} {'read':>5}")  # fmt: skip
    for run in runs:
        if run.mode == "batch" and run.profile:
            p = run.profile
            print(f"{run.size:>3} {p['steps_per_batch']:11.1f} {p['rows_per_step']:9.1f} {p['lstm_step_ms']:8.3f} "
                  f"{p['search_step_ms']:9.3f} {p['search_per_row_us']:13.1f} {p['read_per_request_ms']:11.2f} "
                  f"{p['share_lstm']:5.0%} {p['share_read']:5.0%}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/small"))
    parser.add_argument("--config", type=Path, default=Path("conf/serve.yaml"))
    parser.add_argument("--models", nargs="*", help="model names of the config (default: all)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per mode and batch size")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this process's CPU time instead of wall time (one torch thread: a busy machine's "
                             "estimate of an idle one's wall time; on a CPU only)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    documents = documents_from_corpus(args.corpus, "test")
    models = served_models(args.config)
    names = args.models or list(models)
    print(f"{len(documents)} held-out files; device {device}; {args.seconds:g} s ({args.clock}) per mode and size")
    figures = {}
    for name in names:
        model = models[name]
        if not Path(model.checkpoint).exists():
            print(f"{name}: no checkpoint at {model.checkpoint}; skipped")
            continue
        runs = measure(model, documents, device, args.seconds, clock)
        figures[name] = report(model, runs)
        if any(r.profile for r in runs):
            print_profile(runs)
            figures[name]["profile"] = {r.size: r.profile for r in runs if r.profile}
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "clock": args.clock, **figures}, indent=1) + "\n")


if __name__ == "__main__":
    main()
