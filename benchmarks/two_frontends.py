"""Two frontends sharing their selection state through one Redis, against one frontend: capacity at the
latency objective side by side, on the same trace.

    python -m benchmarks.two_frontends [--corpus data/small] [--editors 32] [--seconds 15] [--objective-ms 50]
        [--start 1] [--configuration "1 frontend" --configuration "2 frontends" ...] [overrides ...]

Each trial starts a `redis-server` of its own on a free loopback port (append-only file, fsync every second:
Redis's usual setting) and one or two `codecomp-serve` frontends on it (store.backend=redis), each with its own
model containers; the load generator (`benchmarks/loadgen/`) splits the editors between the frontends, each
editor's session always going to the same one, as a load balancer with session affinity would. The capacity
search, warm-up and objective are those of `benchmarks.serve_load` (p99 end-to-end latency within the
objective, at most 5% of requests degraded, shed or failed; on a slow machine, `--objective-ms 100
service.objective_ms=100` as there). Configurations:

- 1 frontend: one frontend, one container per model;
- 2 frontends: two frontends, each with one container per model (twice the processes);
- 2 replicas: one frontend, two containers per model (as many containers as two frontends, one frontend).

Every process wants a core of its own under load (each container runs one thread), and the load generator and
Redis share the same machine, so where there are fewer cores than that a second frontend can hardly add capacity:
the output gives the processes against the cores, and the cores each kind of process kept busy at the
starting rate (x1: the editors' own), and those the rest of the machine took meanwhile (other work on it).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from omegaconf import DictConfig, OmegaConf

from benchmarks.loadgen.editors import documents_from_corpus
from benchmarks.loadgen.launch import ServerProcess
from benchmarks.loadgen.redis_process import NOT_INSTALLED, RedisProcess, installed
from benchmarks.loadgen.trials import Bench, cpu_seconds, fmt

# Configuration: (frontends, whether each model gets two containers).
CONFIGURATIONS = {"1 frontend": (1, False), "2 frontends": (2, False), "2 replicas": (1, True)}


@dataclasses.dataclass
class SharedStateBench(Bench):
    """A `Bench` whose trials run `frontends` frontends on one Redis of their own, the editors split between them."""

    frontends: int = 1
    # Per trial (its name): how many processes of each kind, and the cores each kind kept busy.
    processes: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    cores: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    @contextlib.contextmanager
    def serving(self, overrides: Sequence[str], name: str) -> Iterator[list[str]]:
        """A Redis and `frontends` frontends on it, by URL; records the trial's processes and cores busy."""
        folder = self.logs / re.sub(r"\W+", "-", name)
        folder.mkdir()
        redis = RedisProcess(folder, appendfsync="everysec")
        redis.start()
        try:
            with contextlib.ExitStack() as stack:
                servers = [
                    stack.enter_context(self.server([*overrides, *shared_store(folder, i, redis.url)], f"{name}-{i}"))
                    for i in range(self.frontends)
                ]
                kinds = process_kinds(servers, redis)
                before, machine = busy_seconds(kinds), machine_busy_seconds()
                started, own = time.monotonic(), time.process_time()
                yield [server.url for server in servers]
                wall, after = time.monotonic() - started, busy_seconds(kinds)
                cores = {kind: sum(after[p] - before[p] for p in kinds[kind] if p in after) / wall for kind in kinds}
                cores["load generator"] = (time.process_time() - own) / wall
                # Whatever else ran meanwhile: on a shared machine, the cores the trial did not have.
                cores["rest of the machine"] = (machine_busy_seconds() - machine) / wall - sum(cores.values())
                self.processes[name] = {kind: len(pids) for kind, pids in kinds.items()}
                self.cores[name] = cores
        finally:
            redis.kill()


def shared_store(folder: Path, index: int, redis_url: str) -> list[str]:
    """Overrides for frontend `index`: the shared Redis store, and a local buffer and run folder of its own."""
    return ["store.backend=redis", f"store.redis_url={redis_url}", f"store_path={folder / f'buffer-{index}.sqlite'}",
            f"hydra.run.dir={folder / f'run-{index}'}"]  # fmt: skip


def process_kinds(servers: Sequence[ServerProcess], redis: RedisProcess) -> dict[str, list[int]]:
    """The pids of the frontends, of their model containers and of Redis."""
    kinds: dict[str, list[int]] = {"frontends": [], "containers": [], "redis": []}
    for server in servers:
        assert server.process is not None
        kinds["frontends"].append(server.process.pid)
        models = httpx.get(f"{server.url}/v1/models").json()["models"]
        kinds["containers"] += [replica["pid"] for model in models for replica in model["replicas"]]
    assert redis.process is not None
    kinds["redis"].append(redis.process.pid)
    return kinds


def busy_seconds(kinds: dict[str, list[int]]) -> dict[int, float]:
    """CPU seconds so far of each process still alive (a container killed and restarted is left out)."""
    seconds = {}
    for pid in (pid for pids in kinds.values() for pid in pids):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            seconds[pid] = cpu_seconds(pid)
    return seconds


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (Linux /proc/stat: all but idle and iowait)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def served_models(extra: Sequence[str]) -> list[str]:
    """The models conf/serve.yaml serves, less those the overrides remove (`~models.ngram`)."""
    config = OmegaConf.load(Path("conf/serve.yaml"))
    assert isinstance(config, DictConfig)
    return [str(name) for name in config.models if f"~models.{name}" not in extra]


def per_frontend(outcomes: Sequence[Any]) -> str:
    """Requests and p99 of the answered ones, per frontend: the split is even and neither one lags."""
    by_frontend: dict[int, list[Any]] = collections.defaultdict(list)
    for outcome in outcomes:
        by_frontend[outcome.frontend].append(outcome)
    parts = []
    for index, mine in sorted(by_frontend.items()):
        latencies = [o.latency_s * 1000 for o in mine if o.answered]
        p99 = float(np.percentile(latencies, 99)) if latencies else None
        parts.append(f"frontend {index}: {len(mine)} requests, p99 {fmt(p99).strip()} ms")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/small"))
    parser.add_argument("--editors", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each trial's measured trace")
    parser.add_argument("--objective-ms", type=float, default=50.0, help="as service.objective_ms in conf/serve.yaml")
    parser.add_argument("--start", type=float, default=1.0, help="rate factor the capacity search starts from")
    parser.add_argument("--configuration", action="append", choices=list(CONFIGURATIONS), dest="configurations",
                        help="run only this one (repeat for several); all by default")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("overrides", nargs="*", help="for every server, e.g. service.objective_ms=100")
    args = parser.parse_args()
    args.configurations = args.configurations or list(CONFIGURATIONS)
    if not installed():
        parser.exit(1, f"{NOT_INSTALLED}\n")
    documents = documents_from_corpus(args.corpus, "test")
    logs = Path(tempfile.mkdtemp(prefix="two-frontends-"))
    base = SharedStateBench(documents, args.editors, args.seconds, args.objective_ms, logs, args.overrides)
    two_replicas = [f"models.{model}.replicas=2" for model in served_models(args.overrides)]
    print(f"{len(documents)} held-out files; {args.editors} editors; {args.seconds:g} s trials; selection state in "
          f"Redis; server logs in {logs}")  # fmt: skip
    capacities: dict[str, float] = {}
    first: dict[str, dict[str, Any]] = {}
    benches: dict[str, SharedStateBench] = {}
    for name in args.configurations:
        frontends, doubled = CONFIGURATIONS[name]
        benches[name] = bench = dataclasses.replace(base, frontends=frontends, processes={}, cores={})
        capacities[name], first[name] = bench.capacity(two_replicas if doubled else [], name, args.start)
    figures = report(args, benches, capacities, first)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n")


def report(
    args: argparse.Namespace,
    benches: dict[str, SharedStateBench],
    capacities: dict[str, float],
    first: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Print the configurations side by side and the CPU budget; returns the figures."""
    cpus = len(os.sched_getaffinity(0))
    reference = capacities.get("1 frontend")
    x = f"x{args.start:.3g}"  # the first trial of each search, at the starting rate
    print(f"\nAt {args.editors} editors ({x}), and capacity at the objective (p99 <= {args.objective_ms:g} ms, "
          f"<= 5% bad), on the same trace:")  # fmt: skip
    print(f"{'configuration':<13} {'processes':>9} {'req/s':>6} {'p50':>6} {'p99':>6} {'cache':>6} {'bad':>6} "
          f"{'capacity':>9} {'x 1 frontend':>13}")  # fmt: skip
    figures: dict[str, Any] = {"cpus": cpus, "first_factor": args.start, "configurations": {}}
    for name in args.configurations:
        s, trial = first[name], f"{name}-{x}"
        counts = benches[name].processes.get(trial, {})
        processes = sum(counts.values()) + 1  # and the load generator
        bad = (s["degraded"] + s["shed"] + s["errors"]) / max(1, s["count"])
        ratio = f"{capacities[name] / reference:13.2f}" if reference else f"{'-':>13}"
        print(f"{name:<13} {processes:>9} {s['rate']:6.1f} {fmt(s['p50_ms'])} {fmt(s['p99_ms'])} "
              f"{s['cache_hit_share']:6.1%} {bad:6.1%} {capacities[name]:9.1f} {ratio}")  # fmt: skip
        figures["configurations"][name] = {
            "capacity": capacities[name],
            "processes": counts,
            "cores_busy_first": benches[name].cores.get(trial, {}),
            "first": {k: v for k, v in s.items() if k not in ("outcomes", "cold")},
        }
    print(f"\nCPU budget: {cpus} cores. Under load each frontend and each model container wants a core of its own "
          f"(one thread per container), and Redis and the load generator run here too:")  # fmt: skip
    for name in args.configurations:
        trial = f"{name}-{x}"
        counts, cores = benches[name].processes.get(trial, {}), benches[name].cores.get(trial, {})
        busy = ", ".join(f"{kind} {used:.2f}" for kind, used in cores.items())
        print(f"  {name:<13} {counts.get('frontends', 0)} frontend(s) + {counts.get('containers', 0)} containers + "
              f"Redis + load generator = {sum(counts.values()) + 1} processes; cores busy at {x}: {busy} "
              f"(total {sum(cores.values()):.2f} of {cpus})")  # fmt: skip
        if CONFIGURATIONS[name][0] > 1:
            print(f"  {'':<13} split at {x}: {per_frontend(first[name]['outcomes'])}")
    return figures


if __name__ == "__main__":
    main()
