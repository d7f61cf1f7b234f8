"""A model going bad mid-run, and how soon each policy recovers: degradation and hot-reload scenarios.

- Degradation: from the middle of the trace on, one model answers each request with another request's
  candidates (`misplaced`: fluent code in the wrong place, as a broken or mis-deployed model gives).
- Hot reload: at a third of the trace one model is swapped to an untrained checkpoint of its family and
  config (`answers.untrained`), at two thirds back to the good one.

Recovery, in events of the trace after the switch (the learner learns from every event), is measured on a
trailing window of the counted requests (the reported part's) since the switch: `window` of them, fewer
until that many have passed, but at least a quarter. Recovered: from the first counted request where the
window is within 5% of the target and stays so for the next `window` counted requests (a window that
crosses by chance once does not count). Two targets:
- back: the window's acceptance is within 5% of the acceptance over the `window` counted requests before
  the break (the issue's measure; out of reach when the broken model carried what was accepted before);
- adapted: within 5% of the same configuration's acceptance, over the same requests, in a run where the
  broken model gave no answers at all while broken (after a break: the best a policy can do without it) or
  was never broken (after a return). Paired on the same requests, this target moves with their difficulty.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from benchmarks.replay.simulate import Outcome
from codecomp.serve.protocol import WireCandidate

ModelAnswers = Sequence[Sequence[WireCandidate]]


def misplaced(answers: ModelAnswers, start: int) -> list[list[WireCandidate]]:
    """From request `start` on, each answer is another request's (seeded)."""
    rng = random.Random(1)
    others = [a for a in answers if a]
    return [list(a) for a in answers[:start]] + [list(rng.choice(others)) if a else [] for a in answers[start:]]


def swapped(good: ModelAnswers, other: ModelAnswers, start: int, end: int) -> list[list[WireCandidate]]:
    """`other`'s answers for requests start..end - 1, `good`'s elsewhere."""
    return [list(good[i] if not start <= i < end else other[i]) for i in range(len(good))]


def recovery(outcomes: Sequence[Outcome], counted: Sequence[bool], start: int, window: int,
             target: Sequence[Outcome] | None = None) -> int | None:  # fmt: skip
    """Events after `start` until the trailing window's acceptance is within 5% of the target, and stays so for
    `window` counted requests: the target is the acceptance over the `window` counted requests before `start`
    (`target` None), or `target`'s (a reference run's) over the same requests. None: never, before the end of
    the trace (or of `outcomes`)."""
    before = [o for o, c in zip(outcomes[:start], counted[:start], strict=True) if c][-window:]
    level = sum(o.accepted for o in before) / max(1, len(before))
    seen = [i for i in range(start, len(outcomes)) if counted[i]]  # the counted requests since the switch
    checks: list[tuple[int, bool]] = []  # (request, within 5% there)
    for k in range(window // 4 - 1, len(seen)):
        last = seen[max(0, k + 1 - window) : k + 1]
        got = sum(outcomes[j].accepted for j in last) / len(last)
        wanted = level if target is None else sum(target[j].accepted for j in last) / len(last)
        checks.append((seen[k], got >= 0.95 * wanted))
    runs = [0] * (len(checks) + 1)  # runs[k]: checks passed in a row from check k on
    for k in range(len(checks) - 1, -1, -1):
        runs[k] = runs[k + 1] + 1 if checks[k][1] else 0
    for k, (request, _) in enumerate(checks):
        if runs[k] >= min(window, len(checks) - k):
            return request - start
    return None


def windowed(outcomes: Sequence[Outcome], counted: Sequence[bool], window: int) -> list[float]:
    """The acceptance over consecutive windows of `window` counted requests (a curve)."""
    kept = [o for o, c in zip(outcomes, counted, strict=True) if c]
    return [sum(o.accepted for o in kept[i : i + window]) / window for i in range(0, len(kept) - window + 1, window)]
