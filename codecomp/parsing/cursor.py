"""Where a completion cursor sits in a CodeTree, and hiding a leaf from a model."""

from __future__ import annotations

import dataclasses

import numpy as np

from codecomp.parsing.codetree import HOLE, CodeTree
from codecomp.text.tokens import WORD


@dataclasses.dataclass(frozen=True)
class CursorLeaf:
    """The leaf at or just before a cursor.

    Attributes:
        node: index of the leaf in the CodeTree.
        partial: the part of an identifier-like leaf already typed before the cursor (b"" when the
            cursor is not inside or at the end of a word).
    """

    node: int
    partial: bytes


def leaf_at(tree: CodeTree, offset: int) -> CursorLeaf | None:
    """The last non-empty leaf that starts before byte `offset`, None if no leaf does.

    A cursor at `foo(ba|` gives the leaf `ba` with partial b"ba"; a cursor after whitespace gives
    the leaf before the whitespace with partial b"".
    """
    if offset < 0 or offset > tree.n_bytes:
        raise ValueError(f"offset {offset} outside the source (0..{tree.n_bytes})")
    leaves = np.flatnonzero(tree.is_leaf & (tree.ends > tree.starts))  # MISSING nodes have no text
    position = int(np.searchsorted(tree.starts[leaves], offset, side="left")) - 1
    if position < 0:
        return None
    node = int(leaves[position])
    start, end = int(tree.starts[node]), int(tree.ends[node])
    text = tree.value(node)
    partial = b""
    if text is not None and offset <= end:
        typed = text.encode("utf-8")[: offset - start]
        if WORD.fullmatch(typed):
            partial = typed
    return CursorLeaf(node=node, partial=partial)


def mark_hole(tree: CodeTree, node: int) -> CodeTree:
    """A copy of `tree` whose leaf `node` has its text hidden (value HOLE); kind and span stay."""
    if not tree.is_leaf[node]:
        raise ValueError(f"node {node} is not a leaf")
    values = tree.values.copy()
    values[node] = HOLE
    return dataclasses.replace(tree, values=values)
