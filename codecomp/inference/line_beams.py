"""Beam search over bytes for the rest of a line, for many requests at once, driven one step at a time; requests
may join between steps (`add`) and their answers be taken as soon as they are known (`pop_done`).

The search of `codecomp.models.ngram_lines.complete_line`, kept per request while the caller computes the next-symbol
distributions of every live hypothesis of every request in one batch: per step each hypothesis tries its `beam`
most probable bytes; a newline or EOF ends a line (its probability counts; the same text ended both ways is one
completion with the sum of the two probabilities); the `beam` best unfinished ones go on; a request stops once
its k best finished lines beat every live hypothesis (scores only fall as text grows), when the caller retires it
(its deadline), or after `max_chars` steps.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

from codecomp.inference.completer import Candidate

NEWLINE = ord("\n")
EOF = 256


class LineBeams:
    """The beams of many requests.

    Args:
        requests: how many requests to start with (numbered 0, 1, ...; `add` numbers more after them).
        beam: live hypotheses kept per request, and bytes tried per hypothesis.
        k: completions wanted per request.
    """

    def __init__(self, requests: int, beam: int, k: int) -> None:
        self.beam, self.k = beam, k
        self.live: dict[int, list[tuple[float, bytes]]] = {}
        self.finished: dict[int, dict[bytes, float]] = {}  # per request not yet handed over
        self.cut: dict[int, dict[bytes, float]] = {}  # unfinished: deadline or byte bound
        self._next = 0
        self.add(requests)

    def add(self, requests: int) -> list[int]:
        """Start the search of `requests` more requests; returns their numbers."""
        numbers = list(range(self._next, self._next + requests))
        self._next += requests
        for request in numbers:
            self.live[request], self.finished[request], self.cut[request] = [(0.0, b"")], {}, {}
        return numbers

    def hypotheses(self) -> list[tuple[int, bytes]]:
        """The live hypotheses, (request, text) in rows: each request's rows together, in request order."""
        return [(request, text) for request, beam in self.live.items() for _, text in beam]

    def advance(self, log_probs: np.ndarray) -> None:
        """One step: extend every live hypothesis with its best bytes.

        Args:
            log_probs: (H, 257) natural-log next-symbol probabilities of `hypotheses()`'s rows, in that order.
        """
        tries = min(self.beam, log_probs.shape[1])
        top = np.argpartition(-log_probs, tries - 1, axis=1)[:, :tries]  # (H, tries) each row's best symbols
        row = 0
        for request in list(self.live):
            finished, candidates = self.finished[request], []
            for score, text in self.live[request]:
                for symbol in map(int, top[row]):
                    total = score + float(log_probs[row, symbol])
                    if symbol in (NEWLINE, EOF):
                        finished[text] = float(np.logaddexp(finished[text], total)) if text in finished else total
                    else:
                        candidates.append((total, text + bytes((symbol,))))
                row += 1
            beam = heapq.nlargest(self.beam, candidates)
            best_done = heapq.nlargest(self.k, finished.values())
            if not beam or (len(best_done) == self.k and beam[0][0] <= best_done[-1]):
                del self.live[request]  # no live hypothesis can overtake the k best finished ones
            else:
                self.live[request] = beam

    def retire(self, requests: Sequence[int], keep: bool = True) -> None:
        """Stop these requests (their deadline passed): their live hypotheses join their answers, unfinished
        (`keep=False`: they are dropped)."""
        for request in requests:
            for score, text in self.live.pop(request, []):
                if keep and text not in self.finished[request]:
                    self.cut[request].setdefault(text, score)

    def pop_done(self) -> list[tuple[int, list[Candidate]]]:
        """The requests whose search has ended and that were not handed over yet, with their candidates."""
        done = [request for request in self.finished if request not in self.live]
        return [(request, self._ranked(request)) for request in done]

    def results(self) -> list[list[Candidate]]:
        """Up to k candidates per request not handed over yet, best first, in request order; hypotheses still live
        (the byte bound) count, unfinished."""
        self.retire(list(self.live))
        return [self._ranked(request) for request in sorted(self.finished)]

    def _ranked(self, request: int) -> list[Candidate]:
        finished, cut = self.finished.pop(request), self.cut.pop(request)
        candidates = [Candidate(text, score, True) for text, score in finished.items()]
        candidates += [Candidate(text, score, False) for text, score in cut.items()]
        return sorted(candidates, key=lambda c: -c.log_prob)[: self.k]
