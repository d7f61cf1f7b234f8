"""LightningModule that trains the bidirectional Tree-LSTM to predict hidden leaves (holes)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from codecomp import checkpoint as checkpoint_format
from codecomp.data.hole_settings import SETTINGS, HoleSettings
from codecomp.data.holes import DEFAULT_TARGET_KINDS, HoleBatch
from codecomp.data.tree_vocab import TreeVocab
from codecomp.models.base import CodecompModule
from codecomp.models.components.hole_head import target_probability
from codecomp.models.components.hole_model import HoleModel, rank_holes

FAMILY = "tree_lstm"  # the family its checkpoints declare; codecomp.inference.families maps it to a completer


class TreeLSTMModule(CodecompModule):
    """Args:
    corpus: the corpus whose train-split vocabularies the model uses (stored in checkpoints).
    languages: languages of the one model; target_kinds: leaf kinds it predicts, per language.
    embed_dim, hidden, pointer_dim: sizes; upward_only: drop the top-down pass (the ablation).
    hole_settings, partial_rate, hole_window_bytes: how its training holes are built (the datamodule's
        arguments of the same names): the loss weighs each setting by its share, and the checkpoint records
        them so that serving builds the context the model learnt from.
    optimizer, scheduler: partials (Hydra `_partial_: true`); the scheduler steps on val/loss.
    lr_schedule: instead of `scheduler`, warm-up and cosine over the run's budget (`CodecompModule`).
    """

    def __init__(
        self,
        corpus: str,
        languages: Sequence[str] = ("cpp", "javascript"),
        target_kinds: Mapping[str, Sequence[str]] | None = None,
        embed_dim: int = 64,
        hidden: int = 128,
        pointer_dim: int = 128,
        upward_only: bool = False,
        hole_settings: Mapping[str, float] | None = None,
        partial_rate: float = 0.0,
        hole_window_bytes: int | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        lr_schedule: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, ("val/top1", "test/top1"), lr_schedule)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.vocab = TreeVocab.from_corpus(Path(corpus), languages)
        self.target_kinds = {k: list(v) for k, v in (target_kinds or DEFAULT_TARGET_KINDS).items()}
        self.model_config: dict[str, Any] = {"embed_dim": embed_dim, "hidden": hidden, "pointer_dim": pointer_dim,
                             "upward_only": upward_only}  # fmt: skip
        self.model = HoleModel(len(self.vocab.kinds), len(self.vocab.values), **self.model_config)
        self.hole_settings = HoleSettings.create(hole_settings, partial_rate, hole_window_bytes)
        self.setting_shares = [self.hole_settings.shares.get(name, 0.0) for name in SETTINGS]  # (S,)

    def model_step(self, batch: HoleBatch) -> tuple[torch.Tensor, Any]:
        """Negative log-likelihood of the hidden texts that can be predicted (in the vocabulary or present
        in the file), averaged per hole setting and the settings weighed by their shares (a file gives many
        whole_file holes but one editor hole); unpredictable texts count in the metrics, not in the loss."""
        scores = self.model(batch)
        probability, reachable = target_probability(
            scores, batch.target_ids, batch.pair_hole, batch.pair_match, self.vocab.values.unk_id
        )
        if not reachable.any():
            return probability.sum() * 0.0, scores  # nothing to learn here; keeps the graph connected
        nll, setting = -torch.log(probability[reachable]), batch.hole_setting[reachable]  # (R,), (R,)
        sums = torch.zeros(len(SETTINGS), device=nll.device).index_add(0, setting, nll)  # (S,)
        counts = torch.bincount(setting, minlength=len(SETTINGS)).to(nll.dtype)  # (S,)
        shares = torch.tensor(self.setting_shares, dtype=nll.dtype, device=nll.device)
        weights = torch.where(counts > 0, shares, 0.0)
        if weights.sum() <= 0:  # only settings the model does not train on (an evaluation of other holes)
            return nll.mean(), scores
        means = sums / counts.clamp(min=1)
        return (weights * means).sum() / weights.sum(), scores

    def training_step(self, batch: HoleBatch, batch_idx: int) -> torch.Tensor | None:
        if len(batch.hole_nodes) == 0:
            return None
        loss, _ = self.model_step(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch.hole_nodes))
        return loss

    def _evaluate(self, stage: str, batch: HoleBatch, batch_idx: int) -> None:
        if len(batch.hole_nodes) == 0:
            return
        loss, scores = self.model_step(batch)
        ranked = rank_holes(scores, batch, self.vocab, k=5, partials=batch.partials)  # what is typed filters
        hits1 = [bool(c) and c[0][0] == t for c, t in zip(ranked, batch.targets, strict=True)]
        hits5 = [any(text == t for text, _ in c) for c, t in zip(ranked, batch.targets, strict=True)]
        size = len(batch.hole_nodes)
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        self.log(f"{stage}/top1", 100.0 * sum(hits1) / size, prog_bar=True, batch_size=size, sync_dist=True)
        self.log(f"{stage}/top5", 100.0 * sum(hits5) / size, batch_size=size, sync_dist=True)
        settings = batch.hole_setting.tolist()
        for index, name in enumerate(SETTINGS):  # top-1 per setting, where the batch has holes of it
            mine = [hit for hit, setting in zip(hits1, settings, strict=True) if setting == index]
            if mine and len(self.hole_settings.shares) > 1:
                self.log(f"{stage}/top1_{name}", 100.0 * sum(mine) / len(mine), batch_size=len(mine))
        experiment = getattr(self.logger, "experiment", None)
        if stage == "val" and batch_idx == 0 and hasattr(experiment, "add_text") and not self.trainer.sanity_checking:
            lines = [f"`{t}` → {', '.join(f'`{text}`' for text, _ in cands[:3])}"
                     for t, cands in list(zip(batch.targets, ranked, strict=True))[:12]]  # fmt: skip
            experiment.add_text("val/predictions", "  \n".join(lines), self.global_step)  # type: ignore[union-attr]

    def validation_step(self, batch: HoleBatch, batch_idx: int) -> None:
        self._evaluate("val", batch, batch_idx)

    def test_step(self, batch: HoleBatch, batch_idx: int) -> None:
        self._evaluate("test", batch, batch_idx)

    def transfer_batch_to_device(self, batch: HoleBatch, device: torch.device, dataloader_idx: int) -> HoleBatch:
        return batch.to(device)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make the checkpoint self-describing: serve and eval load it with no config at hand."""
        checkpoint_format.describe(
            checkpoint, FAMILY, self.model_config, self.hparams["languages"], self.vocab.to_json(),
            corpus=self.hparams["corpus"], target_kinds=self.target_kinds, hole_settings=self.hole_settings.to_json(),
        )  # fmt: skip
