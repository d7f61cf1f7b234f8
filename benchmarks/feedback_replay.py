"""The selection layer learning from simulated users: acceptance, characters saved, learning curves.

    python -m benchmarks.feedback_replay [--corpus data/small] [--editors 24] [--seconds 150] [--json F]

Simulated users (the load generator's editors, `benchmarks/loadgen/editors.py`) retype held-out files and
ask for a completion at each pause. Every served model (conf/serve.yaml: checkpoints, settings, options,
triggers) answers each request once, in-process through the model-family registry, exactly as its
container would with no deadline; then each configuration replays the same trace through the served
selection code (`FeedbackLearner`, the policy, the per-user correction, the features), so every
configuration sees the same candidates and only the selection differs.

The acceptance rule: the user reads the first `--looks` choices (1: the ghost text an inline client shows)
and takes the first that says what they type next for at least the next token: the longest start of the
choice that the rest of the line starts with too, cut back to a token boundary, as editors accept a
suggestion word by word (that many characters are saved); that sends `select`. Otherwise the list is
dismissed (half the time, seeded) or viewed and superseded by the user's next request. Figures:
acceptance rate (accepted / requests: every pause counts, answered or not), characters saved per 100
typed (accepted characters / characters typed over the trace), and the acceptance rate per window of
events (the learning curve).

Scenarios: the configurations side by side; a degradation (from the middle of the trace on, the model with
the most accepted choices answers each request with another request's candidates: fluent code in the
wrong place, as a broken or mis-deployed model gives; an untrained network is not a sure degradation
here, as the completers filter by what is typed and copy names from the file); two populations with
different habits ("line" users take only choices of two tokens or more, "token" users only a single
token), per-user correction against one global weight vector. Selection cost: microseconds to rank a
request and to learn from an event.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmarks.loadgen.editors import Request, TraceConfig, build_trace, documents_from_corpus
from codecomp import CONFIG_DIR
from codecomp.checkpoint import load
from codecomp.inference.completer import Completer, CompletionOptions, CompletionRequest
from codecomp.inference.families import load_completer
from codecomp.serve.api.config import ServerConfig, register_schema
from codecomp.serve.protocol import WireCandidate
from codecomp.serve.service.correction import Correction
from codecomp.serve.service.learning import FeedbackLearner, Shown
from codecomp.serve.service.selection import FixedInterleave, SelectionConfig, make_policy
from codecomp.text.tokens import at_token

FIRST_TOKEN = re.compile(r"\s*(?:[A-Za-z0-9_$\u0080-\U0010ffff]+|\S)")
Answers = dict[str, list[WireCandidate]]


@dataclasses.dataclass
class Outcome:
    shown: bool  # at least one choice
    accepted: bool
    saved: int  # characters accepted


def served_models(overrides: Sequence[str]) -> ServerConfig:
    register_schema()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="serve", overrides=list(overrides))
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def answer_all(completer: Completer, trace: Sequence[Request], options: CompletionOptions, token_only: bool,
               batch: int = 32) -> list[list[WireCandidate]]:  # fmt: skip
    """Every request's candidates from one completer, in trace order (sessions as the server keys them)."""
    requests = [CompletionRequest(r.prefix.encode(), r.suffix.encode(), r.language,
                                  f"{r.user}\0{r.document}\0{r.language}") for r in trace]  # fmt: skip
    out: list[list[WireCandidate]] = [[] for _ in trace]
    asked = [i for i, r in enumerate(requests) if not token_only or at_token(r.prefix)]
    for start in range(0, len(asked), batch):
        rows = asked[start : start + batch]
        for i, candidates in zip(rows, completer.complete([requests[i] for i in rows], options), strict=True):
            out[i] = [WireCandidate(c.text, c.log_prob, c.complete) for c in candidates if c.text]
    return out


def misplaced(answers: list[list[WireCandidate]], switch: int) -> list[list[WireCandidate]]:
    """From request `switch` on, each answer is another request's (seeded): fluent code in the wrong place,
    as a broken or mis-deployed model gives."""
    rng = random.Random(1)
    others = [a for a in answers if a]
    return answers[:switch] + [[*rng.choice(others)] if a else a for a in answers[switch:]]


def takes(choice: str, rest: str, habit: str) -> int:
    """How many characters a user takes of `choice` when `rest` is what they type next (0: not taken): the
    longest start of the choice that `rest` starts with too, cut back to a token boundary, if it covers at
    least the next token (editors accept a suggestion word by word). A "token" user takes only a choice of
    one token, a "line" user only two tokens or more; "any" user either."""
    tokens = [m.end() for m in FIRST_TOKEN.finditer(choice)]
    if not tokens or (habit == "token" and len(tokens) > 1) or (habit == "line" and len(tokens) < 2):
        return 0
    same = next((i for i, (a, b) in enumerate(zip(choice, rest, strict=False)) if a != b), min(len(choice), len(rest)))
    covered = [end for end in tokens if end <= same and (end == len(rest) or not _continues(rest, end))]
    return covered[-1] if covered else 0


def _continues(text: str, end: int) -> bool:
    """Whether a name or number goes on past `end` (a cut there would split a token)."""
    return (text[end - 1].isalnum() or text[end - 1] in "_$") and (text[end].isalnum() or text[end] in "_$")


def replay(trace: Sequence[Request], answers: dict[str, list[list[WireCandidate]]], config: SelectionConfig | None,
           habit: Callable[[str], str], looks: int, timings: dict[str, list[float]] | None = None,
           only: str | None = None) -> list[Outcome]:  # fmt: skip
    """The trace through the served selection code; `config` None with `only`: that model alone."""
    models = [only] if only else list(answers)
    policy = make_policy(config) if config else FixedInterleave()
    correction = Correction(config.correction_rate, config.correction_l2) if config and config.correction else None
    learner = FeedbackLearner(policy, correction)
    rng = random.Random(0)
    outcomes = []
    for i, request in enumerate(trace):
        prefix, suffix = request.prefix.encode(), request.suffix.encode()
        started = time.perf_counter()
        key = (request.user, request.language)
        got = {m: answers[m][i] for m in models if answers[m][i]}
        ranking, rows = learner.rank(key, models, got, dict.fromkeys(got, "miss"), prefix, suffix)
        session = f"{request.user}\0{request.document}\0{request.language}"
        learner.shown(str(i), Shown(request.user, request.language, session, ranking, rows))
        ranked_at = time.perf_counter()
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
            timings["learn_us"].append((time.perf_counter() - ranked_at) * 1e6)
        outcomes.append(Outcome(bool(ranking.choices), taken is not None, read[taken] if taken is not None else 0))
    return outcomes


def rate(outcomes: Sequence[Outcome]) -> float:
    """Accepted choices per request."""
    return sum(o.accepted for o in outcomes) / len(outcomes) if outcomes else 0.0


def curve(outcomes: Sequence[Outcome], window: int) -> list[float]:
    return [rate(outcomes[i : i + window]) for i in range(0, len(outcomes) - window + 1, window)]


def recovery(outcomes: Sequence[Outcome], switch: int, window: int) -> int | None:
    """Events after the switch until the acceptance rate over the last `window` events is back within 5% of
    the rate over the `window` events before it; None if never."""
    before = rate(outcomes[switch - window : switch])
    for end in range(switch + window // 4, len(outcomes) + 1):
        if rate(outcomes[max(switch, end - window) : end]) >= 0.95 * before:
            return end - switch
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/small"))
    parser.add_argument("--editors", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=150.0, help="trace length: sets the number of requests")
    parser.add_argument("--window", type=int, default=200, help="events per point of the learning curves")
    parser.add_argument("--looks", type=int, default=1, help="choices a user reads (1: ghost text)")
    parser.add_argument("--degrade", help="the model that goes bad half-way (default: the one accepted most alone)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--answers", type=Path, help="keep the models' answers here, to replay again without them")
    parser.add_argument("overrides", nargs="*", help="conf/serve.yaml overrides, e.g. models.char.checkpoint=PATH")
    args = parser.parse_args()
    torch.set_num_threads(2)
    served = served_models(args.overrides)
    trace = build_trace(documents_from_corpus(args.corpus, "test"),
                        TraceConfig(editors=args.editors, duration_s=args.seconds, seed=0))  # fmt: skip
    print(f"{len(trace)} requests from {args.editors} simulated users over {args.seconds:g} s of typing")
    answers: dict[str, list[list[WireCandidate]]] = {}
    for name, model in served.models.items():
        if not Path(model.checkpoint).is_file():
            print(f"  {name}: no checkpoint at {model.checkpoint}; left out")
            continue
        started = time.perf_counter()
        options = CompletionOptions(model.options.k, model.options.beam, model.options.max_chars)
        stored = (
            args.answers / f"{name}-{load(model.checkpoint).version}-{len(trace)}.msgpack" if args.answers else None
        )
        if stored is not None and stored.is_file():
            answers[name] = msgspec.msgpack.decode(stored.read_bytes(), type=list[list[WireCandidate]])
        else:
            completer = load_completer(model.checkpoint, **model.settings)
            answers[name] = answer_all(completer, trace, options, model.trigger == "token")
            if stored is not None:
                stored.parent.mkdir(parents=True, exist_ok=True)
                stored.write_bytes(msgspec.msgpack.encode(answers[name]))
        print(f"  {name}: {sum(map(bool, answers[name]))} requests answered in {time.perf_counter() - started:.0f} s")
    typed = _characters_typed(trace)
    config = served.service.selection
    configurations: dict[str, SelectionConfig | None] = {
        "fixed": dataclasses.replace(config, policy="fixed", correction=False),
        "exp3": dataclasses.replace(config, policy="exp3", correction=False),
        "exp4": dataclasses.replace(config, policy="exp4", correction=False),
        "exp4 + correction": dataclasses.replace(config, policy="exp4", correction=True),
    }
    figures: dict[str, Any] = {"requests": len(trace), "typed_chars": typed, "configurations": {}}
    print(
        f"\n{'configuration':<20} {'accepted':>9} {'chars saved /100 typed':>23}   learning curve (per {args.window})"
    )
    results: dict[str, list[Outcome]] = {}
    for name in [*answers, *configurations]:
        outcomes = replay(trace, answers, configurations.get(name), lambda _: "any", args.looks, only=None if name in
                          configurations else name)  # fmt: skip
        label = f"{name} alone" if name in answers else name
        results[label] = outcomes
        saved = 100 * sum(o.saved for o in outcomes) / typed
        points = curve(outcomes, args.window)
        figures["configurations"][label] = {"acceptance": rate(outcomes), "saved_per_100": saved, "curve": points}
        print(f"{label:<20} {rate(outcomes):9.1%} {saved:23.2f}   " + " ".join(f"{p:.2f}" for p in points))

    # Degradation: the model with the most accepted choices goes bad half-way through.
    best = args.degrade or max(answers, key=lambda m: rate(results[f"{m} alone"]))
    switch = len(trace) // 2
    degraded = {**answers, best: misplaced(answers[best], switch)}
    print(f"\nDegradation: from request {switch} on, {best} answers with other requests' candidates")
    figures["degradation"] = {"model": best, "switch": switch}
    for name in ("fixed", "exp3", "exp4", "exp4 + correction"):
        outcomes = replay(trace, degraded, configurations[name], lambda _: "any", args.looks)
        back = recovery(outcomes, switch, args.window)
        before, after = rate(outcomes[switch - args.window : switch]), rate(outcomes[switch:])
        figures["degradation"][name] = {"before": before, "after": after, "recovered_after_events": back,
                                        "curve": curve(outcomes, args.window)}  # fmt: skip
        print(f"  {name:<18} before {before:6.1%}  after {after:6.1%}  back within 5% after "
              f"{'never' if back is None else f'{back} events'}")  # fmt: skip

    # Two populations: even-numbered users take single tokens only, odd-numbered whole phrases only.
    def habit(user: str) -> str:
        return "token" if int(user.rsplit("-", 1)[1]) % 2 == 0 else "line"

    print("\nTwo populations (token users and line users):")
    figures["populations"] = {}
    for name in ("exp4", "exp4 + correction"):
        outcomes = replay(trace, answers, configurations[name], habit, args.looks)
        pairs = list(zip(outcomes, trace, strict=True))
        per = {h: rate([o for o, r in pairs if habit(r.user) == h]) for h in ("token", "line")}
        figures["populations"][name] = {"acceptance": rate(outcomes), **per}
        print(f"  {name:<18} accepted {rate(outcomes):6.1%} "
              f"(token users {per['token']:.1%}, line users {per['line']:.1%})")  # fmt: skip

    timings: dict[str, list[float]] = {"rank_us": [], "learn_us": []}
    replay(trace, answers, configurations["exp4 + correction"], lambda _: "any", args.looks, timings)
    cost = {k: {"mean": statistics.fmean(v), "p99": sorted(v)[int(0.99 * (len(v) - 1))]} for k, v in timings.items()}
    figures["cost_us"] = cost
    print(f"\nSelection cost (exp4 + correction, per request): rank {cost['rank_us']['mean']:.0f} us mean, "
          f"{cost['rank_us']['p99']:.0f} us p99; learning from its events {cost['learn_us']['mean']:.0f} us mean, "
          f"{cost['learn_us']['p99']:.0f} us p99")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


def _characters_typed(trace: Sequence[Request]) -> int:
    """Characters the users typed: per user and document, the span from the first to the last cursor (an
    editor that comes back to a document counts the span once: a slight undercount)."""
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for request in trace:
        low, high = spans.get((request.user, request.document), (request.position, request.position))
        spans[(request.user, request.document)] = (min(low, request.position), max(high, request.position))
    return max(1, sum(high - low for low, high in spans.values()))


if __name__ == "__main__":
    main()
