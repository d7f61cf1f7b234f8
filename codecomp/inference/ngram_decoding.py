"""The n-gram's line search for many rows at once, rows joining and leaving between steps (continuous batching).

Rows that join together form a cohort, whose cache counts are gathered once when it joins (`NGramCompleter.cohort`);
each step asks the next-symbol distributions of every live hypothesis of every cohort in one call
(`NGramCompleter.distributions`) and advances the byte beams (`LineBeams`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from codecomp.inference.completer import Candidate, CompletionOptions, CompletionRequest
from codecomp.inference.line_beams import LineBeams

if TYPE_CHECKING:
    from codecomp.inference.ngram import Cohort, NGramCompleter


class NGramDecoding:
    """Rows decoding together under one set of options (`codecomp.inference.decoding.LineDecoding`)."""

    def __init__(self, completer: NGramCompleter, options: CompletionOptions) -> None:
        self.completer, self.max_chars = completer, options.max_chars
        self.beams = LineBeams(0, options.beam, options.k)
        self.rows: dict[int, tuple[Cohort, int, float]] = {}  # row id -> its cohort, index in it, deadline

    @property
    def live(self) -> int:
        return len(self.beams.live)

    def add(self, requests: Sequence[CompletionRequest], deadlines: Sequence[float]) -> list[int]:
        if len(deadlines) != len(requests):
            raise ValueError(f"{len(deadlines)} deadlines for {len(requests)} requests")
        cohort = self.completer.cohort(requests)
        ids = self.beams.add(len(requests))
        for index, (row, deadline) in enumerate(zip(ids, deadlines, strict=True)):
            self.rows[row] = (cohort, index, deadline)
        # A language without a model has nothing to say: its row leaves at once, with no candidates.
        unserved = [row for row, r in zip(ids, requests, strict=True) if r.language not in self.completer.models]
        self.beams.retire(unserved, keep=False)
        return ids

    def step(self) -> None:
        now = time.monotonic()
        self.beams.retire([row for row in self.beams.live if self.rows[row][2] <= now])
        hypotheses = self.beams.hypotheses()
        if not hypotheses:
            return
        rows = [(*self.rows[row][:2], text) for row, text in hypotheses]
        self.beams.advance(np.log(self.completer.distributions(rows)))
        # Every live hypothesis of a row has the same length: the bytes it has decoded.
        self.beams.retire([row for row, beam in self.beams.live.items() if len(beam[0][1]) >= self.max_chars])

    def pop_finished(self) -> list[tuple[int, list[Candidate]]]:
        done = self.beams.pop_done()
        for row, _ in done:
            del self.rows[row]
        return done
