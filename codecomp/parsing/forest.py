"""Many CodeTrees merged into one forest, for batched bottom-up and top-down passes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from codecomp.parsing.codetree import CodeTree, level_order


@dataclasses.dataclass(frozen=True)
class Forest:
    """Node arrays of several trees concatenated; parents re-indexed into the forest.

    Attributes:
        tree_ptr: (T + 1,) int64; the nodes of tree t are `tree_ptr[t]:tree_ptr[t + 1]`.
        parents: (N,) int64 forest index of each node's parent, -1 at every root.
        depth, height: (N,) int32.
        by_height: node indices grouped by height, leaves first (the bottom-up schedule).
        by_depth: node indices grouped by depth, roots first (the top-down schedule).
    """

    tree_ptr: np.ndarray
    parents: np.ndarray
    depth: np.ndarray
    height: np.ndarray
    by_height: list[np.ndarray]
    by_depth: list[np.ndarray]

    @classmethod
    def from_trees(cls, trees: Sequence[CodeTree]) -> Forest:
        sizes = np.array([len(tree) for tree in trees], dtype=np.int64)
        tree_ptr = np.zeros(len(trees) + 1, dtype=np.int64)
        np.cumsum(sizes, out=tree_ptr[1:])
        offsets = np.repeat(tree_ptr[:-1], sizes)
        parents = np.concatenate([tree.parents for tree in trees]).astype(np.int64) if trees else np.zeros(0, np.int64)
        parents = np.where(parents >= 0, parents + offsets, -1)
        depth = np.concatenate([tree.depth for tree in trees]) if trees else np.zeros(0, np.int32)
        height = np.concatenate([tree.height for tree in trees]) if trees else np.zeros(0, np.int32)
        return cls(tree_ptr, parents, depth, height, level_order(height), level_order(depth))

    def __len__(self) -> int:
        return len(self.parents)
