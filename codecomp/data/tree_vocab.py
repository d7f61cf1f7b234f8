"""Vocabularies of a Tree-LSTM: node kinds and leaf values of several languages in one model."""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from codecomp.data.vocab import EMPTY, HOLE, KIND_SPECIALS, VALUE_SPECIALS, Vocabulary
from codecomp.parsing import CodeTree, kind_names
from codecomp.parsing.codetree import HOLE as HOLE_VALUE

# Leaves whose text a model reads and predicts; others (comments, keywords, punctuation) get EMPTY.
_NOT_VALUES = ("comment",)


class TreeVocab:
    """Kind words are `language/kind`; values are shared across languages (names like `i` are)."""

    def __init__(self, kinds: Vocabulary, values: Vocabulary) -> None:
        self.kinds, self.values = kinds, values
        self.value_words = [""] * len(values)
        for word, index in values.tokenizer.get_vocab().items():
            self.value_words[index] = word
        self.hole_id, self.empty_id = values.id(HOLE), values.id(EMPTY)
        self._sorted_ids = sorted(range(len(self.value_words)), key=self.value_words.__getitem__)
        self._sorted_words = [self.value_words[i] for i in self._sorted_ids]
        self.n_specials = len(VALUE_SPECIALS)

    @classmethod
    def from_corpus(cls, corpus: Path, languages: Sequence[str]) -> TreeVocab:
        """Merge the per-language vocabularies that `codecomp-data` built on the train split."""
        kind_counts: dict[str, int] = {}
        value_counts: dict[str, int] = {}
        for language in languages:
            kinds = Vocabulary.load(corpus / "vocab" / f"{language}.kinds.json")
            values = Vocabulary.load(corpus / "vocab" / f"{language}.values.json")
            for word, index in kinds.tokenizer.get_vocab().items():
                kind_counts[f"{language}/{word}"] = -index  # keep each language's frequency order
            for word, index in values.tokenizer.get_vocab().items():
                value_counts[word] = max(value_counts.get(word, -(10**9)), -index)
        kinds_vocab = Vocabulary.from_counts(kind_counts, len(kind_counts) + 2, -(10**9), KIND_SPECIALS)
        values_vocab = Vocabulary.from_counts(value_counts, len(value_counts) + 4, -(10**9), VALUE_SPECIALS)
        return cls(kinds_vocab, values_vocab)

    def ids_starting_with(self, prefix: str) -> list[int]:
        """Value ids whose word starts with `prefix`: a range of the sorted words, found by bisection."""
        start = bisect.bisect_left(self._sorted_words, prefix)
        end = bisect.bisect_left(self._sorted_words, prefix + "\U0010ffff")  # past every word prefix + more
        return self._sorted_ids[start:end]

    def to_json(self) -> dict[str, str]:
        return {"kinds": self.kinds.to_json(), "values": self.values.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> TreeVocab:
        return cls(Vocabulary.from_json(data["kinds"]), Vocabulary.from_json(data["values"]))

    @functools.cache  # noqa: B019 (one vocabulary per model; the cache lives as long as the model)
    def _kind_lookup(self, language: str) -> np.ndarray:
        """Grammar kind id -> kind vocabulary id, for every id the grammar has."""
        lookup = np.full(65536, self.kinds.unk_id, dtype=np.int64)
        for kind_id, name in kind_names(language).items():
            lookup[kind_id] = self.kinds.id(f"{language}/{name}")
        return lookup

    def encode(self, tree: CodeTree) -> tuple[np.ndarray, np.ndarray]:
        """(N,) kind ids and (N,) value ids of a tree: leaf texts for named leaves (UNK if unknown),
        HOLE for holes, EMPTY for everything else."""
        kind_ids = self._kind_lookup(tree.language)[tree.kinds]
        n = len(tree.value_table)
        table_ids = np.array([*self.values.ids(tree.value_table), self.empty_id, self.hole_id], dtype=np.int64)
        # tree.values is an index into value_table, NO_VALUE (-1) for inner nodes, HOLE (-2) for holes
        value_ids = table_ids[np.where(tree.values >= 0, tree.values, np.where(tree.values == -1, n, n + 1))]
        comment = self.kinds.id(f"{tree.language}/comment")
        value_ids[~tree.named | (kind_ids == comment)] = self.empty_id
        value_ids[tree.values == HOLE_VALUE] = self.hole_id
        return kind_ids, value_ids
