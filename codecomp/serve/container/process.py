"""A model container: one process that loads a checkpoint through its completer and answers batches.

The container loads its model, warms it up on dummy batches, connects a DEALER socket to the frontend's
ROUTER (on this host or over TCP from another), says hello, then answers `predict` batches and sends
a heartbeat whenever it is between batches, or between two decoding steps. A line model decodes stepwise:
between two steps the loop takes the batches that have arrived, whose rows join at the next step, and
sends each batch's answer as soon as its last row leaves (continuous batching, `rows.py`). Heartbeats come
from the same loop that computes, so a container stuck in a batch stops beating and the frontend's
supervisor sees it hung. Run one by hand on another host with `python -m codecomp.serve.container
--frontend tcp://HOST:PORT --checkpoint PATH --model NAME`.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import zmq

from codecomp.serve import lifeline, protocol
from codecomp.serve.container.core import ContainerCore
from codecomp.serve.container.runners import Runner, load_runner

log = logging.getLogger(__name__)

# Dummy cursors for the warm-up: code before a member access, so that token models have a hole to fill.
_WARM_UP = (
    ("javascript", b"function total(items) {\n  const sum = items.reduce((a, b) => a + b);\n  return sum.", b"\n}\n"),
    ("cpp", b"#include <vector>\nint total(const std::vector<int>& items) {\n  return items.", b"\n}\n"),
)


def serve_container(
    frontend: str, checkpoint: str | Path, model: str, replica: str, heartbeat_s: float = 0.2, threads: int = 1,
    exit_with_parent: bool = False, warmup_batch: int = 0, options: protocol.Options | None = None,
    **settings: Any,
) -> None:  # fmt: skip
    """Load the model, warm it up, connect to the frontend and answer until told to shut down.

    Args:
        exit_with_parent: a supervised container: it dies with the process that started it, however
            that one dies, so a frontend killed outright leaves no orphans behind.
        warmup_batch: before saying hello, answer dummy batches of 1, 2, 4, ... up to this many requests
            with `options` (the model's), so the first real requests do not pay for the process's first
            calls; 0: no warm-up.
        settings: the completer's own (serve.yaml's `settings:` of the model).
    """
    if exit_with_parent:
        lifeline.die_with_parent()
    torch.set_num_threads(threads)  # replicas share the machine's cores: one thread each unless told
    runner = load_runner(checkpoint, **settings)  # the checkpoint is read once: family, version, weights
    if warmup_batch > 0:
        took = warm_up(runner, warmup_batch, options or protocol.Options())
        log.info("container %s warmed up in %.2f s", replica, took)
    core = ContainerCore(runner, model, runner.version)
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, replica.encode())
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(frontend)
    sock.send(core.hello())
    last_beat = time.monotonic()
    log.info("container %s (%s) connected to %s", replica, model, frontend)
    try:
        while not core.stopping:
            # Between two decoding steps only a glance at the socket: what has arrived joins at the next step.
            if sock.poll(0 if core.busy else int(heartbeat_s * 1000)):
                for frame in _arrived(sock):
                    reply = core.receive(frame, time.monotonic())
                    if reply is not None:
                        sock.send(reply)
                    if core.stopping:
                        break
            if core.busy and not core.stopping:
                for reply in core.step():
                    sock.send(reply)
            if time.monotonic() - last_beat >= heartbeat_s:
                sock.send(core.hello(protocol.Heartbeat))
                last_beat = time.monotonic()
    finally:
        sock.close()
        context.term()


def _arrived(sock: zmq.Socket[bytes]) -> Iterator[bytes]:
    """The frames waiting on the socket now, without waiting for more."""
    while True:
        try:
            yield sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return


def warm_up(runner: Runner, max_batch: int, options: protocol.Options, budget_s: float = 2.0) -> float:
    """Answer dummy batches of 1, 2, 4, ... up to `max_batch` requests; returns the seconds it took.

    A process's first calls are slow (thread pools, allocations, kernels chosen per shape): without
    this the first real answer of a fresh container is cut short by its deadline. The dummy requests
    carry no session, so they leave no prefix states behind. A batch that fails is logged, not raised:
    the real requests will show the same error where it can be seen.
    """
    started = time.monotonic()
    sizes = [1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch] + [max_batch]
    for size in sizes:
        requests = []
        for i in range(size):
            language, prefix, suffix = _WARM_UP[i % len(_WARM_UP)]
            requests.append(protocol.WireRequest(prefix, suffix, language, session="", budget_ms=budget_s * 1000))
        try:
            runner.predict(requests, [time.monotonic() + budget_s] * size, options)
        except Exception:
            log.exception("warm-up batch of %d failed", size)
            break
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one model container and connect it to a codecomp frontend.")
    parser.add_argument("--frontend", required=True, help="the frontend's container address, tcp://HOST:PORT")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--model", required=True, help="the model name the frontend serves it under")
    parser.add_argument("--replica", default=f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup-batch", type=int, default=8, help="dummy batches of 1, 2, 4, ... up to this size")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve_container(args.frontend, args.checkpoint, args.model, args.replica, threads=args.threads,
                    warmup_batch=args.warmup_batch)  # fmt: skip


if __name__ == "__main__":
    main()
