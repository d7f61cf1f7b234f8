"""The frontend's CPU per request, with model containers that cost no CPU: what the HTTP process itself spends.

    python -m benchmarks.front_cpu [--corpus data/small] [--editors 32] [--seconds 10] [--factor 2]
        [--batch-ms 2] [--profile PATH] [overrides of conf/serve.yaml ...]

Three processes share the machine. The frontend is codecomp-serve's own process (HTTP app, service,
dispatch; composed from conf/serve.yaml with the same overrides `codecomp-serve` takes), with its ZeroMQ
router. Stand-in containers, one per configured model, all in a second process, answer each batch with
fixed candidates after sleeping `--batch-ms` (time without CPU, so batches form as they do in front of
real models) through the real `ContainerCore`. The load generator here replays simulated editors typing
the corpus's held-out files (`benchmarks/loadgen`) at `--factor` times their typing rate.

The figure is the frontend process's user + system CPU time during the replay divided by the requests
replayed: HTTP parsing and replies, validation, caches, selection, batching, RPC encoding, and the
heartbeats it hears meanwhile. `serve_load`'s cpu_per_request is the same figure in front of the real
models (their batches, hence the frontend's work per request, differ somewhat). With `--profile PATH`
the frontend runs under py-spy, which writes its samples there (raw collapsed stacks) and the most
costly functions are printed; only the thread holding the GIL is sampled (`--gil`), so the shares are of
the Python work, not of waits (an idle thread pool, the event loop's poll).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.loadgen.editors import TraceConfig, build_trace, documents_from_corpus, scale_trace
from benchmarks.loadgen.launch import free_port, wait_healthy
from benchmarks.loadgen.replay import replay, summarize
from benchmarks.loadgen.trials import cpu_seconds


def compose_config(overrides: list[str], store_path: str) -> Any:
    """conf/serve.yaml with `overrides`, as the typed `ServerConfig` codecomp-serve would run."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from codecomp import CONFIG_DIR
    from codecomp.serve.api.config import register_schema

    register_schema()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = OmegaConf.to_object(compose(config_name="serve", overrides=[*overrides, f"store_path={store_path}"]))
    return config


def run_frontend(port: int, address: str, overrides: list[str], store_path: str) -> None:
    """The frontend process: the app and everything behind it, waiting for containers at `address`."""
    import uvicorn

    from codecomp.serve.api.app import create_app
    from codecomp.serve.api.server import Server
    from codecomp.serve.dispatch.transport import ZmqRouter

    config = compose_config(overrides, store_path)
    server = Server(config, transport=ZmqRouter(address), supervise=False)
    uvicorn.run(create_app(server), host="127.0.0.1", port=port, log_level="warning")


class InstantRunner:
    """Answers every request of a batch with `options.k` fixed candidates, at no CPU cost worth the name."""

    family = "stand-in"
    version = "stand-in"

    def predict(self, requests: list[Any], deadlines: list[float], options: Any) -> list[list[Any]]:
        from codecomp.serve.protocol import WireCandidate

        return [[WireCandidate(b"value_%d);" % i, -0.5 - i) for i in range(options.k)] for _ in requests]


def run_containers(address: str, models: list[str], batch_ms: float, heartbeat_s: float = 0.2) -> None:
    """The stand-in containers: one thread (and DEALER socket) per model, sleeping `batch_ms` per batch."""
    import zmq

    from codecomp.serve import protocol
    from codecomp.serve.container.core import ContainerCore

    context = zmq.Context()

    def serve(model: str) -> None:
        core = ContainerCore(InstantRunner(), model, InstantRunner.version)
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, f"{model}-stand-in".encode())
        sock.connect(address)
        sock.send(core.hello())
        last_beat = time.monotonic()
        while True:
            if sock.poll(int(heartbeat_s * 1000)):
                frame = sock.recv()
                received = time.monotonic()
                time.sleep(batch_ms / 1000)
                reply = core.handle(frame, received)
                if reply is None:
                    return
                sock.send(reply)
            if time.monotonic() - last_beat >= heartbeat_s:
                sock.send(core.hello(protocol.Heartbeat))
                last_beat = time.monotonic()

    threads = [threading.Thread(target=serve, args=(model,), daemon=True) for model in models]
    for thread in threads:
        thread.start()
    with contextlib.suppress(KeyboardInterrupt):  # how the benchmark stops it
        for thread in threads:
            thread.join()


def hottest(raw: Path, top: int = 25) -> list[tuple[str, float, float]]:
    """From py-spy's raw samples (`frame;frame;... count` per line): per function, the share of samples in which it
    is on the stack (inclusive) and at its top (self), the `top` most inclusive first. Frames name codecomp and
    its libraries (`function (module.py:line)` shortened to `function (module.py)`)."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    return [(frame, n / total, own[frame] / total) for frame, n in inclusive.most_common(top)] if total else []


def _short(frame: str) -> str:
    """`handle (codecomp/serve/x.py:12)` -> `handle (serve/x.py)`: the function and its file's last two parts."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(Path(path).parts[-2:])})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/small"))
    parser.add_argument("--editors", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the replayed trace")
    parser.add_argument("--factor", type=float, default=2.0, help="times the editors' typing rate")
    parser.add_argument("--batch-ms", type=float, default=2.0, help="the stand-in containers' time per batch")
    parser.add_argument("--profile", type=Path, help="run the frontend under py-spy; its raw samples go here")
    parser.add_argument("--role", choices=["front", "containers"], help=argparse.SUPPRESS)  # the child processes
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="of conf/serve.yaml, as codecomp-serve takes them")
    args = parser.parse_args()
    if args.role == "front":
        run_frontend(args.port, args.address, args.overrides, args.store)
        return
    if args.role == "containers":
        run_containers(args.address, args.overrides, args.batch_ms)
        return

    documents = documents_from_corpus(args.corpus, "test")
    trace = build_trace(documents, TraceConfig(editors=args.editors, duration_s=args.seconds * args.factor))
    trace = scale_trace(trace, args.factor)
    warm = trace[: min(len(trace), 200)]  # replayed first, outside the figure: imports, first calls, JIT-less warmth
    port, address = free_port(), f"tcp://127.0.0.1:{free_port()}"
    tmp = Path(tempfile.mkdtemp(prefix="front-cpu-"))
    me = [sys.executable, "-m", "benchmarks.front_cpu"]
    front_command = [*me, "--role", "front", "--port", str(port), "--address", address,
                     "--store", str(tmp / "feedback.sqlite"), *args.overrides]  # fmt: skip
    models = list(compose_config(args.overrides, str(tmp / "unused.sqlite")).models)
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(tmp / "front.log", "w"))
        front = subprocess.Popen(front_command, stdout=log, stderr=subprocess.STDOUT, text=True)
        stack.callback(_stop, front)
        containers = subprocess.Popen([*me, "--role", "containers", "--address", address,
                                       "--batch-ms", str(args.batch_ms), *models], text=True)  # fmt: skip
        stack.callback(_stop, containers)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, 60.0, front)
        asyncio.run(replay(url, warm, timeout_s=5.0))
        if args.profile is not None:  # attached for the replay only: start-up and imports are not in the samples
            spy = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(front.pid), "--format", "raw",
                   "--rate", "250", "--gil", "-o", str(args.profile)]  # fmt: skip
            stack.callback(_stop, subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=log, text=True))
            time.sleep(1.0)  # attached
        before, own = cpu_seconds(front.pid), time.process_time()
        outcomes = asyncio.run(replay(url, trace, timeout_s=5.0))
        spent, client = cpu_seconds(front.pid) - before, time.process_time() - own
    summary = summarize(outcomes, args.seconds)
    rate = len(outcomes) / args.seconds
    print(f"{len(outcomes)} requests in {args.seconds:g} s ({rate:.0f}/s, {args.editors} editors x{args.factor:g}), "
          f"stand-in containers at {args.batch_ms:g} ms a batch; p50 {summary['p50_ms']:.1f} ms, "
          f"p99 {summary['p99_ms']:.1f} ms, cache hits {summary['cache_hit_share']:.0%}, "
          f"errors {summary['error_share']:.1%}, shed {summary['shed_share']:.1%}")  # fmt: skip
    print(f"frontend CPU per request: {1000 * spent / len(outcomes):.3f} ms "
          f"(load generator {1000 * client / len(outcomes):.3f} ms)")  # fmt: skip
    if args.profile is not None:
        print(f"\nwhere the frontend's samples fall (raw samples in {args.profile}):\n  incl.   self  function")
        for frame, inclusive, own_share in hottest(args.profile):
            print(f"  {inclusive:5.1%} {own_share:6.1%}  {frame}")


def _stop(process: subprocess.Popen[str]) -> None:
    """Stop a child as Ctrl-C would, then for good."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(OSError):
        os.waitpid(process.pid, os.WNOHANG)


if __name__ == "__main__":
    main()
