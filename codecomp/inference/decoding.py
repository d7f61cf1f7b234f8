"""Stepwise line decoding: the interface that continuous batching drives, and `complete` built on it.

A line completer that decodes byte by byte (the Char-LSTM, the n-gram) offers `decoding(options)`: rows in flight
that advance together, one byte per `step`. Rows join between steps (`add`, which reads their prefixes) and leave
as soon as their answer is known (their k best finished lines beat every live hypothesis), at their own deadline
(anytime: their best hypotheses so far, unfinished), or after `options.max_chars` bytes; `pop_finished` hands over
their answers at once. A serving container joins requests that arrive while others decode at the next step
(iteration-level or "continuous" batching, as Orca does for transformers, OSDI 2022); `complete_stepwise` is the
same with every row joining at the start, so batch-at-a-time and continuous batching share one decoding path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from codecomp.inference.completer import Candidate, CompletionOptions, CompletionRequest


class LineDecoding(Protocol):
    """Rows in flight of one completer under one set of options; a row is one request's beam search."""

    @property
    def live(self) -> int:
        """Rows still decoding (those whose answers `pop_finished` has not yet been able to hand over)."""
        ...

    def add(self, requests: Sequence[CompletionRequest], deadlines: Sequence[float]) -> list[int]:
        """Let requests join at the next step; returns their row ids (unique within this decoding).

        Args:
            requests: read here, in one batched pass where the model allows.
            deadlines: per request, a `time.monotonic()` instant (`math.inf`: none) at which the row leaves
                with its best hypotheses so far.
        """
        ...

    def step(self) -> None:
        """Retire the rows whose deadline has passed, then extend every live row by one byte."""
        ...

    def pop_finished(self) -> list[tuple[int, list[Candidate]]]:
        """The rows that left since the last call, with their candidates, best first (at most k)."""
        ...


@runtime_checkable
class StepwiseCompleter(Protocol):
    """A completer that can also decode stepwise (continuous batching)."""

    def decoding(self, options: CompletionOptions) -> LineDecoding:
        """A new, empty decoding under `options`."""
        ...


def complete_stepwise(
    completer: StepwiseCompleter,
    requests: Sequence[CompletionRequest],
    options: CompletionOptions,
    deadlines: Sequence[float] | None = None,
) -> list[list[Candidate]]:
    """`Completer.complete` through a decoding: every request joins at the start, steps run until all have left."""
    if deadlines is not None and len(deadlines) != len(requests):
        raise ValueError(f"{len(deadlines)} deadlines for {len(requests)} requests")
    if not requests:
        return []
    decoding = completer.decoding(options)
    return run_to_end(decoding, decoding.add(requests, [math.inf] * len(requests) if deadlines is None else deadlines))


def run_to_end(decoding: LineDecoding, ids: Sequence[int]) -> list[list[Candidate]]:
    """Step `decoding` until no row is left; the candidates of rows `ids`, in their order."""
    while decoding.live:
        decoding.step()
    answers = dict(decoding.pop_finished())
    return [answers[i] for i in ids]


def top_k(candidates: Sequence[Candidate], k: int) -> list[Candidate]:
    """The k most probable candidates of distinct texts, best first."""
    seen: set[bytes] = set()
    best = []
    for candidate in sorted(candidates, key=lambda c: -c.log_prob):
        if candidate.text not in seen:
            seen.add(candidate.text)
            best.append(candidate)
            if len(best) == k:
                break
    return best
