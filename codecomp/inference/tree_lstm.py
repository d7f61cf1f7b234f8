"""Tree-LSTM completer: the token at a hole (the cursor), from the code on both sides of it."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from codecomp.checkpoint import load_checkpoint, model_state
from codecomp.data.holes import HoleBatch, HoleExample, collate_holes, make_holes
from codecomp.data.tree_vocab import TreeVocab
from codecomp.inference.types import Candidate
from codecomp.models.components.hole_head import HoleScores, PointerGeneratorHead
from codecomp.models.components.tree_lstm import BiTreeEncoder
from codecomp.parsing import leaf_at, parse
from codecomp.parsing.cursor import WORD, WORD_BYTE

FAMILY = "tree_lstm"
_TYPED = re.compile(WORD_BYTE + rb"+\Z")  # the word bytes just before the cursor
_REST = re.compile(WORD_BYTE + rb"+")  # and from the cursor on
# Stands for the token at the cursor while parsing: an identifier, so the tree around it is the
# tree of finished code; its text is hidden from the model.
PLACEHOLDER = b"__codecomp_hole__"


@dataclasses.dataclass(frozen=True)
class HoleRequest:
    """A document and a cursor (byte offset) where a token is missing or partly typed."""

    document: bytes
    cursor: int
    language: str


class NoHole(ValueError):
    """The cursor is not where an identifier can stand (inside a string or a comment, say)."""


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
) -> list[list[Candidate]]:
    """Top-k texts per hole by P = gate * P_vocab + (1 - gate) * copy mass, merged by text.

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
        results.append([Candidate(text.encode(), math.log(p)) for text, p in best if p > 0])
    return results


class TreeLSTMCompleter:
    """Top-k tokens for the hole at each request's cursor, batched over requests."""

    def __init__(
        self, model: HoleModel, vocab: TreeVocab, target_kinds: Mapping[str, Sequence[str]], device: str = "cpu"
    ) -> None:
        self.model, self.vocab, self.target_kinds = model.to(device).eval(), vocab, target_kinds
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> TreeLSTMCompleter:
        checkpoint = load_checkpoint(path, FAMILY, device)
        description = checkpoint["codecomp"]
        vocab = TreeVocab.from_json(description["vocab"])
        model = HoleModel(len(vocab.kinds), len(vocab.values), **description["model_config"])
        model.load_state_dict(model_state(checkpoint))
        return cls(model, vocab, description["target_kinds"], device)

    def hole_example(self, request: HoleRequest) -> tuple[HoleExample, bytes]:
        """Parse the document with the placeholder standing for the token at the cursor, and hide it.
        Returns the example and the part of the token already typed."""
        if not 0 <= request.cursor <= len(request.document):
            raise ValueError(f"cursor {request.cursor} outside the document (0..{len(request.document)})")
        # The word typed before the cursor (what `leaf_at` would give, without a parse of its own).
        typed = _TYPED.search(request.document, max(0, request.cursor - 256), request.cursor)
        partial = typed.group() if typed is not None and WORD.fullmatch(typed.group()) else b""
        start = request.cursor - len(partial)
        rest = _REST.match(request.document, request.cursor)  # the rest of a word the cursor is inside
        end = rest.end() if rest is not None else request.cursor
        source = request.document[:start] + PLACEHOLDER + request.document[end:]
        tree = parse(source, request.language)
        leaf = leaf_at(tree, start + len(PLACEHOLDER))
        if leaf is None or tree.value(leaf.node) != PLACEHOLDER.decode():
            raise NoHole("the cursor is not where an identifier can stand")
        return make_holes(tree, np.array([leaf.node])), partial

    @torch.inference_mode()
    def complete(self, requests: Sequence[HoleRequest], k: int = 5) -> list[list[Candidate]]:
        """Top-k candidates (texts of whole tokens, with natural-log probabilities), best first."""
        if not requests:
            return []
        examples, partials = zip(*(self.hole_example(r) for r in requests), strict=True)
        return self.rank(examples, partials, k)

    @torch.inference_mode()
    def rank(self, examples: Sequence[HoleExample], partials: Sequence[bytes], k: int = 5) -> list[list[Candidate]]:
        """Top-k candidates for holes already made by `hole_example`, in one batched pass."""
        batch = collate_holes(examples, self.vocab, self.target_kinds).to(self.device)
        return rank_holes(self.model(batch), batch, self.vocab, k, partials)
