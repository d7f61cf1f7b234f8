"""A character (byte) level LSTM language model."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

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

    def encode(
        self, tokens: torch.Tensor, lengths: torch.Tensor, state: LSTMState | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """Read padded sequences of different lengths in one pass (evaluation: no dropout).

        Args:
            tokens: (B, T) int64 symbol ids, padded after each sequence's end.
            lengths: (B,) each sequence's length, at least 1; padding is not read.
            state: the (h, c) to start from, each (layers, B, hidden), or None for zeros.

        Returns:
            (B, V) log-probabilities of the symbol after each sequence, and the state after it.
        """
        packed = pack_padded_sequence(self.embed(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, c) = self.lstm(packed, state)  # final states of each sequence, in input order
        return torch.log_softmax(self.head(h[-1]), dim=-1), (h, c)

    def step(self, tokens: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """One symbol for every row, the LSTM cell written out from this module's own weights: at one
        time step `nn.LSTM`'s call costs more than its arithmetic. Evaluation only (no dropout).

        Args:
            tokens: (N,) int64 symbol ids.
            state: (h, c), each (layers, N, hidden).

        Returns:
            (N, V) log-probabilities of the next symbol, and the new state.
        """
        h, c = state
        x = self.embed(tokens)  # (N, E)
        new_h, new_c = [], []
        for layer in range(self.config.layers):
            w_ih, w_hh = getattr(self.lstm, f"weight_ih_l{layer}"), getattr(self.lstm, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(self.lstm, f"bias_ih_l{layer}"), getattr(self.lstm, f"bias_hh_l{layer}")
            gates = torch.addmm(b_ih, x, w_ih.t()).addmm_(h[layer], w_hh.t()).add_(b_hh)  # (N, 4H): i, f, g, o
            x, cell = lstm_cell(gates, c[layer])
            new_h.append(x)
            new_c.append(cell)
        return torch.log_softmax(self.head(x), dim=-1), (torch.stack(new_h), torch.stack(new_c))

    def zero_state(self, batch: int, device: torch.device | None = None) -> LSTMState:
        shape = (self.config.layers, batch, self.config.hidden)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)


def lstm_cell(gates: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.LSTM's update from its gate pre-activations (N, 4H: i, f, g, o) and the cell (N, H): the new (h, c)."""
    i, f, g, o = gates.chunk(4, dim=1)
    cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(cell), cell
