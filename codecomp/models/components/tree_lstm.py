"""Bidirectional Tree-LSTM encoder over ASTs, batched level by level over a forest of trees.

The bottom-up pass is Tai et al. (2015)'s child-sum Tree-LSTM; the top-down pass runs an LSTM cell
from each node's parent down to it, with the node's bottom-up state as part of its input. Like DGL's
Tree-LSTM example, many trees are merged into one forest and the cell is applied to every node of a
level at once, so the number of sequential steps is the forest's height, not its node count.

Cost: a level's gathers, sums and copies touch only its own nodes and child edges. Going up, each
level's results are split once into chunks, one per later level that reads them (children can be
several heights below their parent); going down, a level reads only the one above. So a pass is
O(N·H) forward and backward, where writing each level into a full-size (N, H) state buffer would be
O(N·H) per level. Going down, a parent's h↓ is multiplied by the recurrent weights once for all its
children, and [x ; h↑] is never concatenated: its two products go into the same gates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from codecomp.parsing import CodeTree, Forest

LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (N, H)


class ChildSumCell(nn.Module):
    """Child-sum Tree-LSTM cell (Tai et al. 2015, eq. 2-8), one forget gate per child.

    For node j with children k, h̃ = Σ_k h_k, i/o/u from x_j and h̃, f_jk = σ(W_f x_j + U_f h_k + b_f),
    c_j = i⊙u + Σ_k f_jk⊙c_k, h_j = o⊙tanh(c_j). A leaf has no children: h̃ = 0 and no forget terms.
    """

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.W_iou = nn.Linear(input_dim, 3 * hidden)  # b_i, b_o, b_u live here
        self.U_iou = nn.Linear(hidden, 3 * hidden, bias=False)
        self.W_f = nn.Linear(input_dim, hidden)  # b_f
        self.U_f = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x: torch.Tensor, child_h: torch.Tensor, child_c: torch.Tensor, parent: torch.Tensor) -> LSTMState:
        """States of N nodes from their inputs and their children's states, one row per child edge, written
        as the equations read (the reference encoder's cell); `level` is the same function, faster.

        Args:
            x: (N, D) node inputs.
            child_h, child_c: (E, H) states of the children, in any order; E = 0 when all are leaves.
            parent: (E,) int64 row of `x` that each child belongs to.

        Returns:
            (h, c), each (N, H).
        """
        n = x.shape[0]
        if child_h.shape[0] == 0:  # leaves (the whole lowest level): h̃ = 0 and nothing to forget
            i, o, u = self.W_iou(x).chunk(3, dim=1)  # (N, H) each
            c = torch.sigmoid(i) * torch.tanh(u)  # (N, H)
            return torch.sigmoid(o) * torch.tanh(c), c
        # index_add_ on fresh zeros is autograd-safe: its backward needs only `parent`.
        h_sum = child_h.new_zeros(n, self.hidden).index_add_(0, parent, child_h)  # (N, H)
        i, o, u = (self.W_iou(x) + self.U_iou(h_sum)).chunk(3, dim=1)  # (N, H) each
        f = torch.sigmoid(self.W_f(x).index_select(0, parent) + self.U_f(child_h))  # (E, H)
        c_kept = child_c.new_zeros(n, self.hidden).index_add_(0, parent, f * child_c)  # (N, H)
        c = torch.sigmoid(i) * torch.tanh(u) + c_kept  # (N, H)
        h = torch.sigmoid(o) * torch.tanh(c)  # (N, H)
        return h, c

    def level(self, x: torch.Tensor, child_h: torch.Tensor, child_c: torch.Tensor, parent: torch.Tensor) -> LSTMState:
        """`forward` for the level-batched encoder: no products for leaves' missing children, products
        accumulated in place, and tanh through sigmoid (see `_activate_`). Tests hold it to `forward`."""
        n = x.shape[0]
        if child_h.shape[0] == 0:  # leaves (the whole lowest level): h̃ = 0 and nothing to forget
            i, o, u = _activate_(self.W_iou(x), n_chunks=3, tanh_chunk=2)  # (N, H) each
            c = i * u  # (N, H)
            return o * _tanh(c), c
        # index_add_ on fresh zeros is autograd-safe: its backward needs only `parent`. So are the in-place
        # addmm_ below: a Linear's backward needs its input and weight, not its output.
        h_sum = child_h.new_zeros(n, self.hidden).index_add_(0, parent, child_h)  # (N, H)
        i, o, u = _activate_(self.W_iou(x).addmm_(h_sum, self.U_iou.weight.t()), 3, tanh_chunk=2)  # (N, H) each
        f = torch.sigmoid(self.W_f(x).index_select(0, parent).addmm_(child_h, self.U_f.weight.t()))  # (E, H)
        c_kept = child_c.new_zeros(n, self.hidden).index_add_(0, parent, f * child_c)  # (N, H)
        c = i * u + c_kept  # (N, H)
        return o * _tanh(c), c


class TopDownCell(nn.Module):
    """LSTM step from a parent's top-down state to its child's; the input is [x_j ; h↑_j]."""

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.cell = nn.LSTMCell(input_dim + hidden, hidden)

    def forward(self, x: torch.Tensor, h_up: torch.Tensor, parent_state: LSTMState | None) -> LSTMState:
        """Args: x (N, D) node inputs, h_up (N, H) their bottom-up states, parent_state (h, c) each
        (N, H) of their parents, or None for roots (zeros). Returns (h, c), each (N, H)."""
        return self.cell(torch.cat([x, h_up], dim=1), parent_state)  # (N, H) each

    def project_parents(self, h_parent: torch.Tensor) -> torch.Tensor:
        """(P, H) parents' h↓ -> (P, 4H) their term in their children's gates."""
        return h_parent @ self.cell.weight_hh.t()

    def level(self, x: torch.Tensor, h_up: torch.Tensor, parent: LSTMState | None) -> LSTMState:
        """`forward` for the level-batched encoder, with each node's parent given as (project_parents(h↓), c),
        one row per node, or None: a parent's h↓ is projected once for all its children, [x ; h↑] is not
        concatenated, and tanh goes through sigmoid (see `_activate_`). Tests hold it to nn.LSTMCell."""
        weight = self.cell.weight_ih
        gates = torch.addmm(self.cell.bias_ih + self.cell.bias_hh, x, weight[:, : self.input_dim].t())
        gates.addmm_(h_up, weight[:, self.input_dim :].t())  # (N, 4H); autograd-safe, as in ChildSumCell.level
        if parent is not None:
            gates.add_(parent[0])
        i, f, g, o = _activate_(gates, n_chunks=4, tanh_chunk=2)  # (N, H) each, nn.LSTMCell's order
        c = i * g if parent is None else i * g + f * parent[1]
        return o * _tanh(c), c


# tanh(x) = 2σ(2x) - 1: this CPU build's tanh is about 4x slower than its sigmoid, and the cells' tanh
# calls were a third of the encoder's time.


def _tanh(x: torch.Tensor) -> torch.Tensor:
    return 2 * torch.sigmoid(2 * x) - 1


def _activate_(gates: torch.Tensor, n_chunks: int, tanh_chunk: int) -> list[torch.Tensor]:
    """The `n_chunks` equal chunks of `gates` along dim 1 after σ, except chunk `tanh_chunk`, which gets tanh,
    with one sigmoid pass over the whole tensor. Scales `gates` in place: autograd-safe on the output of a
    Linear or an addmm, whose backward does not read it."""
    width = gates.shape[1] // n_chunks
    gates[:, tanh_chunk * width : (tanh_chunk + 1) * width] *= 2
    chunks = list(torch.sigmoid(gates).chunk(n_chunks, dim=1))
    chunks[tanh_chunk] = 2 * chunks[tanh_chunk] - 1
    return chunks


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
    are int64; `*_sizes`, `up_readers` and `up_splits` are Python ints, so splits need no device sync.

    Bottom-up, by height (leaves first): `up_perm` lists the nodes level by level, within a level by
    the height of their parent (roots last), so a level's results split into contiguous chunks, one per
    later level that reads them. Level h receives its children's states as those chunks concatenated in
    level order: `up_children[h]` are these children, and `up_parent_row[h]` the row of each one's
    parent in level h.

    Top-down, by depth (roots first): `down_perm` lists the nodes level by level; `down_parents[d]` are
    the rows of level d - 1 that have children, and `down_parent_index[d]` the position in it of each
    depth-d node's parent (both empty at d = 0), so a parent's state is projected once for its children.

    Attributes:
        kind_ids, value_ids: (N,) vocabulary ids.
        parents: (N,) parent index, -1 at every root.
        tree_ptr: (T + 1,).
        up_perm, up_rank: (N,) nodes in bottom-up row order, and each node's position in it.
        up_sizes: nodes per height.
        up_readers, up_splits: per height h, the later levels that read level h's rows (the number of
            levels stands for roots, read by none) and how many rows each reads, in row order.
        up_children, up_parent_row: per height h, (E_h,) each; empty at height 0.
        down_perm, down_rank: (N,) nodes in top-down row order, and each node's position in it.
        down_sizes: nodes per depth.
        down_parents, down_parent_index: per depth d, (P_d,) and (N_d,).
    """

    kind_ids: torch.Tensor
    value_ids: torch.Tensor
    parents: torch.Tensor
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
    down_parents: list[torch.Tensor]
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

        # Top-down: by depth, then index.
        down_perm = np.argsort(depth, kind="stable")
        down_rank = _inverse(down_perm)
        down_sizes = np.bincount(depth)
        down_offsets = np.concatenate([[0], np.cumsum(down_sizes)])
        down_parents, down_parent_index = [_long(np.zeros(0, np.int64))], [_long(np.zeros(0, np.int64))]
        for d in range(1, len(down_sizes)):
            nodes = down_perm[down_offsets[d] : down_offsets[d + 1]]
            rows, index = np.unique(down_rank[parents[nodes]] - down_offsets[d - 1], return_inverse=True)
            down_parents.append(_long(rows))
            down_parent_index.append(_long(index))

        return cls(
            kind_ids=_long(np.concatenate(kind_ids)),
            value_ids=_long(np.concatenate(value_ids)),
            parents=_long(parents),
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
            down_parents=down_parents,
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


class BiTreeEncoder(nn.Module):
    """Per-node states [h↑ ; h↓] of a forest: a child-sum bottom-up pass, then a top-down pass.

    A node's input is [kind embedding ; value embedding], each `embed_dim` wide; value id 0 is padding
    (a zero vector). With `upward_only`, the top-down pass is skipped and the output is h↑ alone.
    """

    def __init__(self, n_kinds: int, n_values: int, embed_dim: int, hidden: int, upward_only: bool = False) -> None:
        super().__init__()
        self.hidden = hidden
        self.kind_embed = nn.Embedding(n_kinds, embed_dim)
        self.value_embed = nn.Embedding(n_values, embed_dim, padding_idx=0)
        self.up = ChildSumCell(2 * embed_dim, hidden)
        self.down = None if upward_only else TopDownCell(2 * embed_dim, hidden)
        self.output_dim = hidden if upward_only else 2 * hidden

    def embed(self, kind_ids: torch.Tensor, value_ids: torch.Tensor) -> torch.Tensor:
        """(N,) kind ids and (N,) value ids -> (N, 2 * embed_dim) node inputs."""
        return torch.cat([self.kind_embed(kind_ids), self.value_embed(value_ids)], dim=1)

    def forward(self, batch: TreeBatch) -> torch.Tensor:
        """(N, output_dim) node states in forest order: [h↑ ; h↓], or h↑ with `upward_only`."""
        h_up = self.upward(batch)  # (N, H) in bottom-up row order
        if self.down is None:
            return h_up.index_select(0, batch.up_rank)
        h_down = self.downward(h_up.index_select(0, batch.up_rank[batch.down_perm]), batch)  # top-down row order
        return torch.cat([h_up.index_select(0, batch.up_rank), h_down.index_select(0, batch.down_rank)], dim=1)

    def upward(self, batch: TreeBatch) -> torch.Tensor:
        """Bottom-up pass, one batched step per height -> (N, H) h↑ in bottom-up row order."""
        x_levels = self.embed(batch.kind_ids[batch.up_perm], batch.value_ids[batch.up_perm]).split(batch.up_sizes)
        # waiting[h]: (h, c) chunks of lower levels that level h reads; the last list: roots, read by none
        waiting: list[list[LSTMState]] = [[] for _ in range(len(batch.up_sizes) + 1)]
        outputs = []
        for level, x_level in enumerate(x_levels):  # (N_level, D) each
            child_h = _concat([h for h, _ in waiting[level]], x_level.new_zeros(0, self.hidden))  # (E_level, H)
            child_c = _concat([c for _, c in waiting[level]], child_h)  # (E_level, H)
            h, c = self.up.level(x_level, child_h, child_c, batch.up_parent_row[level])  # (N_level, H) each
            outputs.append(h)
            splits = batch.up_splits[level]
            for reader, h_part, c_part in zip(batch.up_readers[level], h.split(splits), c.split(splits), strict=True):
                waiting[reader].append((h_part, c_part))  # (n_part, H) each
        return torch.cat(outputs)  # (N, H)

    def downward(self, h_up: torch.Tensor, batch: TreeBatch) -> torch.Tensor:
        """Top-down pass, one batched step per depth: (N, H) h↑ -> (N, H) h↓, both in top-down row order."""
        assert self.down is not None
        x = self.embed(batch.kind_ids[batch.down_perm], batch.value_ids[batch.down_perm])  # (N, D)
        state: LSTMState | None = None  # roots start from zeros
        outputs = []
        levels = zip(x.split(batch.down_sizes), h_up.split(batch.down_sizes), strict=True)
        for depth, (x_level, h_up_level) in enumerate(levels):  # (N_depth, D) and (N_depth, H)
            parent = None
            if state is not None:  # each parent's h↓ projected once, then handed to its children
                rows, index = batch.down_parents[depth], batch.down_parent_index[depth]
                projected = self.down.project_parents(state[0].index_select(0, rows))  # (P_depth, 4H)
                parent = (projected.index_select(0, index), state[1].index_select(0, rows[index]))
            state = self.down.level(x_level, h_up_level, parent)  # (N_depth, H) each
            outputs.append(state[0])
        return torch.cat(outputs)  # (N, H)


def _concat(tensors: list[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
    """torch.cat, without a copy when there is one tensor, and `empty` when there is none."""
    if not tensors:
        return empty
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)
