"""Hole-prediction examples: leaves hidden from a Tree-LSTM, and batches of them over a forest."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from codecomp.data.hole_settings import (
    SETTINGS,
    HoleSettings,
    cursor_text,
    parse_at_cursor,
    sample_partial,
    statement_end,
    window,
)
from codecomp.data.tree_batch import TreeBatch
from codecomp.data.tree_vocab import TreeVocab
from codecomp.parsing import CodeTree, kind_names
from codecomp.parsing.codetree import HOLE

DEFAULT_TARGET_KINDS: dict[str, tuple[str, ...]] = {
    "javascript": ("identifier", "property_identifier", "shorthand_property_identifier",
                   "shorthand_property_identifier_pattern", "private_property_identifier"),
    "cpp": ("identifier", "field_identifier", "type_identifier", "namespace_identifier"),
}  # fmt: skip


def target_leaves(tree: CodeTree, target_kinds: Mapping[str, Sequence[str]]) -> np.ndarray:
    """Indices of the leaves whose kind is a prediction target for the tree's language."""
    names = kind_names(tree.language)
    wanted = [kind for kind, name in names.items() if name in target_kinds.get(tree.language, ())]
    return np.flatnonzero(tree.is_leaf & np.isin(tree.kinds, wanted) & (tree.values >= 0))


@dataclasses.dataclass(frozen=True)
class HoleExample:
    """A tree whose `holes` (leaf indices) have their values hidden; `targets` are the hidden texts.

    `setting` says how the tree was built (`hole_settings.SETTINGS`); `partials`, when not empty, holds per
    hole the part of its token already typed (b"" where none).
    """

    tree: CodeTree
    holes: np.ndarray
    targets: tuple[str, ...]
    setting: str = "whole_file"
    partials: tuple[bytes, ...] = ()


def make_holes(
    tree: CodeTree,
    holes: np.ndarray,
    targets: tuple[str, ...] | None = None,
    setting: str = "whole_file",
    partials: tuple[bytes, ...] = (),
) -> HoleExample:
    """Hide the leaves `holes`; their texts are the targets unless `targets` are given (a placeholder's)."""
    targets = tuple(tree.value(int(h)) or "" for h in holes) if targets is None else targets
    values = tree.values.copy()
    values[holes] = HOLE
    holes = np.asarray(holes, dtype=np.int64)
    return HoleExample(dataclasses.replace(tree, values=values), holes, targets, setting, partials)


def sample_holes(
    tree: CodeTree, target_kinds: Mapping[str, Sequence[str]], rate: float, max_holes: int, rng: np.random.Generator
) -> HoleExample:
    """Hide a random `rate` share (at least one, at most `max_holes`) of the tree's target leaves."""
    candidates = target_leaves(tree, target_kinds)
    count = min(len(candidates), max_holes, max(1, round(rate * len(candidates))))
    return make_holes(tree, np.sort(rng.choice(candidates, size=count, replace=False)) if count else candidates)


def cursor_example(
    tree: CodeTree, document: bytes, leaf: int, setting: str, partial: bytes = b"", window_bytes: int | None = None
) -> HoleExample | None:
    """One hole at target `leaf` of `document` (parsed as `tree`) in an editor or prefix setting: the text an
    editor holds while that token is typed (`hole_settings.cursor_text`), within the window if given, parsed
    with the placeholder at the cursor. None when the parse does not keep the placeholder whole."""
    start = int(tree.starts[leaf])
    text, cursor = cursor_text(document, start, setting, statement_end(tree, leaf), partial)
    before, after = text[: cursor - len(partial)], text[cursor:]
    if window_bytes is not None:
        before, after = window(before, after, window_bytes)
    parsed = parse_at_cursor(before, after, tree.language, cut=True)
    if parsed is None:
        return None
    cut, hole = parsed
    return make_holes(cut, np.array([hole]), (tree.value(leaf) or "",), setting, (partial,))


def sample_examples(
    tree: CodeTree,
    document: bytes | None,
    settings: HoleSettings,
    target_kinds: Mapping[str, Sequence[str]],
    rate: float,
    max_holes: int,
    rng: np.random.Generator,
    cursor_holes: int = 1,
) -> list[HoleExample]:
    """Holes of a setting drawn by share: whole_file holes as `sample_holes` (one example), or editor or prefix
    holes at up to `cursor_holes` distinct random target leaves, each its own text cut at its cursor and parsed
    apart (whole_file when the document is not at hand or no placeholder parses). A cursor text holds one hole
    where a whole file holds many, and within the window it is small: several per file even that out."""
    setting = settings.draw(rng)
    candidates = target_leaves(tree, target_kinds)
    if setting != "whole_file" and document is not None and len(candidates):
        examples = []
        for leaf in rng.choice(candidates, size=min(cursor_holes, len(candidates)), replace=False).tolist():
            partial = sample_partial(tree.value(leaf) or "", settings.partial_rate, rng)
            example = cursor_example(tree, document, leaf, setting, partial, settings.window_bytes)
            if example is not None:
                examples.append(example)
        if examples:
            return examples
    return [sample_holes(tree, target_kinds, rate, max_holes, rng)]


def collate_examples(
    items: Sequence[Sequence[HoleExample]], vocab: TreeVocab, target_kinds: Mapping[str, Sequence[str]]
) -> HoleBatch:
    """`collate_holes` over the examples of several files (a DataLoader's items)."""
    return collate_holes([example for item in items for example in item], vocab, target_kinds)


@dataclasses.dataclass
class HoleBatch:
    """Several hole examples as one forest, with what the pointer needs.

    Attributes:
        trees: the forest (node kind and value ids, schedules).
        hole_nodes: (H,) forest indices of the holes; hole_tree: (H,) their tree.
        target_ids: (H,) vocabulary id of each hidden text (UNK when outside the vocabulary).
        occurrence_nodes: (O,) forest indices of the visible target leaves (what can be copied).
        pair_hole, pair_occurrence: (P,) every (hole, occurrence) pair of the same tree.
        pair_match: (P,) bool, the occurrence's text is the hole's hidden text.
        occurrence_texts: the text of each occurrence (to merge copy scores by name at inference).
        targets: the hidden texts.
        hole_setting: (H,) each hole's setting, an index into `hole_settings.SETTINGS`.
        partials: per hole, the part of its token already typed (b"" where none).
    """

    trees: TreeBatch
    hole_nodes: torch.Tensor
    hole_tree: torch.Tensor
    target_ids: torch.Tensor
    occurrence_nodes: torch.Tensor
    pair_hole: torch.Tensor
    pair_occurrence: torch.Tensor
    pair_match: torch.Tensor
    occurrence_texts: list[str]
    targets: list[str]
    hole_setting: torch.Tensor
    partials: list[bytes]

    def to(self, device: torch.device | str) -> HoleBatch:
        moved = {
            field.name: getattr(self, field.name).to(device)
            for field in dataclasses.fields(self)
            if isinstance(getattr(self, field.name), torch.Tensor)
        }
        return dataclasses.replace(self, trees=self.trees.to(device), **moved)


def collate_holes(
    examples: Sequence[HoleExample], vocab: TreeVocab, target_kinds: Mapping[str, Sequence[str]]
) -> HoleBatch:
    kind_ids, value_ids = zip(*(vocab.encode(example.tree) for example in examples), strict=True)
    trees = TreeBatch.from_trees([e.tree for e in examples], list(kind_ids), list(value_ids))
    offsets = trees.tree_ptr.tolist()
    hole_nodes: list[int] = []
    hole_tree: list[int] = []
    occurrence_nodes: list[int] = []
    occurrence_texts: list[str] = []
    targets: list[str] = []
    hole_setting: list[int] = []
    partials: list[bytes] = []
    pair_hole, pair_occurrence, pair_match = [], [], []
    for index, example in enumerate(examples):
        first_hole, first_occurrence = len(hole_nodes), len(occurrence_nodes)
        visible = target_leaves(example.tree, target_kinds)  # holes have no value, so are not visible
        texts = [example.tree.value(int(node)) or "" for node in visible]
        hole_nodes.extend((example.holes + offsets[index]).tolist())
        hole_tree.extend([index] * len(example.holes))
        targets.extend(example.targets)
        hole_setting.extend([SETTINGS.index(example.setting)] * len(example.holes))
        partials.extend(example.partials or [b""] * len(example.holes))
        occurrence_nodes.extend((visible + offsets[index]).tolist())
        occurrence_texts.extend(texts)
        # Every (hole, occurrence) pair of this tree, and whether the occurrence's text is the answer.
        text_ids: dict[str, int] = {}
        occurrence_ids = np.array([text_ids.setdefault(t, len(text_ids)) for t in texts], dtype=np.int64)
        target_ids = np.array([text_ids.get(t, -1) for t in example.targets], dtype=np.int64)
        pair_hole.append(np.repeat(np.arange(len(example.holes)), len(visible)) + first_hole)
        pair_occurrence.append(np.tile(np.arange(len(visible)), len(example.holes)) + first_occurrence)
        pair_match.append((target_ids[:, None] == occurrence_ids[None, :]).ravel())
    as_long = lambda values: torch.tensor(values, dtype=torch.long)  # noqa: E731
    return HoleBatch(
        trees=trees,
        hole_nodes=as_long(hole_nodes),
        hole_tree=as_long(hole_tree),
        target_ids=as_long(vocab.values.ids(targets)),
        occurrence_nodes=as_long(occurrence_nodes),
        pair_hole=torch.from_numpy(np.concatenate(pair_hole)).long(),
        pair_occurrence=torch.from_numpy(np.concatenate(pair_occurrence)).long(),
        pair_match=torch.from_numpy(np.concatenate(pair_match)),
        occurrence_texts=occurrence_texts,
        targets=list(targets),
        hole_setting=as_long(hole_setting),
        partials=partials,
    )
