"""Held-out evaluation of hole prediction: the Tree-LSTM against frequency baselines and an ablation, on the
same holes, in each hole setting (`codecomp.data.hole_settings`): the whole file around the hole, an editor
mid-typing (the file up to the cursor, the rest of the statement gone, the code after it kept) and the prefix
before the hole only. Every system is scored per leaf kind and apart at member accesses (after `.`, `->`,
`::`), where an editor asks most."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from tqdm import tqdm

from codecomp.data.hole_settings import SETTINGS, cursor_text, is_member_access, sample_partial, statement_end
from codecomp.data.holes import HoleExample, target_leaves
from codecomp.data.shards import TextShard, TreeShard
from codecomp.inference.tree_lstm import HoleRequest, TreeLSTMCompleter
from codecomp.parsing import kind_names

log = logging.getLogger(__name__)
CONTEXTS = SETTINGS  # whole_file, editor, prefix
POSITIONS = ("member_access", "other")
RANK_CUTOFF = 10  # MRR counts ranks up to 10; a hit further down scores 0


@dataclasses.dataclass(frozen=True)
class EvalHole:
    """A target leaf of a held-out file.

    Attributes:
        document: the file; start, end: the leaf's bytes; kind: its kind name; target: its text.
        cut_end: the end of its enclosing statement (where the code an editor keeps starts).
        member_access: it follows `.`, `->` or `::`.
        partial: what is typed of it in the editor and prefix contexts (b"" for nothing).
    """

    document: bytes
    start: int
    end: int
    kind: str
    target: str
    cut_end: int
    member_access: bool
    partial: bytes = b""

    def request(self, context: str, language: str) -> HoleRequest:
        """The text a model reads in `context`, with the cursor after what is typed."""
        if context == "whole_file":
            return HoleRequest(self.document[: self.start] + self.document[self.end :], self.start, language)
        text, cursor = cursor_text(self.document, self.start, context, self.cut_end, self.partial)
        return HoleRequest(text, cursor, language, cut=True)

    def typed(self, context: str) -> str:
        """What is typed of the target in `context` (candidates must start with it)."""
        return "" if context == "whole_file" else self.partial.decode("utf-8")


def sample_eval_holes(
    corpus: Path,
    split: str,
    language: str,
    target_kinds: Mapping[str, Sequence[str]],
    count: int,
    seed: int,
    partial_rate: float = 0.0,
) -> list[EvalHole]:
    """`count` target leaves drawn uniformly from all target leaves of the split's trees; a share
    `partial_rate` of them partly typed in the editor and prefix contexts."""
    trees, texts = TreeShard(corpus / split / language), TextShard(corpus / split / language)
    names = kind_names(language)
    candidates: list[tuple[int, int]] = []
    for t in range(len(trees)):
        tree = trees.tree(t)
        candidates.extend((t, int(leaf)) for leaf in target_leaves(tree, target_kinds))
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(candidates), size=min(count, len(candidates)), replace=False).tolist())
    partial_rng = np.random.default_rng([seed, 1])  # its own stream: the holes stay those of partial_rate=0
    holes = []
    for pick in picks:
        t, leaf = candidates[pick]
        tree = trees.tree(t)
        document = texts.document(int(trees.file_index[t]))
        start, target = int(tree.starts[leaf]), tree.value(leaf) or ""
        holes.append(EvalHole(document, start, int(tree.ends[leaf]), names[int(tree.kinds[leaf])], target,
                              statement_end(tree, leaf), is_member_access(document, start),
                              sample_partial(target, partial_rate, partial_rng)))  # fmt: skip
    return holes


class TrainFrequency:
    """The most frequent texts of each target kind in a train split: the baseline that knows the kind only."""

    def __init__(self, corpus: Path, language: str, target_kinds: Mapping[str, Sequence[str]]) -> None:
        shard = TreeShard(corpus / "train" / language)
        names = kind_names(language)
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for t in tqdm(range(len(shard)), desc=f"{language}: train frequencies", unit="tree"):
            tree = shard.tree(t)
            for leaf in target_leaves(tree, target_kinds).tolist():
                counts[names[int(tree.kinds[leaf])]][tree.value(leaf) or ""] += 1
        self.ranked = {kind: [text for text, _ in c.most_common()] for kind, c in counts.items()}

    def ranking(self, kind: str, typed: str = "") -> list[str]:
        """The top RANK_CUTOFF texts of `kind` that start with `typed`."""
        found: list[str] = []
        for text in self.ranked.get(kind, []):
            if text.startswith(typed):
                found.append(text)
                if len(found) == RANK_CUTOFF:
                    break
        return found


def visible_texts(example: HoleExample, target_kinds: Mapping[str, Sequence[str]]) -> list[str]:
    """Texts of the target-kind leaves the context shows (what a pointer could copy)."""
    return [example.tree.value(int(n)) or "" for n in target_leaves(example.tree, target_kinds)]


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
    """Means in percent (MRR as 0-1) overall, per leaf kind and per position (member access or other)."""

    def means(index: Sequence[int]) -> dict[str, float]:
        if not index:
            return dict.fromkeys(per_hole, 0.0)
        return {m: (1.0 if m == "mrr" else 100.0) * float(np.mean([v[i] for i in index])) for m, v in per_hole.items()}

    summary: dict[str, Any] = means(range(len(holes)))
    summary["by_kind"] = {}
    for kind in sorted({h.kind for h in holes}):
        index = [i for i, h in enumerate(holes) if h.kind == kind]
        summary["by_kind"][kind] = {"holes": len(index), **means(index)}
    summary["by_position"] = {}
    for position in POSITIONS:
        index = [i for i, h in enumerate(holes) if h.member_access == (position == "member_access")]
        summary["by_position"][position] = {"holes": len(index), **means(index)}
    return summary


def model_rankings(
    completer: TreeLSTMCompleter, examples: Sequence[tuple[HoleExample, bytes]], batch: int = 16, desc: str = "holes"
) -> list[list[str]]:
    """The completer's top RANK_CUTOFF texts for holes made by `hole_example` (each with what is typed)."""
    out: list[list[str]] = []
    with tqdm(total=len(examples), desc=desc, unit="hole") as bar:
        for start in range(0, len(examples), batch):
            chunk = examples[start : start + batch]
            ranked = completer.rank([e for e, _ in chunk], [typed for _, typed in chunk], k=RANK_CUTOFF)
            out.extend([c.text.decode("utf-8", "replace") for c in candidates] for candidates in ranked)
            bar.update(len(chunk))
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
    contexts: Sequence[str] = CONTEXTS,
    partial_rate: float = 0.0,
) -> dict[str, Any]:
    """Hole metrics on `count` target leaves of `corpus`'s `split`, in each of `contexts`; the train-frequency
    baseline counts the train split of `fit_corpus` (the corpus the model learnt from; default `corpus`).
    With `partial_rate`, that share of the holes is partly typed in the editor and prefix contexts, and every
    system's candidates are kept to those starting with what is typed."""
    unknown = set(contexts) - set(CONTEXTS)
    if unknown:
        raise ValueError(f"unknown hole contexts {sorted(unknown)}; expected some of {CONTEXTS}")
    holes = sample_eval_holes(corpus, split, language, completer.target_kinds, count, seed, partial_rate)
    frequent = TrainFrequency(corpus if fit_corpus is None else fit_corpus, language, completer.target_kinds)
    in_vocab = [h.target in completer.vocab.values for h in holes]
    result: dict[str, Any] = {
        "holes": len(holes),
        "target_oov_rate": 100.0 * (1 - float(np.mean(in_vocab))),
        "member_access_share": 100.0 * float(np.mean([h.member_access for h in holes])),
        "partly_typed_share": 100.0 * float(np.mean([bool(h.partial) for h in holes])),
    }
    for context in contexts:
        # parsed once, read by every system (the examples do not depend on a model's vocabulary)
        examples = [completer.hole_example(h.request(context, language)) for h in holes]
        visible = [visible_texts(example, completer.target_kinds) for example, _ in examples]
        copyable = [h.target in texts for h, texts in zip(holes, visible, strict=True)]
        log.info("%s/%s: %d holes", language, context, len(holes))
        typed = [h.typed(context) for h in holes]
        file_counts = [Counter(t for t in texts if t.startswith(p)) for p, texts in zip(typed, visible, strict=True)]
        rankings = {
            "model": model_rankings(completer, examples, desc=f"{language}/{context}: model"),
            "file_frequency": [[t for t, _ in counts.most_common(RANK_CUTOFF)] for counts in file_counts],
            "train_frequency": [frequent.ranking(h.kind, p) for h, p in zip(holes, typed, strict=True)],
        }
        if ablation is not None:
            rankings["upward_only"] = model_rankings(ablation, examples, desc=f"{language}/{context}: ablation")
        result[context] = {
            "copyable_share": 100.0 * float(np.mean(copyable)),
            "unpredictable_share": 100.0
            * float(np.mean([not (a or b) for a, b in zip(in_vocab, copyable, strict=True)])),
            **{name: summarise(scores_of(ranking, holes), holes) for name, ranking in rankings.items()},
        }
    return result


BASELINES = ("file_frequency", "train_frequency")


def print_holes(report: dict[str, Any], console: Console) -> None:
    """The hole metrics of a `codecomp-eval` report: per language, context and system (member accesses apart),
    then the model's top-1 per leaf kind beside the better frequency baseline's."""
    title = (f"{report['checkpoint']} holes on {report['corpus']} [{report['split']}]; train frequencies from "
             f"{report['fit_corpus']}/train")  # fmt: skip
    table = Table(title=escape(title))
    for column in ("language", "context", "system", "top-1 %", "top-5 %", "MRR", "top-1 member %", "top-1 other %"):
        table.add_column(column, justify="left" if column in ("language", "context", "system") else "right")
    kinds = Table(title="top-1 % per leaf kind: model / better frequency baseline")
    for column in ("language", "kind", "holes"):
        kinds.add_column(column, justify="left" if column != "holes" else "right")
    contexts = [c for c in CONTEXTS if any(c in result for result in report["languages"].values())]
    for context in contexts:
        kinds.add_column(context, justify="right")
    for language, result in report["languages"].items():
        for context in contexts:
            for system, scores in result.get(context, {}).items():
                if isinstance(scores, dict):
                    position = scores["by_position"]
                    table.add_row(language, context, system, f"{scores['top1']:.1f}", f"{scores['top5']:.1f}",
                                  f"{scores['mrr']:.3f}", f"{position['member_access']['top1']:.1f}",
                                  f"{position['other']['top1']:.1f}")  # fmt: skip
        unpredictable = ", ".join(f"{result[c]['unpredictable_share']:.1f}% {c}" for c in contexts if c in result)
        console.print(f"{language}: {result['holes']} holes ({result['member_access_share']:.1f}% at member accesses, "
                      f"{result['partly_typed_share']:.1f}% partly typed), {result['target_oov_rate']:.1f}% of "
                      f"targets outside the vocabulary; not predictable at all (neither in vocabulary nor in "
                      f"context): {unpredictable}")  # fmt: skip
        first = next(c for c in contexts if c in result)
        for kind, counts in result[first]["model"]["by_kind"].items():
            cells = []
            for context in contexts:
                systems = result.get(context, {})
                best = max(systems[b]["by_kind"][kind]["top1"] for b in BASELINES if b in systems)
                cells.append(f"{systems['model']['by_kind'][kind]['top1']:.1f} / {best:.1f}")
            kinds.add_row(language, kind, str(counts["holes"]), *cells)
    console.print(table)
    console.print(kinds)
