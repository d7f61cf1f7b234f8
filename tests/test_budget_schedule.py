"""The learning-rate schedule over a run's budget: its shape, and a real run bounded by steps or by time."""

import functools
import itertools

import pytest
import pytorch_lightning as pl
import torch

from codecomp.data.char_datamodule import CharDataModule
from codecomp.models.budget_schedule import WarmupCosine, budget_progress
from codecomp.models.char_lstm_module import CharLSTMModule
from codecomp.models.tree_lstm_module import TreeLSTMModule


def test_warmup_then_half_cosine_to_the_final_rate():
    schedule = WarmupCosine(warmup=0.1, final=0.2)
    assert schedule.factor(0.05) == pytest.approx(0.5)  # half-way up
    assert schedule.factor(0.1) == pytest.approx(1.0)  # the peak
    assert schedule.factor(0.55) == pytest.approx(0.2 + 0.8 * 0.5)  # half-way down
    assert schedule.factor(1.0) == pytest.approx(0.2) == schedule.factor(3.0)  # the end, and past it
    assert 0 < schedule.factor(0.0) < 0.01
    factors = [schedule.factor(p / 100) for p in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(factors))  # only down after the warm-up


class _Rates(pl.Callback):
    """The rate and the budget's progress before every step, and the progress and step count at the end."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.progress: list[float] = []
        self.end: tuple[float, int] = (0.0, 0)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.progress.append(budget_progress(trainer))

    def on_train_end(self, trainer, module) -> None:  # type: ignore[no-untyped-def]
        self.end = (budget_progress(trainer), trainer.global_step)


def _fit(fixture_corpus, **bounds) -> _Rates:
    torch.manual_seed(0)
    module = CharLSTMModule(
        embed_dim=8, hidden=16, layers=1, optimizer=lambda p: torch.optim.AdamW(p, lr=0.01),
        lr_schedule={"warmup": 0.25, "final": 0.1},
    )  # fmt: skip
    rates = _Rates()
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[rates], **bounds,
    )  # fmt: skip
    trainer.fit(module, datamodule=CharDataModule(fixture_corpus, seq_len=16, batch_size=2))
    return rates


def test_a_run_bounded_by_steps_follows_the_schedule_to_its_last_step(fixture_corpus):
    rates = _fit(fixture_corpus, max_steps=8, max_epochs=100, limit_train_batches=3)
    schedule = WarmupCosine(warmup=0.25, final=0.1)
    assert rates.progress == pytest.approx([step / 8 for step in range(8)])  # over epochs: steps of max_steps
    assert rates.rates == pytest.approx([0.01 * schedule.factor(step / 8) for step in range(8)])


def test_a_run_bounded_by_time_ends_on_the_final_rate(fixture_corpus):
    rates = _fit(fixture_corpus, max_time={"seconds": 3}, max_epochs=10_000, limit_train_batches=2)
    progress, steps = rates.end
    assert progress == 1.0 and steps < 10_000  # time, not the 20,000 steps allowed, used the budget up
    assert rates.progress == sorted(rates.progress) and max(rates.progress) <= 1.0


def test_the_tree_lstm_takes_the_schedule_too_and_one_scheduler_at_most(fixture_corpus):
    schedule = {"warmup": 0.25, "final": 0.1}
    module = TreeLSTMModule(str(fixture_corpus), embed_dim=8, hidden=8, pointer_dim=8, lr_schedule=schedule)
    module.trainer = pl.Trainer(accelerator="cpu", logger=False, max_steps=8, enable_progress_bar=False)
    configured = module.configure_optimizers()
    assert configured["lr_scheduler"]["interval"] == "step"  # set every step, not on val/loss
    assert module.lr_schedule == WarmupCosine(0.25, 0.1)
    plateau = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau)
    with pytest.raises(ValueError, match="not both"):
        TreeLSTMModule(str(fixture_corpus), scheduler=plateau, lr_schedule=schedule)
