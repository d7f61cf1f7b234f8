"""Per-user correction (Velox's split model): a linear re-ranker w_u over features the models provide.

Velox splits a prediction into f(x; theta), features from slow-changing shared models, and w_u, a small
per-user vector learned online from that user's feedback. Here f are features of each shown candidate
(the selection policy's score, each model's normalised log-probability for it, which models proposed it,
its length, whether it came from a cache, whether its names occur in the file) and w_u is fitted by
online logistic regression on accept / reject, pulled towards the population's weights (a user with
little feedback ranks as the population does; a new user starts from them exactly).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from codecomp.serve.service.selection import GLOBAL, Ranking
from codecomp.text.tokens import WORD

# Before any feedback the correction ranks exactly as the policy does.
INITIAL = {"policy": 1.0}
_FLOOR = -10.0  # log-probabilities below this count as this (a feature in [0, 1])
_WINDOW = 4096  # bytes of the file on each side of the cursor searched for a candidate's names


def features(ranking: Ranking, cache: Mapping[str, str], prefix: bytes, suffix: bytes) -> list[dict[str, float]]:
    """Per choice of `ranking`, its features by name.

    Args:
        cache: per model, how its answer was found (hit, shared, typed, approx, miss).
        prefix, suffix: the document around the cursor.
    """
    window = prefix[-_WINDOW:] + b"\n" + suffix[:_WINDOW]
    rows = []
    for choice, advice, score in zip(ranking.choices, ranking.advice, ranking.scores, strict=True):
        row = {"bias": 1.0, "policy": score, "length": math.log1p(len(choice.text)) / 5}
        for model, p in advice.items():
            row[f"p:{model}"] = (max(math.log(p), _FLOOR) - _FLOOR) / -_FLOOR if p > 0 else 0.0
            row[f"by:{model}"] = 1.0 if p > 0 else 0.0
        proposers = [m for m, p in advice.items() if p > 0]
        row["cached"] = 1.0 if any(cache.get(m, "miss") != "miss" for m in proposers) else 0.0
        names = WORD.findall(choice.text.encode())
        row["in_file"] = sum(_occurs(n, window) for n in names) / len(names) if names else 0.0
        rows.append(row)
    return rows


_PROBES = 8
_NAME_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$" + bytes(range(0x80, 0x100)))


def _occurs(name: bytes, window: bytes) -> bool:
    """Whether `name` occurs in `window` as a whole name (a C-level find per occurrence: a regex search over
    the window per name cost most of the ranking's time). A name found inside others `_PROBES` times is taken
    as present: a short name that common is all but certain to stand alone somewhere too."""
    start = window.find(name)
    for _ in range(_PROBES):
        if start < 0:
            return False
        end = start + len(name)
        if (start == 0 or window[start - 1] not in _NAME_BYTES) and (
            end == len(window) or window[end] not in _NAME_BYTES
        ):
            return True
        start = window.find(name, start + 1)
    return start >= 0


class Correction:
    """Per state key (user, language), logistic-regression weights over candidate features.

    Args:
        rate: the SGD step of a user's weights (the population's take `rate * population_share`).
        l2: pull of a user's weights towards the population's (of the population's towards INITIAL).
        negatives: on a rejection, how many of the top shown choices count as rejected.
    """

    def __init__(self, rate: float = 0.2, l2: float = 0.01, population_share: float = 0.25, negatives: int = 3):
        self.rate, self.l2, self.population_share, self.negatives = rate, l2, population_share, negatives
        self.table: dict[tuple[str, str], dict[str, float]] = {}

    def weights(self, key: tuple[str, str]) -> dict[str, float]:
        """The weights of `key`, created from the population's when new."""
        row = self.table.get(key)
        if row is None:
            row = self.table[key] = dict(self.table.get((GLOBAL, key[1]), INITIAL))
        return row

    def rerank(self, key: tuple[str, str], rows: Sequence[dict[str, float]]) -> list[int]:
        """The order of the choices by w_u . x, best first (stable: ties keep the policy's order). Creates no
        row (only learning does, so frontends applying the same updates in the same order agree)."""
        w = self.table.get(key) or self.table.get((GLOBAL, key[1]), INITIAL)
        scores = [_dot(w, x) for x in rows]
        return sorted(range(len(rows)), key=lambda i: -scores[i])

    def learn(
        self, key: tuple[str, str], rows: Sequence[dict[str, float]], accepted: int | None, seen: Sequence[int] = ()
    ) -> None:
        """One SGD step on the shown choices: the taken one is a positive, the ones shown above it (skipped)
        or, with none taken, the ones the user saw (`seen`; unknown: the top `negatives`) are negatives."""
        if not rows:
            return
        if accepted is not None:
            examples = [(rows[accepted], 1.0)] + [(rows[j], 0.0) for j in range(accepted)]
        else:
            examples = [(rows[j], 0.0) for j in seen] if seen else [(x, 0.0) for x in rows[: self.negatives]]
        population = self.weights((GLOBAL, key[1]))
        for user, rate, prior in ((key[0], self.rate, population), (GLOBAL, self.rate * self.population_share, None)):
            if user == GLOBAL and key[0] == GLOBAL:
                continue
            w = self.weights((user, key[1]))
            anchor = dict(prior) if prior is not None else INITIAL
            for x, y in examples:
                error = y - _sigmoid(_dot(w, x))
                for name, value in x.items():
                    w[name] = w.get(name, 0.0) + rate * error * value
            for name in set(w) | set(anchor):
                w[name] = w.get(name, 0.0) - rate * self.l2 * (w.get(name, 0.0) - anchor.get(name, 0.0))


def _dot(w: Mapping[str, float], x: Mapping[str, float]) -> float:
    return sum(w.get(name, 0.0) * value for name, value in x.items())


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
