"""Held-out evaluation of hole prediction: the Tree-LSTM against frequency baselines and an ablation,
on the same holes, with the whole file or only the prefix before the hole as context."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from codecomp.data.holes import target_leaves
from codecomp.data.shards import TextShard, TreeShard
from codecomp.inference.tree_lstm import HoleRequest, TreeLSTMCompleter
from codecomp.parsing import kind_names

log = logging.getLogger(__name__)
CONTEXTS = ("whole_file", "prefix")
RANK_CUTOFF = 10  # MRR counts ranks up to 10; a hit further down scores 0


@dataclasses.dataclass(frozen=True)
class EvalHole:
    document: bytes
    start: int
    end: int
    kind: str
    target: str

    def request(self, context: str, language: str) -> HoleRequest:
        if context == "whole_file":
            return HoleRequest(self.document[: self.start] + self.document[self.end :], self.start, language)
        return HoleRequest(self.document[: self.start], self.start, language)


def sample_eval_holes(
    corpus: Path, split: str, language: str, target_kinds: Mapping[str, Sequence[str]], count: int, seed: int
) -> list[EvalHole]:
    """`count` target leaves drawn uniformly from all target leaves of the split's trees."""
    trees, texts = TreeShard(corpus / split / language), TextShard(corpus / split / language)
    names = kind_names(language)
    candidates: list[tuple[int, int]] = []
    for t in range(len(trees)):
        tree = trees.tree(t)
        candidates.extend((t, int(leaf)) for leaf in target_leaves(tree, target_kinds))
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(candidates), size=min(count, len(candidates)), replace=False).tolist())
    holes = []
    for pick in picks:
        t, leaf = candidates[pick]
        tree = trees.tree(t)
        document = texts.document(int(trees.file_index[t]))
        holes.append(EvalHole(document, int(tree.starts[leaf]), int(tree.ends[leaf]), names[int(tree.kinds[leaf])],
                              tree.value(leaf) or ""))  # fmt: skip
    return holes


def train_frequency(corpus: Path, language: str, target_kinds: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The most frequent texts of each target kind in `corpus`'s train split, best first (top 10)."""
    shard = TreeShard(corpus / "train" / language)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for t in tqdm(range(len(shard)), desc=f"{language}: train frequencies", unit="tree"):
        tree = shard.tree(t)
        names = kind_names(language)
        for leaf in target_leaves(tree, target_kinds).tolist():
            counts[names[int(tree.kinds[leaf])]][tree.value(leaf) or ""] += 1
    return {kind: [text for text, _ in c.most_common(RANK_CUTOFF)] for kind, c in counts.items()}


def visible_texts(completer: TreeLSTMCompleter, request: HoleRequest) -> list[str]:
    """Texts of the target-kind leaves the context shows (what a pointer could copy)."""
    example, _ = completer.hole_example(request)
    return [example.tree.value(int(n)) or "" for n in target_leaves(example.tree, completer.target_kinds)]


def scores_of(rankings: Sequence[Sequence[str]], holes: Sequence[EvalHole]) -> dict[str, list[float]]:
    """Per hole: top-1 and top-5 hits (0/1) and reciprocal rank (0 beyond RANK_CUTOFF)."""
    out: dict[str, list[float]] = {"top1": [], "top5": [], "mrr": []}
    for ranking, hole in zip(rankings, holes, strict=True):
        rank = ranking.index(hole.target) + 1 if hole.target in ranking[:RANK_CUTOFF] else 0
        out["top1"].append(float(rank == 1))
        out["top5"].append(float(0 < rank <= 5))
        out["mrr"].append(1.0 / rank if rank else 0.0)
    return out


def summarise(per_hole: dict[str, list[float]], holes: Sequence[EvalHole]) -> dict[str, Any]:
    """Means in percent (MRR as 0-1) overall and per leaf kind."""

    def means(index: Sequence[int]) -> dict[str, float]:
        return {m: (1.0 if m == "mrr" else 100.0) * float(np.mean([v[i] for i in index])) for m, v in per_hole.items()}

    summary: dict[str, Any] = means(range(len(holes)))
    summary["by_kind"] = {}
    for kind in sorted({h.kind for h in holes}):
        index = [i for i, h in enumerate(holes) if h.kind == kind]
        summary["by_kind"][kind] = {"holes": len(index), **means(index)}
    return summary


def model_rankings(
    completer: TreeLSTMCompleter, requests: Sequence[HoleRequest], batch: int = 16, desc: str = "holes"
) -> list[list[str]]:
    out: list[list[str]] = []
    with tqdm(total=len(requests), desc=desc, unit="hole") as bar:
        for start in range(0, len(requests), batch):
            for candidates in completer.complete_holes(requests[start : start + batch], k=RANK_CUTOFF):
                out.append([c.text.decode("utf-8", "replace") for c in candidates])
            bar.update(min(batch, len(requests) - start))
    return out


def evaluate_holes(
    completer: TreeLSTMCompleter,
    ablation: TreeLSTMCompleter | None,
    corpus: Path,
    split: str,
    language: str,
    count: int,
    seed: int,
    fit_corpus: Path | None = None,
) -> dict[str, Any]:
    """Hole metrics on `count` target leaves of `corpus`'s `split`; the train-frequency baseline counts the train
    split of `fit_corpus` (the corpus the model learnt from; default `corpus`)."""
    holes = sample_eval_holes(corpus, split, language, completer.target_kinds, count, seed)
    frequent = train_frequency(corpus if fit_corpus is None else fit_corpus, language, completer.target_kinds)
    in_vocab = [h.target in completer.vocab.values for h in holes]
    result: dict[str, Any] = {"holes": len(holes), "target_oov_rate": 100.0 * (1 - float(np.mean(in_vocab)))}
    for context in CONTEXTS:
        requests = [h.request(context, language) for h in holes]
        visible = [visible_texts(completer, r) for r in requests]
        copyable = [h.target in texts for h, texts in zip(holes, visible, strict=True)]
        log.info("%s/%s: %d holes", language, context, len(holes))
        rankings = {
            "model": model_rankings(completer, requests, desc=f"{language}/{context}: model"),
            "file_frequency": [[t for t, _ in Counter(texts).most_common(RANK_CUTOFF)] for texts in visible],
            "train_frequency": [frequent.get(h.kind, []) for h in holes],
        }
        if ablation is not None:
            rankings["upward_only"] = model_rankings(ablation, requests, desc=f"{language}/{context}: ablation")
        result[context] = {
            "copyable_share": 100.0 * float(np.mean(copyable)),
            "unpredictable_share": 100.0
            * float(np.mean([not (a or b) for a, b in zip(in_vocab, copyable, strict=True)])),
            **{name: summarise(scores_of(ranking, holes), holes) for name, ranking in rankings.items()},
        }
    return result
