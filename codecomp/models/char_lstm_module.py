"""LightningModule that trains the Char-LSTM."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from codecomp import checkpoint as checkpoint_format
from codecomp.data.char_vocab import N_BYTES, PAD_ID, VOCAB_SIZE, encode_document
from codecomp.data.file_lanes import CharBatch
from codecomp.models.base import CodecompModule
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig, LSTMState

FAMILY = "char_lstm"  # the family its checkpoints declare; codecomp.inference.families maps it to a completer

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

    Batches of consecutive windows (`CharBatch`, from codecomp.data.file_lanes) continue each row from the state,
    detached, that the row ended the previous batch with, zeroed where the row starts a file: truncated
    backpropagation through time, one state per stage. A plain (B, T + 1) tensor starts every row from zeros.

    Args:
        embed_dim, hidden, layers, dropout: the CharLSTM's arguments.
        languages: the languages trained on (recorded in the checkpoint).
        corpus: the corpus folder trained on (recorded in the checkpoint: evaluation fits its baselines on it).
        optimizer: a partial optimizer taking the parameters (Hydra `_partial_: true`).
        scheduler: an optional partial scheduler taking the optimizer; stepped on `val/loss`.
        lr_schedule: instead of `scheduler`, WarmupCosine's arguments (`warmup`, `final`): the rate set every
            step from the share of the run's budget used, steps or time (codecomp.models.budget_schedule).
    """

    def __init__(
        self,
        embed_dim: int = 64,
        hidden: int = 512,
        layers: int = 2,
        dropout: float = 0.1,
        languages: Sequence[str] = ("cpp", "javascript"),
        corpus: str | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        lr_schedule: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, ("val/bpc", "test/bpc"), lr_schedule)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.model_config = CharLSTMConfig(embed_dim, hidden, layers, dropout, VOCAB_SIZE)
        self.model = CharLSTM(self.model_config)
        self.languages = list(languages)
        self.corpus = corpus
        self.carried: dict[str, LSTMState] = {}  # stage: each row's state at the end of the last batch

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)[0]

    def model_step(self, batch: CharBatch | torch.Tensor, stage: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy (nats) over the non-padding targets, and their count; a CharBatch continues the
        state `stage`'s last batch left."""
        tokens, reset = (batch.tokens, batch.reset) if isinstance(batch, CharBatch) else (batch, None)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T) each
        state = self._initial_state(stage, reset) if reset is not None else None
        logits, state = self.model(inputs, state)  # (B, T, V)
        if reset is not None:
            self.carried[stage] = (state[0].detach(), state[1].detach())  # gradients stop at the batch edge
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=PAD_ID)
        return loss, (targets != PAD_ID).sum()

    def _initial_state(self, stage: str, reset: torch.Tensor) -> LSTMState | None:
        """The carried state, zeroed in the rows that start a file; None (zeros) when there is none to carry."""
        carried = self.carried.get(stage)
        if carried is None or carried[0].shape[1] != reset.shape[0] or bool(reset.all()):
            return None
        keep = (~reset).to(carried[0].dtype)[None, :, None]  # (1, B, 1)
        return carried[0] * keep, carried[1] * keep

    def on_train_epoch_start(self) -> None:
        self.carried.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self.carried.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self.carried.pop("test", None)

    def _log_step(self, stage: str, batch: CharBatch | torch.Tensor) -> torch.Tensor:
        loss, count = self.model_step(batch, stage)
        on_step = stage == "train"
        kwargs = {"on_step": on_step, "on_epoch": not on_step, "batch_size": int(count), "sync_dist": not on_step}
        self.log(f"{stage}/loss", loss, prog_bar=True, **kwargs)  # type: ignore[arg-type]
        self.log(f"{stage}/bpc", loss / math.log(2), prog_bar=stage != "train", **kwargs)  # type: ignore[arg-type]
        return loss

    def training_step(self, batch: CharBatch | torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self._log_step("train", batch)

    def validation_step(self, batch: CharBatch | torch.Tensor, batch_idx: int) -> None:
        self._log_step("val", batch)

    def test_step(self, batch: CharBatch | torch.Tensor, batch_idx: int) -> None:
        self._log_step("test", batch)

    def on_validation_epoch_end(self) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if self.trainer.sanity_checking or not hasattr(experiment, "add_text"):
            return
        prompts = [(lang, prompt) for lang, prompt in SAMPLE_PROMPTS if lang in self.languages]
        lines = []
        for (language, prompt), text in zip(prompts, self.sample_lines(prompts), strict=True):
            lines.append(f"**{language}** `{prompt.decode()[-40:]!r}` → `{text.decode('utf-8', 'replace')!r}`")
        experiment.add_text("val/samples", "  \n".join(lines), self.global_step)  # type: ignore[union-attr]

    @torch.inference_mode()
    def sample_lines(self, prompts: Sequence[tuple[str, bytes]], max_chars: int = 80) -> list[bytes]:
        """The greedy completion of each (language, prompt)'s line, read as from a file start: the most
        likely byte at each step until a newline, the end of file or `max_chars`."""
        if not prompts:
            return []
        sequences = [torch.from_numpy(encode_document(prompt, language)[:-1]) for language, prompt in prompts]
        tokens = pad_sequence(sequences, batch_first=True, padding_value=PAD_ID).to(self.device)  # (B, T)
        log_probs, state = self.model.encode(tokens, torch.tensor([len(s) for s in sequences]))  # (B, V)
        lines, open_rows = [bytearray() for _ in prompts], set(range(len(prompts)))
        for _ in range(max_chars):
            symbols = log_probs.argmax(dim=-1)  # (B,)
            for row, symbol in enumerate(symbols.tolist()):
                if row in open_rows and (symbol == ord("\n") or symbol >= N_BYTES):  # end of line or of file
                    open_rows.discard(row)
                elif row in open_rows:
                    lines[row].append(symbol)
            if not open_rows:
                break
            log_probs, state = self.model.step(symbols, state)
        return [bytes(line) for line in lines]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make the checkpoint self-describing: serve and eval load it with no config at hand."""
        checkpoint_format.describe(
            checkpoint, FAMILY, dataclasses.asdict(self.model_config), self.languages,
            {"kind": "bytes", "size": VOCAB_SIZE}, corpus=self.corpus,
        )  # fmt: skip
