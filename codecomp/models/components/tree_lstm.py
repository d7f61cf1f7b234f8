"""Bidirectional Tree-LSTM encoder over ASTs, batched level by level over a forest of trees.

The bottom-up pass is Tai et al. (2015)'s child-sum Tree-LSTM; the top-down pass runs an LSTM cell
from each node's parent down to it, with the node's bottom-up state as part of its input. Like DGL's
Tree-LSTM example, many trees are merged into one forest and the cell is applied to every node of a
level at once, so the number of sequential steps is the forest's height, not its node count.

Cost: a level's gathers, sums and copies touch only its own nodes and child edges. Going up, each
level's results are split once into chunks, one per later level that reads them (children can be
several heights below their parent); going down, a level reads only the one above. So a pass is
O(N·H) forward and backward, where writing each level into a full-size (N, H) state buffer would be
O(N·H) per level.

Work done once rather than per node: the input terms of the gates once per distinct (kind, value)
pair, the leaves' bottom-up states once per pair too (they depend on nothing else), and so the leaves'
h↑ term in the top-down gates as well; a parent's h↓ is multiplied by the recurrent weights once for
all its children. [x ; h↑] is never concatenated: its two products go into the same gates.
"""

from __future__ import annotations

import torch
from torch import nn

from codecomp.data.tree_batch import TreeBatch

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

    def project_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, D) inputs -> their terms in the gates, biases included: (U, 3H) for i, o, u and (U, H) for f."""
        return self.W_iou(x), self.W_f(x)

    def leaf(self, iou_in: torch.Tensor) -> LSTMState:
        """`forward` for leaves, from their inputs' (N, 3H) terms (`project_inputs`), which it overwrites;
        tanh through sigmoid (see `_activate_`). Tests hold it to `forward`."""
        i, o, u = _activate_(iou_in, n_chunks=3, tanh_chunk=2)  # (N, H) each; u holds σ(-2x_u)
        c = _times_tanh(i, u)  # (N, H)
        return _times_tanh_of(o, c), c

    def level(
        self,
        iou_in: torch.Tensor,
        f_in: torch.Tensor,
        child_h: torch.Tensor,
        child_c: torch.Tensor,
        parent: torch.Tensor,
    ) -> LSTMState:
        """`forward` for the level-batched encoder, for nodes with children, from their inputs' terms
        (`project_inputs`): iou_in (N, 3H) one row per node, which it overwrites, and f_in (E, H) one row
        per child, its parent's. Products accumulate in place and tanh goes through sigmoid (see
        `_activate_`). Tests hold it to `forward`."""
        n = iou_in.shape[0]
        # The in-place ops below are autograd-safe: each writes to the fresh output of an op whose backward
        # does not read that output (zeros, a gather, an addmm, an addcmul); index_add_'s needs only `parent`.
        h_sum = child_h.new_zeros(n, self.hidden).index_add_(0, parent, child_h)  # (N, H)
        i, o, u = _activate_(iou_in.addmm_(h_sum, self.U_iou.weight.t()), 3, tanh_chunk=2)  # (N, H) each
        f = torch.sigmoid(f_in.addmm_(child_h, self.U_f.weight.t()))  # (E, H)
        c = _times_tanh(i, u).index_add_(0, parent, f * child_c)  # (N, H): i⊙u + Σ_k f_k⊙c_k
        return _times_tanh_of(o, c), c


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

    def project_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(U, D) inputs -> (U, 4H) their term in the gates, both biases included."""
        return torch.addmm(self.cell.bias_ih + self.cell.bias_hh, x, self.cell.weight_ih[:, : self.input_dim].t())

    def add_up_(self, gates: torch.Tensor, h_up: torch.Tensor) -> torch.Tensor:
        """Adds the term of the nodes' (N, H) bottom-up states to their (N, 4H) gates, in place, and returns
        the gates: autograd-safe on the output of an addmm or a gather, whose backward does not read it."""
        return gates.addmm_(h_up, self.cell.weight_ih[:, self.input_dim :].t())

    def project_parents(self, h_parent: torch.Tensor) -> torch.Tensor:
        """(P, H) parents' h↓ -> (P, 4H) their term in their children's gates."""
        return h_parent @ self.cell.weight_hh.t()

    def level(self, gates: torch.Tensor, parent_c: torch.Tensor | None) -> LSTMState:
        """`forward` for the level-batched encoder, from the sum of the three terms of the gates, (N, 4H),
        which it overwrites: project_inputs(x), h↑'s term (`add_up_`) and project_parents(parent's h↓),
        the last left out for roots; and the parents' cells (N, H), or None for roots. So [x ; h↑] is
        never concatenated, and the caller can project each distinct input, each leaf's h↑ and each
        parent's h↓ once. Tanh goes through sigmoid (see `_activate_`). Tests hold it to nn.LSTMCell."""
        i, f, g, o = _activate_(gates, n_chunks=4, tanh_chunk=2)  # (N, H) each, nn.LSTMCell's order; g: σ(-2x_g)
        c = _times_tanh(i, g)  # (N, H)
        if parent_c is not None:
            c.addcmul_(f, parent_c)  # autograd-safe: addcmul's backward reads its inputs, not its output
        return _times_tanh_of(o, c), c


# tanh(x) = 1 - 2σ(-2x), so a⊙tanh(x) = a - 2·a⊙σ(-2x): one addcmul on a sigmoid, and no tanh. This CPU
# build's tanh is about 4x slower than its sigmoid, and the cells' tanh calls were a third of the
# encoder's time. The cells keep σ(-2x) of their tanh gate and multiply through `_times_tanh`.


def _times_tanh(a: torch.Tensor, sigmoid_minus_2x: torch.Tensor) -> torch.Tensor:
    """a⊙tanh(x), given σ(-2x)."""
    return torch.addcmul(a, a, sigmoid_minus_2x, value=-2)


def _times_tanh_of(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """a⊙tanh(x)."""
    return _times_tanh(a, torch.sigmoid(x * -2))


def _activate_(gates: torch.Tensor, n_chunks: int, tanh_chunk: int) -> list[torch.Tensor]:
    """The `n_chunks` equal chunks of `gates` along dim 1 after σ, except chunk `tanh_chunk`, which holds σ(-2x)
    for `_times_tanh`; one sigmoid pass over the whole tensor. Scales `gates` in place: autograd-safe on
    the output of a Linear, an addmm or a gather, whose backward does not read it."""
    width = gates.shape[1] // n_chunks
    gates[:, tanh_chunk * width : (tanh_chunk + 1) * width] *= -2
    return list(torch.sigmoid(gates).chunk(n_chunks, dim=1))


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
        h_up, leaf_h = self.upward(batch)  # (N, H) in bottom-up row order, (U, H)
        if self.down is None:
            return h_up.index_select(0, batch.up_rank)
        h_down = self.downward(h_up.index_select(0, batch.up_rank[batch.down_perm]), leaf_h, batch)  # top-down order
        return torch.cat([h_up.index_select(0, batch.up_rank), h_down.index_select(0, batch.down_rank)], dim=1)

    def upward(self, batch: TreeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Bottom-up pass, one batched step per height -> (N, H) h↑ in bottom-up row order, and (U, H) the h↑
        of each distinct input as a leaf."""
        iou_in, f_in = self.up.project_inputs(self.embed(batch.input_kinds, batch.input_values))  # (U, 3H), (U, H)
        leaf_h, leaf_c = self.up.leaf(iou_in.clone())  # (U, H) each: every distinct input as a leaf
        inputs = batch.up_input.split(batch.up_sizes)  # per height: (N_level,) each node's distinct input
        # waiting[h]: (h, c) chunks of lower levels that level h reads; the last list: roots, read by none
        waiting: list[list[LSTMState]] = [[] for _ in range(len(batch.up_sizes) + 1)]
        outputs = []
        for level, level_inputs in enumerate(inputs):
            if level == 0:  # height 0 is exactly the leaves
                h, c = leaf_h.index_select(0, level_inputs), leaf_c.index_select(0, level_inputs)  # (N_0, H) each
            else:
                child_h = _concat([h for h, _ in waiting[level]])  # (E_level, H)
                child_c = _concat([c for _, c in waiting[level]])
                parent = batch.up_parent_row[level]  # (E_level,)
                iou_rows = iou_in.index_select(0, level_inputs)  # (N_level, 3H)
                f_rows = f_in.index_select(0, level_inputs[parent])  # (E_level, H): each child's parent's
                h, c = self.up.level(iou_rows, f_rows, child_h, child_c, parent)  # (N_level, H) each
            outputs.append(h)
            splits = batch.up_splits[level]
            for reader, h_part, c_part in zip(batch.up_readers[level], h.split(splits), c.split(splits), strict=True):
                waiting[reader].append((h_part, c_part))  # (n_part, H) each
        return torch.cat(outputs), leaf_h  # (N, H), (U, H)

    def downward(self, h_up: torch.Tensor, leaf_h: torch.Tensor, batch: TreeBatch) -> torch.Tensor:
        """Top-down pass, one batched step per depth: (N, H) h↑ -> (N, H) h↓, both in top-down row order;
        leaf_h (U, H) is the h↑ of each distinct input as a leaf (see `upward`)."""
        assert self.down is not None
        input_terms = self.down.project_inputs(self.embed(batch.input_kinds, batch.input_values))  # (U, 4H)
        # A leaf's h↑ depends on its input alone, so a leaf's first two terms are one row of this table.
        leaf_terms = self.down.add_up_(input_terms.clone(), leaf_h)  # (U, 4H)
        table = torch.cat([input_terms, leaf_terms])  # (2U, 4H): rows for inner nodes, then for leaves
        table_rows = batch.down_input + len(batch.input_kinds) * batch.is_leaf[batch.down_perm]  # (N,)
        h = c = None  # the level above's states; roots have none
        outputs = []
        levels = zip(table_rows.split(batch.down_sizes), h_up.split(batch.down_sizes), strict=True)
        for depth, (rows, h_up_level) in enumerate(levels):  # (N_depth,) and (N_depth, H)
            inner = batch.down_inner_sizes[depth]  # the first `inner` rows have children, the rest are leaves
            gates = table.index_select(0, rows)  # (N_depth, 4H)
            self.down.add_up_(gates[:inner], h_up_level[:inner])
            parent_c = None
            if h is not None and c is not None:  # the inner nodes above are exactly this level's parents
                index = batch.down_parent_index[depth]  # (N_depth,)
                above = batch.down_inner_sizes[depth - 1]
                gates.add_(self.down.project_parents(h[:above]).index_select(0, index))
                parent_c = c.index_select(0, index)
            h, c = self.down.level(gates, parent_c)  # (N_depth, H) each
            outputs.append(h)
        return torch.cat(outputs)  # (N, H)


def _concat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat, without a copy when there is one tensor."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)
