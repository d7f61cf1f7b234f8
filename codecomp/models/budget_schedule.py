"""A learning-rate schedule that spans a run's budget, whichever bound ends it: steps or wall-clock time.

A run bounded by `trainer.max_time` (make demo) does not know how many steps it will take, so the schedule
follows the larger of the two fractions used: steps done of the steps allowed, and time spent of the time
allowed. The rate warms up linearly, then follows a half cosine down to `final` times the peak at the end of
the budget: a short run ends on a low rate instead of stopping at its peak.
"""

from __future__ import annotations

import dataclasses
import math

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Timer


@dataclasses.dataclass(frozen=True)
class WarmupCosine:
    """Args:
    warmup: fraction of the budget spent rising linearly from 0 to the peak rate.
    final: the rate at the end of the budget, as a fraction of the peak.
    """

    warmup: float = 0.05
    final: float = 0.05

    def factor(self, progress: float) -> float:
        """The rate at `progress` (0 to 1 of the budget) as a fraction of the peak."""
        progress = min(max(progress, 0.0), 1.0)
        if progress < self.warmup:
            return max(progress / self.warmup, 1e-3)  # not 0: the first step still learns a little
        decay = (progress - self.warmup) / max(1.0 - self.warmup, 1e-9)
        return self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * decay))


def budget_progress(trainer: pl.Trainer) -> float:
    """Fraction of the training budget used (0 to 1): the larger of steps done / steps allowed (max_steps, or
    max_epochs times the batches per epoch) and, when `max_time` bounds the run, time spent / time allowed."""
    progress = 0.0
    steps = trainer.estimated_stepping_batches
    if math.isfinite(steps) and steps > 0:
        progress = trainer.global_step / steps
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)  # type: ignore[attr-defined]
    remaining = timer.time_remaining("train") if timer is not None else None
    if timer is not None and remaining is not None:
        elapsed = timer.time_elapsed("train")
        progress = max(progress, elapsed / max(elapsed + remaining, 1e-9))
    if trainer.world_size > 1:  # clocks differ: every process takes rank 0's, or their weights would drift apart
        progress = trainer.strategy.broadcast(progress)
    return min(progress, 1.0)
