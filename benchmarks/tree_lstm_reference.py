"""A per-node recursive BiTreeEncoder, for tests and the speed benchmark only.

It applies the encoder's own cells one node at a time: post-order recursion going up, pre-order going
down. Its output must equal `BiTreeEncoder.forward` on the same tree; it is the obvious way to write
the model and the slow one (a few small kernels per node).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from codecomp.models.components.tree_lstm import BiTreeEncoder, LSTMState
from codecomp.parsing import CodeTree


def reference_encode(
    encoder: BiTreeEncoder, tree_kind_ids: np.ndarray, tree_value_ids: np.ndarray, tree: CodeTree
) -> torch.Tensor:
    """(N, encoder.output_dim) node states of one tree, in its preorder, computed node by node."""
    device = encoder.kind_embed.weight.device
    kind_ids = torch.as_tensor(np.asarray(tree_kind_ids, dtype=np.int64), device=device)
    value_ids = torch.as_tensor(np.asarray(tree_value_ids, dtype=np.int64), device=device)
    x = encoder.embed(kind_ids, value_ids)  # (N, D); embedding is not the part under comparison
    n = len(tree)
    h_up: list[torch.Tensor] = [x] * n  # placeholders, all overwritten
    h_down: list[torch.Tensor] = [x] * n
    no_children = x.new_zeros(0, encoder.hidden)  # (0, H)

    def up(node: int) -> LSTMState:
        child_h, child_c = [], []
        for child in tree.children_of(node).tolist():  # a loop, not a comprehension: one frame per level
            h, c = up(child)
            child_h.append(h)
            child_c.append(c)
        parent = torch.zeros(len(child_h), dtype=torch.int64, device=device)  # (K,): all belong to row 0
        state = encoder.up(
            x[node : node + 1],
            torch.cat(child_h) if child_h else no_children,  # (K, H)
            torch.cat(child_c) if child_c else no_children,
            parent,
        )  # (1, H) each
        h_up[node] = state[0]
        return state

    def down(node: int, parent_state: LSTMState | None) -> None:
        assert encoder.down is not None
        state = encoder.down(x[node : node + 1], h_up[node], parent_state)  # (1, H) each
        h_down[node] = state[0]
        for child in tree.children_of(node).tolist():
            down(child, state)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + int(tree.depth.max()) + 100)  # a frame per level on top of the caller's
    try:
        up(0)
        if encoder.down is None:
            return torch.cat(h_up)  # (N, H)
        down(0, None)
    finally:
        sys.setrecursionlimit(limit)
    return torch.cat([torch.cat(h_up), torch.cat(h_down)], dim=1)  # (N, 2H)
