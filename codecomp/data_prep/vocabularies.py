"""Vocabularies of a corpus, built on its train split only, and their out-of-vocabulary rates."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from codecomp.data.shards import TreeShard
from codecomp.data.vocab import KIND_SPECIALS, VALUE_SPECIALS, Vocabulary

log = logging.getLogger(__name__)

# Comments are leaves too, but a model predicts code, not prose.
_NOT_VALUES = ("comment",)


def value_counts(shard: TreeShard) -> Counter[str]:
    """How often each leaf text of a named, non-comment leaf occurs in the shard."""
    kinds, named, values = (np.asarray(shard.arrays[name]) for name in ("kinds", "named", "values"))
    excluded = [kind for kind, name in shard.kind_names.items() if name in _NOT_VALUES]
    mask = named & (values >= 0) & ~np.isin(kinds, excluded)
    ids, counts = np.unique(values[mask], return_counts=True)
    return Counter({shard.value_table[i]: int(c) for i, c in zip(ids.tolist(), counts.tolist(), strict=False)})


def kind_counts(shard: TreeShard) -> Counter[str]:
    ids, counts = np.unique(np.asarray(shard.arrays["kinds"]), return_counts=True)
    result: Counter[str] = Counter()
    for kind, count in zip(ids.tolist(), counts.tolist(), strict=False):
        result[shard.kind_names[kind]] += int(count)  # aliased kinds share a name
    return result


def oov_rate(counts: Counter[str], vocab: Vocabulary) -> float:
    total = sum(counts.values())
    return sum(c for word, c in counts.items() if word not in vocab) / total if total else 0.0


def build_vocabularies(corpus: Path, max_values: int, min_frequency: int) -> dict[str, dict]:
    """Write `vocab/<language>.{kinds,values}.json` from train trees; report sizes and OoV rates."""
    report: dict[str, dict] = {}
    (corpus / "vocab").mkdir(exist_ok=True)
    for train in sorted(corpus.glob("train/*/trees")):
        language = train.parent.name
        shard = TreeShard(train.parent)
        kinds = Vocabulary.from_counts(kind_counts(shard), max_size=10_000, specials=KIND_SPECIALS)
        values = Vocabulary.from_counts(value_counts(shard), max_values, min_frequency, VALUE_SPECIALS)
        kinds.save(corpus / "vocab" / f"{language}.kinds.json")
        values.save(corpus / "vocab" / f"{language}.values.json")
        entry: dict = {"kinds": len(kinds), "values": len(values), "oov": {}}
        for split in ("train", "valid", "test"):
            if (corpus / split / language / "trees").exists():
                entry["oov"][split] = round(oov_rate(value_counts(TreeShard(corpus / split / language)), values), 4)
        report[language] = entry
    return report
