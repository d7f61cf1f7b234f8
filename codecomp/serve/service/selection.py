"""Selection (Clipper's model-selection layer): one ranked list from the candidates of every model asked.

A policy sees, per model that answered by the deadline, its candidates best first, and returns a
`Ranking`: the choices to show, each with every model's advice for it. Models that missed the deadline
are absent (Clipper's stragglers): they take no part in the combination and learn nothing from it.

Policies (`make_policy`):
- `fixed`: the models' candidates interleaved in the configured order; learns nothing.
- `exp3`: one model per request, sampled by weight (Auer et al.'s Exp3, as Clipper uses it).
- `exp4`: every model's candidates combined, a candidate's score the sum of its models' weighted
  probabilities (so agreement counts).

They learn in one of two ways (`learning.py` says which applies):
- from the user's events (partial information, a bandit): exp3 only for the sampled model, from an
  importance-weighted loss; exp4 for every answering model, from how much of its probability went to what
  the user took (or rejected);
- from what the user typed next (full information, `typed.py`): every answering model's candidates are
  judged, shown or not, so every model learns at each request (Exp4 with full information is Hedge):
  its loss is the share of its probability that went to candidates the user would not have taken.

A model's advice is its probability for each of its candidates: normalised over its own list (`list`: a
model with a single candidate is certain of it), or its own probabilities with the rest of its mass on
"none of these" (`absolute`). Weights are log-weights per language (`log_weights.py`): the population's,
plus each user's offset; a fixed share of the population's weight flows back to all models after each
update (Herbster & Warmuth's fixed share) and offsets decay, so a model that recovers can win again.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping, Sequence
from typing import Protocol

from codecomp.serve.protocol import WireCandidate
from codecomp.serve.service.log_weights import GLOBAL as GLOBAL
from codecomp.serve.service.log_weights import LogWeights


@dataclasses.dataclass(frozen=True)
class Choice:
    """One suggestion as the editor gets it: text to insert, its log-probability and the model it came from."""

    text: str
    log_prob: float
    model: str


@dataclasses.dataclass
class Ranking:
    """What a policy showed, and what it needs to learn from the user's answer to it.

    Attributes:
        choices: the suggestions, best first.
        advice: per choice, each answering model's probability for it (its candidates' probabilities
            normalised over its own list; 0 where it did not propose that text).
        scores: per choice, the policy's score (what it ranked by).
        answered: the models that answered by the deadline.
        sampled: exp3's sampled model and the probability it had, else None.
        offers: per answering model, its probability for each of its candidates, shown or not (what
            learning from the text typed next judges).
    """

    choices: list[Choice]
    advice: list[dict[str, float]]
    scores: list[float]
    answered: list[str]
    sampled: tuple[str, float] | None = None
    offers: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    def reordered(self, order: Sequence[int]) -> Ranking:
        """The same choices in another order (a re-ranking)."""
        return dataclasses.replace(
            self,
            choices=[self.choices[i] for i in order],
            advice=[self.advice[i] for i in order],
            scores=[self.scores[i] for i in order],
        )


class SelectionPolicy(Protocol):
    name: str
    state: dict[tuple[str, str], dict[str, float]]  # what it has learned, per (user, language): persisted

    def rank(
        self, key: tuple[str, str], asked: Sequence[str], answers: Mapping[str, Sequence[WireCandidate]]
    ) -> Ranking:
        """The ranking to show for a request of `key` = (user, language).

        Args:
            asked: the models asked, in the configured order.
            answers: the candidates of each model that answered by the deadline, best first.
        """
        ...

    def learn(self, key: tuple[str, str], ranking: Ranking, accepted: int | None, seen: Sequence[int] = ()) -> None:
        """Learn from the user's answer to `ranking`: the index of the choice taken, or None if none was;
        `seen`: the choices the user was shown, when the client said (empty: all of them)."""
        ...

    def learn_typed(self, key: tuple[str, str], ranking: Ranking, typed: Mapping[str, int]) -> None:
        """Learn from what the user typed next: `typed` maps each candidate's text to the characters the user
        would have taken of it (0: not taken)."""
        ...

    def weights(self, key: tuple[str, str]) -> dict[str, float]:
        """The normalised weight of each model for `key` (the population's for a user never seen)."""
        ...


def text_of(candidate: bytes) -> str:
    """A candidate's text for the editor (a byte model may stop inside a multi-byte character: dropped)."""
    return candidate.decode("utf-8", "ignore")


def advice_of(answers: Mapping[str, Sequence[WireCandidate]], absolute: bool = False) -> dict[str, dict[str, float]]:
    """Per model, text -> probability, repeated texts merged.

    Args:
        absolute: False: its candidates' probabilities normalised over its own list (models' log-probabilities
            are on different scales, a whole line against one token), so a single candidate gets 1. True: its
            own probability for each, exp(log_prob), the rest of its mass on none of them.
    """
    advice: dict[str, dict[str, float]] = {}
    for model, candidates in answers.items():
        usable = [(text_of(c.text), c.log_prob) for c in candidates]
        usable = [(t, lp) for t, lp in usable if t.strip()]  # blank suggestions help no one
        if not usable:
            advice[model] = {}
            continue
        top = 0.0 if absolute else max(lp for _, lp in usable)
        mass: dict[str, float] = {}
        for text, lp in usable:
            mass[text] = mass.get(text, 0.0) + math.exp(min(lp - top, 0.0))
        total = max(1.0, sum(mass.values())) if absolute else sum(mass.values())
        advice[model] = {text: m / total for text, m in mass.items()}
    return advice


def typed_losses(ranking: Ranking, typed: Mapping[str, int]) -> dict[str, float]:
    """Each answering model's full-information loss: the share of its probability not on a candidate the
    user would have taken (`typed`: text -> characters taken); empty when they are all equal (nothing to
    learn, e.g. when nothing was right)."""
    right = [text for text, taken in typed.items() if taken > 0]
    losses = {m: 1.0 - min(1.0, sum(ranking.offers.get(m, {}).get(t, 0.0) for t in right)) for m in ranking.answered}
    return losses if len(set(losses.values())) > 1 else {}


class FixedInterleave:
    """The models' candidates interleaved in the configured order (the first of each model, then the second
    of each...), repeated and blank texts dropped, at most `max_choices`."""

    name = "fixed"

    def __init__(self, max_choices: int = 5) -> None:
        self.max_choices = max_choices
        self.state: dict[tuple[str, str], dict[str, float]] = {}  # learns nothing

    def rank(
        self, key: tuple[str, str], asked: Sequence[str], answers: Mapping[str, Sequence[WireCandidate]]
    ) -> Ranking:
        advice = advice_of(answers)
        ranked = [(m, list(advice[m])) for m in asked if m in advice]
        credit: dict[str, str] = {}  # text -> the model it came from first
        for rank in range(max((len(texts) for _, texts in ranked), default=0)):
            for model, texts in ranked:
                if rank < len(texts):
                    credit.setdefault(texts[rank], model)
        order = list(credit)[: self.max_choices]
        return _ranking(order, answers, advice, scores=None, credit=credit)

    def learn(self, key: tuple[str, str], ranking: Ranking, accepted: int | None, seen: Sequence[int] = ()) -> None:
        pass

    def learn_typed(self, key: tuple[str, str], ranking: Ranking, typed: Mapping[str, int]) -> None:
        pass

    def weights(self, key: tuple[str, str]) -> dict[str, float]:
        return {}


def _ranking(
    order: list[str],
    answers: Mapping[str, Sequence[WireCandidate]],
    advice: dict[str, dict[str, float]],
    scores: dict[str, float] | None,
    sampled: tuple[str, float] | None = None,
    credit: dict[str, str] | None = None,
) -> Ranking:
    """The ranking of the texts in `order`; each choice is credited to `credit[text]`, else to the model
    that gave it the most probability (its log-probability is that model's)."""
    rows = [{m: a.get(text, 0.0) for m, a in advice.items()} for text in order]
    choices = []
    for text, row in zip(order, rows, strict=True):
        model = credit[text] if credit else max(row, key=lambda m: row[m])
        log_prob = max(c.log_prob for c in answers[model] if text_of(c.text) == text)
        choices.append(Choice(text, log_prob, model))
    return Ranking(
        choices=choices,
        advice=rows,
        scores=[scores[text] if scores else 1.0 / (1 + i) for i, text in enumerate(order)],
        answered=list(advice),
        sampled=sampled,
        offers=advice,
    )


class Exp3:
    """One model's candidates per request, the model sampled with probability (1 - gamma) w_m / sum w + gamma / K
    among the K that answered. From events: the sampled model's loss (1 if its list was not taken) is divided
    by its probability (an unbiased estimate for all models) and applied with Exp3's step gamma / K; the others
    learn nothing. From what was typed: every answering model learns its full-information loss at `rate`."""

    name = "exp3"

    def __init__(self, max_choices: int = 5, exploration: float = 0.1, share: float = 0.02, seed: int = 0,
                 rate: float = 0.5, absolute: bool = False) -> None:  # fmt: skip
        self.max_choices, self.exploration, self.rate, self.absolute = max_choices, exploration, rate, absolute
        self.log_weights = LogWeights(share)
        self.state = self.log_weights.table
        self.random = random.Random(seed)

    def rank(
        self, key: tuple[str, str], asked: Sequence[str], answers: Mapping[str, Sequence[WireCandidate]]
    ) -> Ranking:
        advice = advice_of(answers, self.absolute)
        models = [m for m in asked if advice.get(m)]
        if not models:
            return _ranking([], answers, advice, scores=None)
        probability = self._probabilities(key, models)
        chosen = self.random.choices(models, weights=[probability[m] for m in models])[0]
        order = list(advice[chosen])[: self.max_choices]
        return _ranking(order, answers, advice, advice[chosen], sampled=(chosen, probability[chosen]))

    def _probabilities(self, key: tuple[str, str], models: Sequence[str]) -> dict[str, float]:
        weights = self.log_weights.probabilities(key, models)
        return {m: (1 - self.exploration) * weights[m] + self.exploration / len(models) for m in models}

    def learn(self, key: tuple[str, str], ranking: Ranking, accepted: int | None, seen: Sequence[int] = ()) -> None:
        if ranking.sampled is None:
            return
        model, probability = ranking.sampled
        loss = 0.0 if accepted is not None else 1.0
        self.log_weights.update(key, {model: loss / probability}, self.exploration / len(ranking.answered))

    def learn_typed(self, key: tuple[str, str], ranking: Ranking, typed: Mapping[str, int]) -> None:
        if losses := typed_losses(ranking, typed):
            self.log_weights.update(key, losses, self.rate)

    def weights(self, key: tuple[str, str]) -> dict[str, float]:
        return self.log_weights.probabilities(key, self.log_weights.known(key))


class Exp4:
    """Every answering model's candidates combined: score(c) = sum_m w_m * a_m(c), with w the normalised
    weights (mixed with gamma / K) of the models that answered and a_m(c) model m's probability for c.
    Learning from events, for every answering model: loss 1 - a_m(taken) when a choice was taken, else the
    probability it gave to the rejected choices the user saw (those a `view` named, else all shown); from what
    was typed, its full-information loss (Hedge)."""

    name = "exp4"

    def __init__(self, max_choices: int = 5, rate: float = 0.5, exploration: float = 0.05, share: float = 0.02,
                 absolute: bool = False) -> None:  # fmt: skip
        self.max_choices, self.rate, self.exploration, self.absolute = max_choices, rate, exploration, absolute
        self.log_weights = LogWeights(share)
        self.state = self.log_weights.table

    def rank(
        self, key: tuple[str, str], asked: Sequence[str], answers: Mapping[str, Sequence[WireCandidate]]
    ) -> Ranking:
        advice = advice_of(answers, self.absolute)
        models = [m for m in asked if m in advice]
        if not models:
            return _ranking([], answers, advice, scores=None)
        weights = self.log_weights.probabilities(key, models)
        mixed = {m: (1 - self.exploration) * weights[m] + self.exploration / len(models) for m in models}
        scores: dict[str, float] = {}
        for model in models:  # in the configured order, so ties keep it
            for text, p in advice[model].items():
                scores[text] = scores.get(text, 0.0) + mixed[model] * p
        order = sorted(scores, key=lambda t: -scores[t])[: self.max_choices]
        return _ranking(order, answers, advice, scores)

    def learn(self, key: tuple[str, str], ranking: Ranking, accepted: int | None, seen: Sequence[int] = ()) -> None:
        if not ranking.choices:
            return
        if accepted is not None:
            losses = {m: 1.0 - ranking.advice[accepted].get(m, 0.0) for m in ranking.answered}
        else:
            rejected = [ranking.advice[j] for j in seen] if seen else ranking.advice
            losses = {m: min(1.0, sum(a.get(m, 0.0) for a in rejected)) for m in ranking.answered}
        self.log_weights.update(key, losses, self.rate)

    def learn_typed(self, key: tuple[str, str], ranking: Ranking, typed: Mapping[str, int]) -> None:
        if losses := typed_losses(ranking, typed):
            self.log_weights.update(key, losses, self.rate)

    def weights(self, key: tuple[str, str]) -> dict[str, float]:
        return self.log_weights.probabilities(key, self.log_weights.known(key))


@dataclasses.dataclass
class SelectionConfig:
    """conf/serve.yaml's `service.selection`."""

    policy: str = "exp4"  # fixed, exp3 or exp4
    correction: bool = True  # re-rank per user (Velox's split model); off: the policy's order
    learn_from_typing: bool = True  # full information: every model learns from the text typed next (`typed.py`)
    advice: str = "list"  # a model's probabilities normalised over its list, or "absolute" (mass left for none)
    rate: float = 0.5  # the learning rate of exp4 (and of exp3 from what was typed; from events exp3 steps by
    # exploration / models answering, as Exp3 does)
    exploration: float = 0.05  # gamma: the share of weight spread evenly over the models answering
    share: float = 0.02  # fixed share: weight that flows back to every model after each update
    correction_rate: float = 0.05  # SGD step of a user's correction offsets
    correction_l2: float = 0.01  # pull of a user's offsets back to zero (the population's weights)
    population_rate: float = 0.1  # SGD step of the population's correction weights
    seed: int = 0  # exp3's sampling


def make_policy(config: SelectionConfig, max_choices: int = 5) -> SelectionPolicy:
    """The policy `config.policy` names."""
    if config.policy == "fixed":
        return FixedInterleave(max_choices)
    if config.advice not in ("list", "absolute"):
        raise ValueError(f"unknown advice {config.advice!r}; use list or absolute")
    absolute = config.advice == "absolute"
    if config.policy == "exp3":
        return Exp3(max_choices, config.exploration, config.share, config.seed, config.rate, absolute)
    if config.policy == "exp4":
        return Exp4(max_choices, config.rate, config.exploration, config.share, absolute)
    raise ValueError(f"unknown selection policy {config.policy!r}; use fixed, exp3 or exp4")
