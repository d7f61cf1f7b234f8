"""What every codecomp LightningModule shares: optimizer set-up and the hyper-parameter metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from codecomp.models.budget_schedule import WarmupCosine, budget_progress


class CodecompModule(pl.LightningModule):
    """Args:
    optimizer: a partial optimizer taking the parameters (Hydra `_partial_: true`); AdamW by default.
    scheduler: an optional partial scheduler taking the optimizer; it steps on `val/loss`.
    lr_schedule: instead of `scheduler`, WarmupCosine's arguments (`warmup`, `final`): the rate set every step
        from the share of the run's budget used, steps or time (codecomp.models.budget_schedule).
    hparam_metrics: metrics shown beside the hyper-parameters in TensorBoard's hparams tab.
    """

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer] | None,
        scheduler: Callable[..., Any] | None,
        hparam_metrics: Sequence[str],
        lr_schedule: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        if scheduler is not None and lr_schedule is not None:
            raise ValueError("give a scheduler or an lr_schedule, not both")
        self.optimizer_factory = optimizer or (lambda params: torch.optim.AdamW(params, lr=2e-3))
        self.scheduler_factory = scheduler
        self.lr_schedule = WarmupCosine(**lr_schedule) if lr_schedule is not None else None
        self.hparam_metrics = list(hparam_metrics)

    def on_train_start(self) -> None:
        if self.logger is not None:
            metrics = dict.fromkeys(self.hparam_metrics, float("nan"))
            self.logger.log_hyperparams(self.hparams, metrics)  # type: ignore[arg-type]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_schedule is not None:
            schedule, trainer = self.lr_schedule, self.trainer
            budget = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: schedule.factor(budget_progress(trainer)))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": budget, "interval": "step"}}
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
