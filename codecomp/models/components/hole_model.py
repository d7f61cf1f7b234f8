"""The hole-prediction network (bidirectional Tree-LSTM encoder and pointer-generator head) and the
ranking of texts for its holes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from codecomp.data.holes import HoleBatch
from codecomp.data.tree_vocab import TreeVocab
from codecomp.models.components.hole_head import HoleScores, PointerGeneratorHead
from codecomp.models.components.tree_lstm import BiTreeEncoder


class HoleModel(torch.nn.Module):
    """Encoder and head together: the network a TreeLSTMModule trains and a completer runs."""

    def __init__(
        self, n_kinds: int, n_values: int, embed_dim: int, hidden: int, pointer_dim: int, upward_only: bool
    ) -> None:
        super().__init__()
        self.encoder = BiTreeEncoder(n_kinds, n_values, embed_dim, hidden, upward_only=upward_only)
        self.head = PointerGeneratorHead(self.encoder.output_dim, n_values, pointer_dim)

    def forward(self, batch: HoleBatch) -> HoleScores:
        states = self.encoder(batch.trees)  # (N, D)
        return self.head(states, batch.hole_nodes, batch.occurrence_nodes, batch.pair_hole, batch.pair_occurrence)


def rank_holes(
    scores: HoleScores, batch: HoleBatch, vocab: TreeVocab, k: int, partials: Sequence[bytes] | None = None
) -> list[list[tuple[str, float]]]:
    """Top-k (text, probability) per hole, best first, by P = gate * P_vocab + (1 - gate) * copy mass,
    merged by text.

    Special tokens (UNK among them) are never proposed, so a target outside the vocabulary and
    absent from the file is always a miss. `partials` keeps only texts starting with what is typed.
    """
    generate = (scores.gate[:, None] * scores.vocab_log_probs.exp()).cpu().numpy()  # (H, V)
    generate[:, : vocab.n_specials] = 0.0
    copy = ((1 - scores.gate)[batch.pair_hole] * scores.copy_attention).cpu().numpy()  # (P,)
    pair_hole, pair_occurrence = batch.pair_hole.cpu().numpy(), batch.pair_occurrence.cpu().numpy()
    order = np.argsort(pair_hole, kind="stable")
    bounds = np.searchsorted(pair_hole[order], np.arange(len(generate) + 1))
    words = vocab.value_words
    results = []
    for hole, row in enumerate(generate):
        if partials is not None and partials[hole]:
            prefix = partials[hole].decode("utf-8", "replace")
            allowed = np.zeros(len(row), dtype=bool)
            allowed[vocab.ids_starting_with(prefix)] = True
            row = np.where(allowed, row, 0.0)
        else:
            prefix = ""
        merged: dict[str, float] = {}
        for index in np.argsort(-row)[: 4 * k].tolist():
            if row[index] > 0:
                merged[words[index]] = float(row[index])
        for pair in order[bounds[hole] : bounds[hole + 1]].tolist():
            text = batch.occurrence_texts[pair_occurrence[pair]]
            if text.startswith(prefix):
                if text not in merged:
                    merged[text] = float(row[vocab.values.id(text)]) if text in vocab.values else 0.0
                merged[text] += float(copy[pair])
        best = sorted(merged.items(), key=lambda item: -item[1])[:k]
        results.append([(text, p) for text, p in best if p > 0])
    return results
