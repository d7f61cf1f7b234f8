"""A character (byte) level LSTM language model."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from codecomp.data.char_vocab import PAD_ID, VOCAB_SIZE

LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (layers, B, hidden)


@dataclasses.dataclass(frozen=True)
class CharLSTMConfig:
    """Model arguments; stored in checkpoints so a model is rebuilt without any config."""

    embed_dim: int = 64
    hidden: int = 512
    layers: int = 2
    dropout: float = 0.1
    vocab_size: int = VOCAB_SIZE


class CharLSTM(nn.Module):
    """Embedding -> multi-layer LSTM -> dropout -> linear over the byte vocabulary."""

    def __init__(self, config: CharLSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(
            config.embed_dim,
            config.hidden,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, tokens: torch.Tensor, state: LSTMState | None = None) -> tuple[torch.Tensor, LSTMState]:
        """Next-symbol logits for every position.

        Args:
            tokens: (B, T) int64 symbol ids.
            state: the (h, c) carried over from the previous chunk, or None to start afresh.

        Returns:
            logits (B, T, V) and the state after the last position.
        """
        hidden, state = self.lstm(self.embed(tokens), state)  # (B, T, H)
        return self.head(self.drop(hidden)), state

    def zero_state(self, batch: int, device: torch.device | None = None) -> LSTMState:
        shape = (self.config.layers, batch, self.config.hidden)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)
