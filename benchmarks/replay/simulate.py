"""Simulated users replaying a trace through the served selection code, and the figures of a replay.

Every configuration replays the same trace with the same candidates (`answers.py`) through what the server
runs: `make_policy`, `make_correction`, `FeedbackLearner` (one ranking and learning path). At each request
the user reads the first `looks` choices and takes the first that says what they type next for at least the
next token (`codecomp.serve.service.typed.takes`: the longest start of the choice that the rest of the line
starts with too, cut back to a token boundary; that many characters are saved); that sends `select`.
Otherwise the list is dismissed (half the time, seeded) or viewed and superseded by the user's next request.
The learner also sees each request's prefix, as the server does, so it can learn from what was typed next.

Tuning and reporting use different files: requests on the trace's even-numbered files are the tuning part,
the others the reported part. Every request is replayed (the learner learns from all of them), and the
figures of a part count only its requests.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Mapping, Sequence

from benchmarks.loadgen.editors import Request
from codecomp.serve.protocol import WireCandidate
from codecomp.serve.service.correction import make_correction
from codecomp.serve.service.learning import FeedbackLearner, Shown
from codecomp.serve.service.selection import FixedInterleave, SelectionConfig, make_policy
from codecomp.serve.service.typed import takes

Answers = Mapping[str, Sequence[Sequence[WireCandidate]]]  # model -> per request of the trace, its candidates
PARTS = ("tune", "report", "all")


@dataclasses.dataclass
class Outcome:
    shown: bool  # at least one choice
    accepted: bool
    saved: int  # characters accepted


def part_of(request: Request) -> str:
    """The part a request belongs to: tuning (even-numbered files) or reporting (odd-numbered files)."""
    return "tune" if request.document % 2 == 0 else "report"


def in_part(trace: Sequence[Request], part: str) -> list[bool]:
    """Per request, whether `part` counts it."""
    return [part == "all" or part_of(r) == part for r in trace]


def replay(trace: Sequence[Request], answers: Answers, config: SelectionConfig | None,
           habit: Callable[[str], str] = lambda _: "any", looks: int = 1,
           timings: dict[str, list[float]] | None = None, only: str | None = None) -> list[Outcome]:  # fmt: skip
    """The trace through the served selection code; `config` None: the fixed interleave (with `only`: that model
    alone). `habit(user)` says which choices the user takes (`takes`); `timings` collects the microseconds to
    rank each request and to learn from its events (CPU time of this thread: a crowded machine's waits left out)."""
    models = [only] if only else list(answers)
    policy = make_policy(config) if config else FixedInterleave()
    correction = make_correction(config) if config else None
    learner = FeedbackLearner(policy, correction, from_typing=bool(config and config.learn_from_typing))
    rng = random.Random(0)
    outcomes = []
    for i, request in enumerate(trace):
        prefix, suffix = request.prefix.encode(), request.suffix.encode()
        started = time.thread_time()
        key = (request.user, request.language)
        got = {m: answers[m][i] for m in models if answers[m][i]}
        session = f"{request.user}\0{request.document}\0{request.language}"
        ranking, rows = learner.rank(key, models, got, dict.fromkeys(got, "miss"), prefix, suffix)
        ranked_at = time.thread_time()
        learner.shown(str(i), Shown(request.user, request.language, session, ranking, rows), prefix)
        line_end = request.text.find("\n", request.position)
        rest = request.text[request.position : line_end if line_end >= 0 else len(request.text)]
        read = [takes(c.text, rest, habit(request.user)) for c in ranking.choices[:looks]]
        taken = next((j for j, saved in enumerate(read) if saved), None)
        for j in range(min(looks, len(ranking.choices))):
            learner.event("view", str(i), j)  # as an inline client names the ghost text it showed
        if taken is not None:
            learner.event("select", str(i), taken)
        elif rng.random() < 0.5:
            learner.event("dismiss", str(i), None)
        if timings is not None:
            timings["rank_us"].append((ranked_at - started) * 1e6)
            timings["learn_us"].append((time.thread_time() - ranked_at) * 1e6)
        outcomes.append(Outcome(bool(ranking.choices), taken is not None, read[taken] if taken is not None else 0))
    return outcomes


def rate(outcomes: Sequence[Outcome]) -> float:
    """Accepted choices per request (every request counts, answered or not)."""
    return sum(o.accepted for o in outcomes) / len(outcomes) if outcomes else 0.0


def curve(outcomes: Sequence[Outcome], window: int) -> list[float]:
    """The acceptance rate per `window` requests, in order (the learning curve)."""
    return [rate(outcomes[i : i + window]) for i in range(0, len(outcomes) - window + 1, window)]


def characters_typed(trace: Sequence[Request]) -> int:
    """Characters the users typed: per user and document, the span from the first to the last cursor (an
    editor that comes back to a document counts the span once: a slight undercount)."""
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for request in trace:
        low, high = spans.get((request.user, request.document), (request.position, request.position))
        spans[(request.user, request.document)] = (min(low, request.position), max(high, request.position))
    return max(1, sum(high - low for low, high in spans.values()))
