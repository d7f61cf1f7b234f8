"""Continuous (iteration-level) batching in a container: the rows of many batches decoding together.

A batch that arrives while others decode joins them at the next step, each of its requests a row with its own
deadline; a row leaves as soon as its answer is known, and a batch is answered when its last row has left. The
frontend sends a line model each request as a batch of its own while the container has rows free, so every answer
leaves at once (Orca, OSDI 2022: scheduling per iteration instead of per request batch). Rows under different
options (the light options of an overloaded queue) decode apart, one decoding per set of options, each stepped in
turn.
"""

from __future__ import annotations

import dataclasses
import logging

from codecomp.serve.container.runners import StepwiseRunner, WireDecoding
from codecomp.serve.protocol import Options, WireCandidate, WireRequest

log = logging.getLogger(__name__)


@dataclasses.dataclass
class OpenBatch:
    """A batch some of whose rows are still decoding."""

    batch: int
    received_at: float  # time.monotonic()
    deadlines: list[float]
    options: Options
    results: list[list[WireCandidate]]
    waiting: int  # rows not yet answered
    error: str | None = None  # why it failed, if it did


class RowsInFlight:
    """The batches whose rows are decoding, and their decodings (one per set of options)."""

    def __init__(self, runner: StepwiseRunner) -> None:
        self.runner = runner
        self.decodings: dict[Options, WireDecoding] = {}
        self._owners: dict[tuple[Options, int], tuple[OpenBatch, int]] = {}  # (options, row) -> batch, index in it
        self._open: dict[int, OpenBatch] = {}
        self._answered: list[OpenBatch] = []  # batches that left without a step (no requests)

    @property
    def rows(self) -> int:
        """Rows decoding now."""
        return sum(decoding.live for decoding in self.decodings.values())

    @property
    def busy(self) -> bool:
        """Batches are waiting for answers: `step` must be called."""
        return bool(self._open or self._answered)

    def add(
        self, batch: int, requests: list[WireRequest], deadlines: list[float], options: Options, received_at: float
    ) -> None:
        """Let a batch's requests join at the next step (their prefixes are read now)."""
        opened = OpenBatch(batch, received_at, deadlines, options, [[] for _ in requests], len(requests))
        if not requests:
            self._answered.append(opened)
            return
        decoding = self.decodings.get(options)
        if decoding is None:
            decoding = self.decodings[options] = self.runner.decoding(options)
        rows = decoding.add(requests, deadlines)
        for index, row in enumerate(rows):
            self._owners[(options, row)] = (opened, index)
        self._open[batch] = opened

    def step(self) -> list[OpenBatch]:
        """One step of every decoding; returns the batches answered by it (those with `error` set failed: a
        decoding that raised takes every batch with a row in it down, not the container)."""
        done, self._answered = self._answered, []
        for options, decoding in list(self.decodings.items()):
            try:
                if decoding.live:
                    decoding.step()
                finished = decoding.pop_finished()
            except Exception as error:
                log.exception("decoding under %s failed", options)
                done += self._fail(options, f"{type(error).__name__}: {error}")
                continue
            for row, candidates in finished:
                opened, index = self._owners.pop((options, row))
                opened.results[index] = candidates
                opened.waiting -= 1
                if opened.waiting == 0:
                    done.append(self._open.pop(opened.batch))
            if not decoding.live:
                del self.decodings[options]  # its tensors go; the next batch under these options starts afresh
        return done

    def _fail(self, options: Options, message: str) -> list[OpenBatch]:
        del self.decodings[options]
        failed = {id(opened): opened for (o, _), (opened, _) in self._owners.items() if o == options}
        self._owners = {key: owner for key, owner in self._owners.items() if key[0] != options}
        for opened in failed.values():
            opened.error = message
            self._open.pop(opened.batch, None)
        return list(failed.values())
