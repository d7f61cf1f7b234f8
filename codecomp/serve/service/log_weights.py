"""Log-weights of the models, per language for the population and per user on top (the selection policies' state).

A user's log-weight of a model is the population's plus the user's own offset: what everyone teaches reaches
every user at once (a new user ranks as the population does), and each user's feedback moves their offset on
top of it (a hierarchical split, as Velox shares a population model under per-user weights).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

GLOBAL = ""  # the user of the population's state, the prior of every new user


class LogWeights:
    """Log-weights per model: the population's per language (user GLOBAL), and each user's offset from them.

    Args:
        share: after each update, the fixed share of the population's weight that flows back evenly to all
            models (so a model can recover).
        user_rate: a user's offset learns at this fraction of the population's rate...
        user_decay: ...and decays by this share at each of the user's updates, so it reflects the user's
            recent habits and stays within user_rate * rate / user_decay of the population.
    """

    def __init__(self, share: float = 0.02, user_rate: float = 0.5, user_decay: float = 0.1) -> None:
        self.share, self.user_rate, self.user_decay = share, user_rate, user_decay
        self.table: dict[tuple[str, str], dict[str, float]] = {}  # (GLOBAL, language): weights; (user, ...): offsets

    def log_weight(self, key: tuple[str, str], model: str) -> float:
        population = self.table.get((GLOBAL, key[1]), {})
        offset = self.table.get(key, {}) if key[0] != GLOBAL else {}
        return population.get(model, 0.0) + offset.get(model, 0.0)

    def known(self, key: tuple[str, str]) -> list[str]:
        """The models with a weight for `key` (the population's or the user's own)."""
        return list(dict.fromkeys([*self.table.get((GLOBAL, key[1]), {}), *self.table.get(key, {})]))

    def probabilities(self, key: tuple[str, str], models: Sequence[str]) -> dict[str, float]:
        """Normalised weights over `models`. Reading creates nothing: only updates do, so frontends applying
        the same updates in the same order hold the same rows (`redis_store.py`)."""
        row = {m: self.log_weight(key, m) for m in models}
        top = max(row.values(), default=0.0)
        mass = {m: math.exp(v - top) for m, v in row.items()}
        total = sum(mass.values()) or 1.0
        return {m: v / total for m, v in mass.items()}

    def update(self, key: tuple[str, str], losses: Mapping[str, float], rate: float) -> None:
        """w_m <- w_m * exp(-rate * loss_m) for the models given, in the population's weights and in the user's
        offsets (at `user_rate` of it); then the fixed share over the population's, and the offsets' decay."""
        population = self.table.setdefault((GLOBAL, key[1]), {})
        for model, loss in losses.items():
            population[model] = population.get(model, 0.0) - rate * loss
        if self.share > 0 and len(population) > 1:
            top = max(population.values())
            weights = {m: math.exp(v - top) for m, v in population.items()}
            mean = sum(weights.values()) / len(weights)
            for m, w in weights.items():
                population[m] = math.log((1 - self.share) * w + self.share * mean)
        if key[0] == GLOBAL:
            return
        offset = self.table.setdefault(key, {})
        for model in offset:
            offset[model] *= 1 - self.user_decay
        for model, loss in losses.items():
            offset[model] = offset.get(model, 0.0) - self.user_rate * rate * loss
