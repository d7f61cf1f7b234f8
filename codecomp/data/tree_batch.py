"""A forest of ASTs for the level-batched Tree-LSTM: node ids, and the schedules of its two passes.

`TreeBatch.from_trees` does the planning once per batch, in numpy, so the encoder's passes
(`codecomp.models.components.tree_lstm`) run only batched tensor steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from codecomp.parsing import CodeTree, Forest


def _long(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))


def _inverse(perm: np.ndarray) -> np.ndarray:
    rank = np.empty_like(perm)
    rank[perm] = np.arange(len(perm), dtype=perm.dtype)
    return rank


@dataclasses.dataclass(frozen=True, eq=False)
class TreeBatch:
    """Many trees as one forest, with the schedules of the level-batched passes precomputed.

    Node indices are forest indices (tree t's nodes are `tree_ptr[t]:tree_ptr[t + 1]`, each tree in
    preorder) unless stated; a level's rows are its nodes in the order a pass computes them. Tensors
    are int64 (`is_leaf` bool); `*_sizes`, `up_readers` and `up_splits` are Python ints, so splits need
    no device sync.

    Bottom-up, by height (leaves first): `up_perm` lists the nodes level by level, within a level by
    the height of their parent (roots last), so a level's results split into contiguous chunks, one per
    later level that reads them. Level h receives its children's states as those chunks concatenated in
    level order: `up_children[h]` are these children, and `up_parent_row[h]` the row of each one's
    parent in level h.

    Node inputs: a forest has far fewer distinct (kind, value) pairs than nodes (about 1 in 36 in 64 C++
    files), so the cells' input terms are computed once per distinct pair and gathered per node, and
    the leaves' states too (a leaf's state depends on its input alone).

    Top-down, by depth (roots first): `down_perm` lists the nodes level by level, within a level the
    `down_inner_sizes[d]` nodes with children first, then the leaves. `down_parent_index[d]` is the row
    in level d - 1 of each depth-d node's parent (empty at d = 0): one of that level's first rows, so
    the inner nodes' states are projected once for all their children.

    Attributes:
        kind_ids, value_ids: (N,) vocabulary ids.
        input_kinds, input_values: (U,) the distinct (kind id, value id) pairs.
        up_input, down_input: (N,) each node's pair (an index into `input_*`), in bottom-up and in
            top-down row order.
        parents: (N,) parent index, -1 at every root.
        is_leaf: (N,) bool.
        tree_ptr: (T + 1,).
        up_perm, up_rank: (N,) nodes in bottom-up row order, and each node's position in it.
        up_sizes: nodes per height.
        up_readers, up_splits: per height h, the later levels that read level h's rows (the number of
            levels stands for roots, read by none) and how many rows each reads, in row order.
        up_children, up_parent_row: per height h, (E_h,) each; empty at height 0.
        down_perm, down_rank: (N,) nodes in top-down row order, and each node's position in it.
        down_sizes, down_inner_sizes: nodes per depth, and those of them with children.
        down_parent_index: per depth d, (N_d,).
    """

    kind_ids: torch.Tensor
    value_ids: torch.Tensor
    input_kinds: torch.Tensor
    input_values: torch.Tensor
    up_input: torch.Tensor
    down_input: torch.Tensor
    parents: torch.Tensor
    is_leaf: torch.Tensor
    tree_ptr: torch.Tensor
    up_perm: torch.Tensor
    up_rank: torch.Tensor
    up_sizes: list[int]
    up_readers: list[list[int]]
    up_splits: list[list[int]]
    up_children: list[torch.Tensor]
    up_parent_row: list[torch.Tensor]
    down_perm: torch.Tensor
    down_rank: torch.Tensor
    down_sizes: list[int]
    down_inner_sizes: list[int]
    down_parent_index: list[torch.Tensor]

    @classmethod
    def from_trees(
        cls, trees: Sequence[CodeTree], kind_ids: Sequence[np.ndarray], value_ids: Sequence[np.ndarray]
    ) -> TreeBatch:
        """Merge trees; `kind_ids[t]` and `value_ids[t]` are (len(trees[t]),) int arrays aligned with
        tree t's nodes (the caller's vocabulary mapping)."""
        if not trees:
            raise ValueError("a TreeBatch needs at least one tree")
        if not len(trees) == len(kind_ids) == len(value_ids):
            raise ValueError(f"{len(trees)} trees, {len(kind_ids)} kind id arrays, {len(value_ids)} value id arrays")
        for t, (tree, kinds, values) in enumerate(zip(trees, kind_ids, value_ids, strict=True)):
            if not len(tree) == len(kinds) == len(values) or len(tree) == 0:
                raise ValueError(f"tree {t}: {len(tree)} nodes, {len(kinds)} kind ids, {len(values)} value ids")
        forest = Forest.from_trees(trees)
        all_kinds, all_values = np.concatenate(kind_ids).astype(np.int64), np.concatenate(value_ids).astype(np.int64)
        if min(all_kinds.min(), all_values.min()) < 0:
            raise ValueError("kind and value ids must be >= 0")
        if (int(all_kinds.max()) + 1) * (int(all_values.max()) + 1) > 2**63:  # the pair keys below are int64
            raise ValueError(f"kind ids up to {all_kinds.max()} and value ids up to {all_values.max()} are too large")
        keys, node_input = np.unique(all_kinds * (int(all_values.max()) + 1) + all_values, return_inverse=True)
        input_kinds, input_values = np.divmod(keys, int(all_values.max()) + 1)
        node_input = node_input.reshape(-1)  # (N,); numpy 2.0 and 2.1 differ on its shape
        n, parents = len(forest), forest.parents
        height, depth = forest.height.astype(np.int64), forest.depth.astype(np.int64)
        levels = int(height.max()) + 1
        is_root = parents < 0
        parent_height = np.where(is_root, levels, height[np.where(is_root, 0, parents)])  # roots: read by none

        # Bottom-up: by height, then parent height, then index (lexsort's last key is the primary one).
        up_perm = np.lexsort((np.arange(n), parent_height, height))
        up_rank = _inverse(up_perm)
        up_sizes = np.bincount(height, minlength=levels)
        up_offsets = np.concatenate([[0], np.cumsum(up_sizes)])
        # Nodes grouped by their parent's height, each group in bottom-up row order: the order in which
        # the chunks of lower levels reach their reader.
        arrivals = up_perm[np.argsort(parent_height[up_perm], kind="stable")]
        arrivals_by_reader = np.split(arrivals, np.cumsum(np.bincount(parent_height, minlength=levels + 1))[:-1])
        up_readers, up_splits, up_children, up_parent_row = [], [], [], []
        for h in range(levels):
            readers, sizes = np.unique(parent_height[up_perm[up_offsets[h] : up_offsets[h + 1]]], return_counts=True)
            up_readers.append(readers.tolist())
            up_splits.append(sizes.tolist())
            children = arrivals_by_reader[h]
            up_children.append(_long(children))
            up_parent_row.append(_long(up_rank[parents[children]] - up_offsets[h]))

        # Top-down: by depth, then inner nodes before leaves, then index.
        is_leaf = height == 0
        down_perm = np.lexsort((np.arange(n), is_leaf, depth))
        down_rank = _inverse(down_perm)
        down_sizes = np.bincount(depth)
        down_inner_sizes = np.bincount(depth[~is_leaf], minlength=len(down_sizes))
        down_offsets = np.concatenate([[0], np.cumsum(down_sizes)])
        down_parent_index = [_long(np.zeros(0, np.int64))]
        for d in range(1, len(down_sizes)):
            nodes = down_perm[down_offsets[d] : down_offsets[d + 1]]
            down_parent_index.append(_long(down_rank[parents[nodes]] - down_offsets[d - 1]))

        return cls(
            kind_ids=_long(all_kinds),
            value_ids=_long(all_values),
            input_kinds=_long(input_kinds),
            input_values=_long(input_values),
            up_input=_long(node_input[up_perm]),
            down_input=_long(node_input[down_perm]),
            parents=_long(parents),
            is_leaf=torch.from_numpy(is_leaf),
            tree_ptr=_long(forest.tree_ptr),
            up_perm=_long(up_perm),
            up_rank=_long(up_rank),
            up_sizes=up_sizes.tolist(),
            up_readers=up_readers,
            up_splits=up_splits,
            up_children=up_children,
            up_parent_row=up_parent_row,
            down_perm=_long(down_perm),
            down_rank=_long(down_rank),
            down_sizes=down_sizes.tolist(),
            down_inner_sizes=down_inner_sizes.tolist(),
            down_parent_index=down_parent_index,
        )

    def __len__(self) -> int:
        return len(self.kind_ids)

    @property
    def n_trees(self) -> int:
        return len(self.tree_ptr) - 1

    @property
    def by_height(self) -> list[torch.Tensor]:
        """Node indices grouped by height, each level in row order."""
        return list(self.up_perm.split(self.up_sizes))

    @property
    def by_depth(self) -> list[torch.Tensor]:
        """Node indices grouped by depth, each level in row order."""
        return list(self.down_perm.split(self.down_sizes))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TreeBatch:
        """A copy with every tensor on `device`."""
        move = lambda tensor: tensor.to(device, non_blocking=non_blocking)  # noqa: E731
        changes: dict[str, object] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, torch.Tensor):
                changes[field.name] = move(value)
            elif value and isinstance(value[0], torch.Tensor):
                changes[field.name] = [move(tensor) for tensor in value]
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
