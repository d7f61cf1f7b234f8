"""LightningModule that trains the Char-LSTM."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from codecomp.checkpoint import CODECOMP_KEY
from codecomp.data.char_vocab import PAD_ID, VOCAB_SIZE
from codecomp.inference.char_lstm import FAMILY, CharLSTMCompleter
from codecomp.inference.types import CompletionRequest
from codecomp.models.base import CodecompModule
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig
from codecomp.parsing import grammar_versions

# Fixed validation prompts: their completions are logged as text every validation epoch.
SAMPLE_PROMPTS = (
    ("javascript", b"function add(a, b) {\n  return "),
    ("javascript", b"for (let i = 0; i < items.length; "),
    ("javascript", b"module.exports = "),
    ("cpp", b"#include <vector>\n\nint main() {\n  std::vector<int> "),
    ("cpp", b"for (std::size_t i = 0; i < v.size(); "),
    ("cpp", b"template <typename T>\nclass "),
)


class CharLSTMModule(CodecompModule):
    """Trains a CharLSTM with cross-entropy on the next symbol; logs loss and bits per character.

    Args:
        embed_dim, hidden, layers, dropout: the CharLSTM's arguments.
        languages: the languages trained on (recorded in the checkpoint).
        optimizer: a partial optimizer taking the parameters (Hydra `_partial_: true`).
        scheduler: an optional partial scheduler taking the optimizer; stepped on `val/loss`.
    """

    def __init__(
        self,
        embed_dim: int = 64,
        hidden: int = 512,
        layers: int = 2,
        dropout: float = 0.1,
        languages: Sequence[str] = ("cpp", "javascript"),
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, hparam_metrics=("val/bpc", "test/bpc"))
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.model_config = CharLSTMConfig(embed_dim, hidden, layers, dropout, VOCAB_SIZE)
        self.model = CharLSTM(self.model_config)
        self.languages = list(languages)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)[0]

    def model_step(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy (nats) over the non-padding targets, and their count."""
        inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, T) each
        logits = self.model(inputs)[0]  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=PAD_ID)
        return loss, (targets != PAD_ID).sum()

    def _log_step(self, stage: str, batch: torch.Tensor) -> torch.Tensor:
        loss, count = self.model_step(batch)
        on_step = stage == "train"
        kwargs = {"on_step": on_step, "on_epoch": not on_step, "batch_size": int(count), "sync_dist": not on_step}
        self.log(f"{stage}/loss", loss, prog_bar=True, **kwargs)  # type: ignore[arg-type]
        self.log(f"{stage}/bpc", loss / math.log(2), prog_bar=stage != "train", **kwargs)  # type: ignore[arg-type]
        return loss

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self._log_step("train", batch)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._log_step("val", batch)

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._log_step("test", batch)

    def on_validation_epoch_end(self) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if self.trainer.sanity_checking or not hasattr(experiment, "add_text"):
            return
        completer = CharLSTMCompleter(self.model, device=self.device)
        prompts = [(lang, prompt) for lang, prompt in SAMPLE_PROMPTS if lang in self.languages]
        requests = [CompletionRequest(prompt, lang) for lang, prompt in prompts]
        lines = []
        for (language, prompt), candidates in zip(prompts, completer.complete(requests, k=1, beam_size=2), strict=True):
            text = candidates[0].text.decode("utf-8", "replace") if candidates else ""
            lines.append(f"**{language}** `{prompt.decode()[-40:]!r}` → `{text!r}`")
        experiment.add_text("val/samples", "  \n".join(lines), self.global_step)  # type: ignore[union-attr]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make the checkpoint self-describing: serve and eval load it with no config at hand."""
        checkpoint[CODECOMP_KEY] = {
            "family": FAMILY,
            "model_config": dataclasses.asdict(self.model_config),
            "languages": self.languages,
            "vocab": {"kind": "bytes", "size": VOCAB_SIZE},
            "grammars": grammar_versions(),
        }
