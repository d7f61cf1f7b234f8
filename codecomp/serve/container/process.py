"""A model container: one process that loads a checkpoint through its completer and answers batches.

The container connects a DEALER socket to the frontend's ROUTER (on this host or over TCP from
another), says hello, then answers `predict` batches and sends a heartbeat whenever it is between
batches. Heartbeats come from the same loop that computes, so a container stuck in a batch stops
beating and the frontend's supervisor sees it hung. Run one by hand on another host with
`python -m codecomp.serve.container --frontend tcp://HOST:PORT --checkpoint PATH --model NAME`.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch
import zmq

from codecomp.serve import protocol
from codecomp.serve.container.core import ContainerCore
from codecomp.serve.container.runners import load_runner

log = logging.getLogger(__name__)


def serve_container(
    frontend: str, checkpoint: str | Path, model: str, replica: str, heartbeat_s: float = 0.2, threads: int = 1,
    exit_with_parent: bool = False, **settings: Any,
) -> None:  # fmt: skip
    """Load the model, connect to the frontend and answer until told to shut down.

    With `exit_with_parent` (a supervised container) it also exits when the process that started it
    is gone, so a frontend killed outright leaves no orphans behind.
    """
    parent = os.getppid()
    torch.set_num_threads(threads)  # replicas share the machine's cores: one thread each unless told
    runner = load_runner(checkpoint, **settings)  # the checkpoint is read once: family, version, weights
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
        while True:
            if sock.poll(int(heartbeat_s * 1000)):
                frame = sock.recv()
                reply = core.handle(frame, time.monotonic())
                if reply is None:
                    break
                sock.send(reply)
            if time.monotonic() - last_beat >= heartbeat_s:
                if exit_with_parent and os.getppid() != parent:
                    log.warning("container %s: its supervisor is gone; exiting", replica)
                    break
                sock.send(core.hello(protocol.Heartbeat))
                last_beat = time.monotonic()
    finally:
        sock.close()
        context.term()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one model container and connect it to a codecomp frontend.")
    parser.add_argument("--frontend", required=True, help="the frontend's container address, tcp://HOST:PORT")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--model", required=True, help="the model name the frontend serves it under")
    parser.add_argument("--replica", default=f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve_container(args.frontend, args.checkpoint, args.model, args.replica, threads=args.threads)


if __name__ == "__main__":
    main()
