"""What a container does with the messages it receives, apart from sockets."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence

from codecomp.serve import protocol
from codecomp.serve.container.rows import RowsInFlight
from codecomp.serve.container.runners import Runner, StepwiseRunner

log = logging.getLogger(__name__)


class ContainerCore:
    """What a container does with its messages, apart from sockets (the loop of `process.py`, or a test's).

    A runner that decodes stepwise (a line model) gets continuous batching: `receive` lets a batch's rows join
    those decoding, and `step`, called while `busy`, advances them all by one byte and answers each batch as its
    last row leaves. Any other runner answers a batch whole in `receive`.
    """

    def __init__(self, runner: Runner, model: str, version: str, rpc_margin_s: float = 0.003) -> None:
        self.runner, self.model, self.version = runner, model, version
        self.rpc_margin_s = rpc_margin_s  # the answer must still travel back before the deadline
        self.rows = RowsInFlight(runner) if isinstance(runner, StepwiseRunner) else None
        self.stopping = False  # told to shut down

    def hello(self, kind: type[protocol.Hello] = protocol.Hello) -> bytes:
        """The hello (or, with `protocol.Heartbeat`, a heartbeat) that announces this container."""
        return protocol.pack(
            kind(model=self.model, family=self.runner.family, version=self.version, pid=os.getpid(),
                 host=socket.gethostname())
        )  # fmt: skip

    @property
    def busy(self) -> bool:
        """Rows are decoding: call `step` (and look for new frames between steps)."""
        return self.rows is not None and self.rows.busy

    def receive(self, frame: bytes, received_at: float) -> bytes | None:
        """Take one frame; returns the reply to send now (an error, or the answer of a batch computed whole), or
        None: the batch's rows joined the decoding (`step` answers it), or shutdown (`stopping` is set)."""
        try:
            message = protocol.unpack(frame)
        except protocol.ProtocolError as error:
            return protocol.pack(protocol.Error(batch=None, message=str(error)))
        if isinstance(message, protocol.Shutdown):
            self.stopping = True
            return None
        if not isinstance(message, protocol.Predict):
            kind = type(message).__struct_config__.tag
            return protocol.pack(protocol.Error(batch=None, message=f"a container does not take {kind}"))
        deadlines = [received_at + r.budget_ms / 1000 - self.rpc_margin_s for r in message.requests]
        try:
            if self.rows is not None:
                self.rows.add(message.batch, message.requests, deadlines, message.options, received_at)
                return None
            results = self.runner.predict(message.requests, deadlines, message.options)
        except Exception as error:  # a bad batch must not take the container down
            log.exception("batch %s failed", message.batch)
            return protocol.pack(protocol.Error(batch=message.batch, message=f"{type(error).__name__}: {error}"))
        return _result(message.batch, received_at, deadlines, message.options, results)

    def step(self) -> list[bytes]:
        """One decoding step of every row in flight; returns the replies of the batches whose last row left."""
        if self.rows is None:
            return []
        replies = []
        for done in self.rows.step():
            if done.error is not None:
                replies.append(protocol.pack(protocol.Error(batch=done.batch, message=done.error)))
            else:
                replies.append(_result(done.batch, done.received_at, done.deadlines, done.options, done.results))
        return replies

    def handle(self, frame: bytes, received_at: float) -> bytes | None:
        """The reply to one frame, its batch computed whole (stepped until its last row leaves, with nothing else
        in flight); None for shutdown."""
        reply = self.receive(frame, received_at)
        while reply is None and self.busy:
            replies = self.step()
            reply = replies[0] if replies else None
        return reply


def _result(
    batch: int, received_at: float, deadlines: Sequence[float], options: protocol.Options,
    results: list[list[protocol.WireCandidate]],
) -> bytes:  # fmt: skip
    now = time.monotonic()
    # Cut short: its deadline has passed and stopped a line before the byte bound did (a line at `max_chars`
    # bytes is as whole as the model would ever make it, however late it ended).
    cut_short = [
        now >= d and any(not c.complete and len(c.text) < options.max_chars for c in r)
        for d, r in zip(deadlines, results, strict=True)
    ]
    return protocol.pack(
        protocol.Result(batch=batch, results=results, compute_ms=(now - received_at) * 1000, cut_short=cut_short)
    )
