"""What a container does with one message, apart from sockets."""

from __future__ import annotations

import logging
import os
import socket
import time

from codecomp.serve import protocol
from codecomp.serve.container.runners import Runner

log = logging.getLogger(__name__)


class ContainerCore:
    """What a container does with one message, apart from sockets (the loop below, or a test's)."""

    def __init__(self, runner: Runner, model: str, version: str, rpc_margin_s: float = 0.003) -> None:
        self.runner, self.model, self.version = runner, model, version
        self.rpc_margin_s = rpc_margin_s  # the answer must still travel back before the deadline

    def hello(self, kind: type[protocol.Hello] = protocol.Hello) -> bytes:
        """The hello (or, with `protocol.Heartbeat`, a heartbeat) that announces this container."""
        return protocol.pack(
            kind(model=self.model, family=self.runner.family, version=self.version, pid=os.getpid(),
                 host=socket.gethostname())
        )  # fmt: skip

    def handle(self, frame: bytes, received_at: float) -> bytes | None:
        """The reply to one frame; None for shutdown."""
        try:
            message = protocol.unpack(frame)
        except protocol.ProtocolError as error:
            return protocol.pack(protocol.Error(batch=None, message=str(error)))
        if isinstance(message, protocol.Shutdown):
            return None
        if not isinstance(message, protocol.Predict):
            kind = type(message).__struct_config__.tag
            return protocol.pack(protocol.Error(batch=None, message=f"a container does not take {kind}"))
        try:
            deadlines = [received_at + r.budget_ms / 1000 - self.rpc_margin_s for r in message.requests]
            results = self.runner.predict(message.requests, deadlines, message.options)
        except Exception as error:  # a bad batch must not take the container down
            log.exception("batch %s failed", message.batch)
            return protocol.pack(protocol.Error(batch=message.batch, message=f"{type(error).__name__}: {error}"))
        now = time.monotonic()
        # Cut short: its deadline has passed and stopped a line before the byte bound did (a line at
        # `max_chars` bytes is as whole as the model would ever make it, however late it ended).
        bound = message.options.max_chars
        cut_short = [
            now >= d and any(not c.complete and len(c.text) < bound for c in r)
            for d, r in zip(deadlines, results, strict=True)
        ]
        return protocol.pack(
            protocol.Result(batch=message.batch, results=results, compute_ms=(now - received_at) * 1000,
                            cut_short=cut_short)
        )  # fmt: skip
