"""The selection layer learning from simulated users: acceptance, characters saved, learning curves, recovery.

    python -m benchmarks.feedback_replay [--answers DIR] [--part report|tune|all] [--sections ...] [OVERRIDES]

Simulated users (the load generator's editors, `benchmarks/loadgen/editors.py`) retype held-out files and
ask for a completion at each pause; every served model answers each request (`replay/answers.py`, kept
under `--answers`), then each configuration replays the same trace through the served selection code
(`replay/simulate.py`: the user's acceptance rule, and the split into a tuning and a reported part).
Figures: acceptance rate (accepted / requests: every pause counts, answered or not), characters saved per
100 typed, and the acceptance rate per window of requests (the learning curve); `oracle` is the share of
requests where some model had a candidate the user would take (no ranking can do better).

Sections (`--sections`):
- table: each model alone, `fixed`, `exp3`, `exp4`, `exp4 + correction`;
- degrade: from the middle on, a model answers with other requests' candidates; recovery of each policy
  (`replay/recovery.py` defines it), for each model in turn;
- reload: a model swapped to an untrained checkpoint of its family at a third, back at two thirds;
- populations: even-numbered users take single tokens only, odd-numbered whole phrases only; per-user
  correction against the policy's weights alone;
- cost: microseconds to rank a request and to learn from its events (exp4 + correction).
Selection settings are conf/serve.yaml's `service.selection` (override them as arguments, e.g.
`service.selection.rate=0.3`): tune them with `--part tune`, report with `--part report`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.loadgen.editors import Request, TraceConfig, build_trace, documents_from_corpus
from benchmarks.replay.answers import ModelAnswers, model_answers, served_models, untrained
from benchmarks.replay.recovery import misplaced, recovery, swapped, windowed
from benchmarks.replay.simulate import PARTS, Answers, Outcome, characters_typed, in_part, replay
from codecomp.serve.service.selection import SelectionConfig
from codecomp.serve.service.typed import takes

POLICIES = ("fixed", "exp3", "exp4", "exp4 + correction")
SECTIONS = ("table", "degrade", "reload", "populations", "cost")


def configurations(config: SelectionConfig) -> dict[str, SelectionConfig]:
    return {
        "fixed": dataclasses.replace(config, policy="fixed", correction=False),
        "exp3": dataclasses.replace(config, policy="exp3", correction=False),
        "exp4": dataclasses.replace(config, policy="exp4", correction=False),
        "exp4 + correction": dataclasses.replace(config, policy="exp4", correction=True),
    }


def counted_rate(outcomes: Sequence[Outcome], counted: Sequence[bool]) -> float:
    kept = [o.accepted for o, c in zip(outcomes, counted, strict=True) if c]
    return sum(kept) / max(1, len(kept))


def oracle(trace: Sequence[Request], answers: Answers, counted: Sequence[bool]) -> float:
    """The share of counted requests where some candidate of some model would be taken."""
    hits = 0
    for i, request in enumerate(trace):
        if counted[i]:
            line_end = request.text.find("\n", request.position)
            rest = request.text[request.position : line_end if line_end >= 0 else len(request.text)]
            texts = [c.text.decode("utf-8", "ignore") for m in answers for c in answers[m][i]]
            hits += any(t.strip() and takes(t, rest) for t in texts)
    return hits / max(1, sum(counted))


def table(trace: Sequence[Request], answers: Answers, configs: dict[str, SelectionConfig], counted: list[bool],
          window: int, looks: int) -> dict[str, Any]:  # fmt: skip
    parts = [r for r, c in zip(trace, counted, strict=True) if c]
    typed = characters_typed(parts)
    print(f"\n{'configuration':<20} {'accepted':>9} {'chars saved /100 typed':>23}   learning curve (per {window})")
    figures: dict[str, Any] = {}
    for name in [*answers, *configs]:
        alone = name in answers
        outcomes = replay(trace, answers, None if alone else configs[name], looks=looks, only=name if alone else None)
        label = f"{name} alone" if alone else name
        saved = 100 * sum(o.saved for o, c in zip(outcomes, counted, strict=True) if c) / typed
        accepted, points = counted_rate(outcomes, counted), windowed(outcomes, counted, window)
        figures[label] = {"acceptance": accepted, "saved_per_100": saved, "curve": points}
        print(f"{label:<20} {accepted:9.1%} {saved:23.2f}   " + " ".join(f"{p:.2f}" for p in points))
    best = max((m for m in answers), key=lambda m: figures[f"{m} alone"]["acceptance"])
    top = figures["exp4 + correction"]["acceptance"]
    figures["oracle"] = oracle(trace, answers, counted)
    print(f"{'oracle':<20} {figures['oracle']:9.1%}   (some model had a candidate the user would take)")
    for other in (f"{best} alone", "fixed"):
        gain = top / figures[other]["acceptance"] - 1 if figures[other]["acceptance"] else float("inf")
        print(f"exp4 + correction against {other}: {gain:+.1%} relative")
    return figures


def degradation(trace: Sequence[Request], answers: Answers, configs: dict[str, SelectionConfig], model: str,
                counted: list[bool], window: int, looks: int) -> dict[str, Any]:  # fmt: skip
    switch = len(trace) // 2
    bad = {**answers, model: misplaced(answers[model], switch)}
    gone = {**answers, model: swapped(answers[model], [[] for _ in trace], switch, len(trace))}
    print(f"\nDegradation: from request {switch} on, {model} answers with other requests' candidates")
    figures: dict[str, Any] = {"model": model, "switch": switch}
    for name in POLICIES:
        outcomes = replay(trace, bad, configs[name], looks=looks)
        reference = replay(trace, gone, configs[name], looks=looks)
        back = recovery(outcomes, counted, switch, window)
        adapted = recovery(outcomes, counted, switch, window, reference)
        before = counted_rate(outcomes[:switch], counted[:switch])
        after = counted_rate(outcomes[switch:], counted[switch:])
        without = counted_rate(reference[switch:], counted[switch:])
        figures[name] = {"before": before, "after": after, "without_it": without, "back_after_events": back,
                         "adapted_after_events": adapted, "curve": windowed(outcomes, counted, window)}  # fmt: skip
        print(f"  {name:<18} before {before:6.1%}  after {after:6.1%} (without it {without:6.1%})  back within 5%: "
              f"{_events(back)}  adapted: {_events(adapted)}")  # fmt: skip
    return figures


def hot_reload(trace: Sequence[Request], answers: Answers, broken: ModelAnswers, model: str,
               configs: dict[str, SelectionConfig], counted: list[bool], window: int,
               looks: int) -> dict[str, Any]:  # fmt: skip
    start, end = reload_span(trace)
    reloaded = {**answers, model: swapped(answers[model], broken, start, end)}
    absent = {**answers, model: swapped(answers[model], [[] for _ in trace], start, end)}
    print(f"\nHot reload: {model} swapped to an untrained checkpoint at request {start}, back at {end} "
          f"(curve per {window} counted requests)")  # fmt: skip
    figures: dict[str, Any] = {"model": model, "broken_at": start, "back_at": end}
    for name in POLICIES:
        outcomes = replay(trace, reloaded, configs[name], looks=looks)
        without = replay(trace, absent, configs[name], looks=looks)
        clean = replay(trace, answers, configs[name], looks=looks)
        rates = [counted_rate(outcomes[a:b], counted[a:b]) for a, b in ((0, start), (start, end), (end, len(trace)))]
        clean_rate = counted_rate(clean[start:end], counted[start:end])
        # After the return, "back" compares with the level before the break: recovery measured from `end`
        # with the window before `start`.
        level = [o for o, c in zip(outcomes[:start], counted[:start], strict=True) if c][-window:]
        after_return = recovery([*level, *outcomes[end:]], [True] * len(level) + counted[end:], len(level), window)
        marks = {
            "broken_back": recovery(outcomes, counted, start, window),
            "broken_adapted": recovery(outcomes[:end], counted[:end], start, window, without),
            "returned_back": after_return,
            "returned_adapted": recovery(outcomes, counted, end, window, clean),
        }
        points = windowed(outcomes, counted, window)
        figures[name] = {"before": rates[0], "broken": rates[1], "after": rates[2], "never_broken": clean_rate,
                         **marks, "curve": points}  # fmt: skip
        print(f"  {name:<18} before {rates[0]:6.1%}  broken {rates[1]:6.1%} (never broken {clean_rate:6.1%})  after "
              f"{rates[2]:6.1%}  | broken: back "
              f"{_events(marks['broken_back'])}, adapted {_events(marks['broken_adapted'])}; returned: back "
              f"{_events(marks['returned_back'])}, adapted {_events(marks['returned_adapted'])}")  # fmt: skip
        print(f"  {'':<18} " + " ".join(f"{p:.2f}" for p in points))
    return figures


def reload_span(trace: Sequence[Request]) -> tuple[int, int]:
    """The requests the reloaded model is broken for: the middle third."""
    return len(trace) // 3, 2 * len(trace) // 3


def populations(trace: Sequence[Request], answers: Answers, configs: dict[str, SelectionConfig],
                counted: list[bool], looks: int) -> dict[str, Any]:  # fmt: skip
    def habit(user: str) -> str:
        return "token" if int(user.rsplit("-", 1)[1]) % 2 == 0 else "line"

    print("\nTwo populations (token users and line users):")
    figures: dict[str, Any] = {}
    for name in ("exp4", "exp4 + correction"):
        outcomes = replay(trace, answers, configs[name], habit, looks)
        per = {h: counted_rate(outcomes, [c and habit(r.user) == h for r, c in zip(trace, counted, strict=True)])
               for h in ("token", "line")}  # fmt: skip
        figures[name] = {"acceptance": counted_rate(outcomes, counted), **per}
        print(f"  {name:<18} accepted {figures[name]['acceptance']:6.1%} "
              f"(token users {per['token']:.1%}, line users {per['line']:.1%})")  # fmt: skip
    return figures


def cost(trace: Sequence[Request], answers: Answers, config: SelectionConfig, looks: int) -> dict[str, Any]:
    timings: dict[str, list[float]] = {"rank_us": [], "learn_us": []}
    replay(trace, answers, config, looks=looks, timings=timings)
    figures = {k: {"mean": statistics.fmean(v), "p99": sorted(v)[int(0.99 * (len(v) - 1))]} for k, v in timings.items()}
    print(f"\nSelection cost (exp4 + correction, CPU per request): rank {figures['rank_us']['mean']:.0f} us mean, "
          f"{figures['rank_us']['p99']:.0f} us p99; learning from its events and from what was typed "
          f"{figures['learn_us']['mean']:.0f} us mean, {figures['learn_us']['p99']:.0f} us p99")  # fmt: skip
    return figures


def _events(n: int | None) -> str:
    return "never" if n is None else f"{n} events"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/small"))
    parser.add_argument("--editors", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=150.0, help="trace length: sets the number of requests")
    parser.add_argument("--window", type=int, default=200, help="counted requests per point of the curves")
    parser.add_argument("--looks", type=int, default=1, help="choices a user reads (1: ghost text)")
    parser.add_argument("--part", choices=PARTS, default="report",
                        help="requests counted: tune (even-numbered files), report (the others), all")  # fmt: skip
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--degrade", help="comma-separated models that go bad half-way (default: each in turn)")
    parser.add_argument("--reload", default="tree", help="the model swapped to an untrained checkpoint and back")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--answers", type=Path, help="keep the models' answers here, to replay again without them")
    parser.add_argument("overrides", nargs="*", help="conf/serve.yaml overrides, e.g. service.selection.rate=0.3")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    torch.set_num_threads(2)
    served = served_models(args.overrides)
    trace = build_trace(documents_from_corpus(args.corpus, "test"),
                        TraceConfig(editors=args.editors, duration_s=args.seconds, seed=0))  # fmt: skip
    counted = in_part(trace, args.part)
    print(f"{len(trace)} requests from {args.editors} simulated users over {args.seconds:g} s of typing; "
          f"figures count the {sum(counted)} of the {args.part} part")  # fmt: skip
    answers: dict[str, ModelAnswers] = {}
    for name, model in served.models.items():
        if not Path(model.checkpoint).is_file():
            print(f"  {name}: no checkpoint at {model.checkpoint}; left out")
            continue
        started = time.perf_counter()
        answers[name] = model_answers(name, model, model.checkpoint, trace, args.answers)
        print(f"  {name}: {sum(map(bool, answers[name]))} requests answered in {time.perf_counter() - started:.0f} s")
    configs = configurations(served.service.selection)
    figures: dict[str, Any] = {"requests": len(trace), "part": args.part, "counted": sum(counted),
                               "selection": dataclasses.asdict(served.service.selection)}  # fmt: skip
    if "table" in sections:
        figures["configurations"] = table(trace, answers, configs, counted, args.window, args.looks)
    if "degrade" in sections:
        models = args.degrade.split(",") if args.degrade else list(answers)
        figures["degradation"] = [
            degradation(trace, answers, configs, m, counted, args.window, args.looks) for m in models
        ]
    if "reload" in sections and args.reload in answers:
        model = served.models[args.reload]
        store = args.answers or Path("serve_state/replay")
        broken_checkpoint = untrained(model.checkpoint, store / f"untrained-{args.reload}.ckpt")
        started = time.perf_counter()
        broken = model_answers(args.reload, model, broken_checkpoint, trace, args.answers, range(*reload_span(trace)))
        print(f"\n  untrained {args.reload} ({broken_checkpoint}): {sum(map(bool, broken))} requests answered "
              f"in {time.perf_counter() - started:.0f} s")  # fmt: skip
        figures["hot_reload"] = hot_reload(trace, answers, broken, args.reload, configs, counted, args.window,
                                           args.looks)  # fmt: skip
    if "populations" in sections:
        figures["populations"] = populations(trace, answers, configs, counted, args.looks)
    if "cost" in sections:
        figures["cost_us"] = cost(trace, answers, configs["exp4 + correction"], args.looks)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
