"""Per-user correction (Velox's split model): a linear re-ranker over features the models provide.

Velox splits a prediction into f(x; theta), features from slow-changing shared models, and w_u, a small
per-user vector learned online from that user's feedback. Here f are features of each candidate
(`features.py`: the selection policy's score, each model's probabilities for it, which models proposed it,
where the cursor is, whether the name it completes occurs in the file...) and a candidate's score is
(w + o_u) . f: w the population's weights, o_u the user's own offsets.

Learning from what was typed next (full information: every candidate labelled, `typed.py`), the
population's weights learn from every user's requests and a user's offsets from the user's own (the files
they work on), by a listwise step (only the top choice is read, so what matters is which candidate is on
top); the user's events (select, dismiss, superseded views) also teach the offsets, by a logistic step:
they say what this user takes, a habit the typed text does not show. Without learning from typing, the
population learns from the events too. Offsets decay back to zero, so a user with little feedback ranks as
the population does, and a new user exactly so.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Mapping, Sequence

from codecomp.serve.service.features import features as features
from codecomp.serve.service.selection import GLOBAL, SelectionConfig

# Before any feedback the correction ranks exactly as the policy does.
INITIAL = {"policy": 1.0}


class Correction:
    """Per language the population's logistic-regression weights over candidate features; per (user, language)
    the user's offsets from them.

    Args:
        rate: the SGD step of a user's offsets.
        l2: at each of a user's steps their offsets shrink by rate * l2 (back to the population's weights);
            the population's weights are pulled towards INITIAL alike at its own step.
        population_rate: the SGD step of the population's weights.
        population_from_events: the population learns from events too (when it does not learn from typing).
        negatives: on a rejection, how many of the top shown choices count as rejected (if the client did not
            say which it showed).
    """

    def __init__(self, rate: float = 0.2, l2: float = 0.01, population_rate: float = 0.05,
                 population_from_events: bool = True, negatives: int = 3) -> None:  # fmt: skip
        self.rate, self.l2, self.population_rate = rate, l2, population_rate
        self.population_from_events, self.negatives = population_from_events, negatives
        self.table: dict[tuple[str, str], dict[str, float]] = {}  # (GLOBAL, language): weights; else offsets

    def scores(self, key: tuple[str, str], rows: Sequence[Mapping[str, float]]) -> list[float]:
        """(w + o_u) . x for each row, for `key` = (user, language). Creates no row (only learning does, so
        frontends applying the same updates in the same order agree)."""
        population = self.table.get((GLOBAL, key[1]), INITIAL)
        offsets = self.table.get(key) if key[0] != GLOBAL else None
        scores = [_dot(population, x) for x in rows]
        return [s + _dot(offsets, x) for s, x in zip(scores, rows, strict=True)] if offsets else scores

    def rerank(self, key: tuple[str, str], rows: Sequence[Mapping[str, float]]) -> list[int]:
        """The order of the choices by score, best first (stable: ties keep the policy's order)."""
        scores = self.scores(key, rows)
        return sorted(range(len(rows)), key=lambda i: -scores[i])

    def learn(self, key: tuple[str, str], rows: Sequence[Mapping[str, float]], accepted: int | None,
              seen: Sequence[int] = ()) -> list[tuple[str, str]]:  # fmt: skip
        """One SGD step from a user's answer to the shown choices: the taken one is a positive, the ones shown
        above it (skipped) or, with none taken, the ones the user saw (`seen`; unknown: the top `negatives`)
        are negatives. Returns the keys whose weights changed."""
        if not rows:
            return []
        if accepted is not None:
            examples = [(rows[accepted], 1.0)] + [(rows[j], 0.0) for j in range(accepted)]
        else:
            examples = [(rows[j], 0.0) for j in seen] if seen else [(x, 0.0) for x in rows[: self.negatives]]
        changed = []
        if key[0] != GLOBAL:
            offsets = self.table.setdefault(key, {})
            for name in offsets:
                offsets[name] *= 1 - self.rate * self.l2
            self._step(key, offsets, examples, self.rate)
            changed.append(key)
        if self.population_from_events or key[0] == GLOBAL:
            changed.append(self._learn_population(key[1], examples))
        return changed

    def learn_typed(self, key: tuple[str, str], rows: Sequence[Mapping[str, float]],
                    taken: Sequence[bool]) -> list[tuple[str, str]]:  # fmt: skip
        """One step from what was typed next, every candidate labelled (`taken`: whether the user would have taken
        it): of the population's weights at `population_rate`, and of the user's offsets at `rate`. A listwise
        step (the softmax over the candidates towards the ones taken), as only the top choice is read; nothing
        to learn when all or none were taken. Returns the keys whose weights changed."""
        if not any(taken) or all(taken):
            return []
        population = (GLOBAL, key[1])
        self._listwise(population, self.table.setdefault(population, dict(INITIAL)), rows, taken, self.population_rate)
        if key[0] == GLOBAL:
            return [population]
        offsets = self.table.setdefault(key, {})
        for name in offsets:
            offsets[name] *= 1 - self.rate * self.l2
        self._listwise(key, offsets, rows, taken, self.rate)
        return [population, key]

    def _listwise(self, key: tuple[str, str], row: dict[str, float], rows: Sequence[Mapping[str, float]],
                  taken: Sequence[bool], rate: float) -> None:  # fmt: skip
        """A step on `row` (the population's weights or `key`'s offsets) of the cross-entropy between the softmax
        of the candidates' scores (`key`'s whole weights) and the even spread over those taken."""
        scores = self.scores(key, rows)
        top = max(scores)
        mass = [math.exp(score - top) for score in scores]
        total, right = sum(mass), sum(taken)
        for x, m, t in zip(rows, mass, taken, strict=True):
            error = (1.0 / right if t else 0.0) - m / total
            for name, value in x.items():
                row[name] = row.get(name, 0.0) + rate * error * value

    def _learn_population(self, language: str, examples: list[tuple[Mapping[str, float], float]]) -> tuple[str, str]:
        key = (GLOBAL, language)
        weights = self.table.setdefault(key, dict(INITIAL))
        for name in set(weights) | set(INITIAL):
            weights[name] = weights.get(name, 0.0) - self.population_rate * self.l2 * (
                weights.get(name, 0.0) - INITIAL.get(name, 0.0)
            )
        self._step(key, weights, examples, self.population_rate)
        return key

    def _step(self, key: tuple[str, str], row: dict[str, float],
              examples: Sequence[tuple[Mapping[str, float], float]], rate: float) -> None:  # fmt: skip
        """Logistic-regression steps on `row` (the population's weights or `key`'s offsets), each example
        scored with the user's whole weights."""
        for x, y in examples:
            error = y - _sigmoid(self.scores(key, [x])[0])
            for name, value in x.items():
                row[name] = row.get(name, 0.0) + rate * error * value


def make_correction(config: SelectionConfig) -> Correction | None:
    """The correction `config` asks for, or None when it is off."""
    if not config.correction:
        return None
    return Correction(config.correction_rate, config.correction_l2, config.population_rate,
                      population_from_events=not config.learn_from_typing)  # fmt: skip


def _dot(w: Mapping[str, float], x: Mapping[str, float]) -> float:
    """w . x over x's names (map and sum run in C: this is most of the ranking's arithmetic)."""
    return sum(map(operator.mul, map(w.get, x, itertools.repeat(0.0)), x.values()))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
