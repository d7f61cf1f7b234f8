"""CodeTree: a tree-sitter AST as flat numpy arrays, built with one TreeCursor walk."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import PurePath

import numpy as np
import tree_sitter

from codecomp.parsing.languages import ERROR_KIND_ID, check_language, language_for_path, parser

NO_VALUE = -1  # `values` of an inner node: only leaves carry text
HOLE = -2  # `values` of a leaf whose text is hidden from a model (see `mark_hole`)


@dataclasses.dataclass(frozen=True, eq=False)
class CodeTree:
    """An AST in preorder, as arrays of length N (the node count) unless stated.

    Node 0 is the root. Preorder puts every parent before its children and orders leaves by
    position, so `parents[i] < i` and leaf byte spans increase with the index.

    Attributes:
        language: "cpp" or "javascript".
        kinds: (N,) int32 tree-sitter kind ids (`languages.kind_names` names them).
        named: (N,) bool, False for anonymous nodes (keywords, punctuation).
        values: (N,) int32 index into `value_table` for leaves, NO_VALUE for inner nodes, HOLE for holes.
        value_table: the distinct leaf texts of this tree (identifiers, literals, keywords).
        parents: (N,) int32 parent index, -1 for the root.
        child_ptr: (N + 1,) int32; the children of node i are `children[child_ptr[i]:child_ptr[i + 1]]`.
        children: (N - 1,) int32 child indices in source order.
        starts, ends: (N,) int64 byte spans into the UTF-8 source.
        depth: (N,) int32, 0 at the root.
        height: (N,) int32, 0 at leaves.
        error_bytes: bytes of source covered by ERROR nodes (nested ones counted once).
        n_bytes: length of the source in bytes.
    """

    language: str
    kinds: np.ndarray
    named: np.ndarray
    values: np.ndarray
    value_table: tuple[str, ...]
    parents: np.ndarray
    child_ptr: np.ndarray
    children: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    depth: np.ndarray
    height: np.ndarray
    error_bytes: int
    n_bytes: int

    def __len__(self) -> int:
        return len(self.kinds)

    @property
    def error_share(self) -> float:
        """Share of the source's bytes inside ERROR nodes, 0 for an empty source."""
        return self.error_bytes / self.n_bytes if self.n_bytes else 0.0

    @property
    def is_leaf(self) -> np.ndarray:
        """(N,) bool: nodes without children."""
        return self.child_ptr[1:] == self.child_ptr[:-1]

    def children_of(self, node: int) -> np.ndarray:
        return self.children[self.child_ptr[node] : self.child_ptr[node + 1]]

    def sexp(self, kind_name: Callable[[int], str]) -> str:
        """Named nodes as an S-expression, `(kind (kind) ...)` like tree-sitter's own, for tests and
        debugging; `kind_name` maps a kind id to its name."""
        out: list[str] = []
        stack: list[tuple[int, bool]] = [(0, False)]
        while stack:  # iterative: trees can be deeper than Python's recursion limit
            node, closing = stack.pop()
            if closing:
                out.append(")")
                continue
            if not self.named[node]:
                continue
            out.append((" (" if out else "(") + kind_name(int(self.kinds[node])))
            stack.append((node, True))
            stack.extend((int(child), False) for child in reversed(self.children_of(node)))
        return "".join(out)

    def value(self, node: int) -> str | None:
        """The text of a leaf, None for inner nodes and holes."""
        value_id = int(self.values[node])
        return self.value_table[value_id] if value_id >= 0 else None


def parse(source: bytes, language: str | None = None, path: str | PurePath | None = None) -> CodeTree:
    """Parse UTF-8 source into a CodeTree; the language is given or inferred from `path`.

    Tree-sitter recovers from syntax errors, so partial code (a file cut at a cursor) parses too:
    what it cannot place ends up under ERROR nodes, its identifiers kept as leaves.
    """
    if not isinstance(source, bytes):
        raise TypeError(f"source must be bytes, not {type(source).__name__}")
    if language is None:
        if path is None:
            raise ValueError("give a language or a path to infer it from")
        language = language_for_path(path)
    check_language(language)
    return from_tree_sitter(parser(language).parse(source), source, language)


def from_tree_sitter(tree: tree_sitter.Tree, source: bytes, language: str) -> CodeTree:
    """Convert a tree-sitter Tree with a cursor walk (no recursion: C++ trees can be deep)."""
    kinds: list[int] = []
    named: list[bool] = []
    parents: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    depths: list[int] = []
    leaf_nodes: list[int] = []
    leaf_ids: list[int] = []
    table: dict[bytes, int] = {}
    stack = [-1]  # ancestors of the cursor's node
    cursor = tree.walk()
    while True:
        node = cursor.node
        assert node is not None
        index = len(kinds)
        kinds.append(node.kind_id)
        named.append(node.is_named)
        parents.append(stack[-1])
        depths.append(len(stack) - 1)
        start, end = node.start_byte, node.end_byte
        starts.append(start)
        ends.append(end)
        if cursor.goto_first_child():
            stack.append(index)
            continue
        leaf_nodes.append(index)
        leaf_ids.append(table.setdefault(source[start:end], len(table)))
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return _assemble(
                    language, kinds, named, parents, depths, starts, ends, leaf_nodes, leaf_ids, table, len(source)
                )
            stack.pop()


def _assemble(
    language: str,
    kinds: list[int],
    named: list[bool],
    parents_list: list[int],
    depths: list[int],
    starts_list: list[int],
    ends_list: list[int],
    leaf_nodes: list[int],
    leaf_ids: list[int],
    table: dict[bytes, int],
    n_bytes: int,
) -> CodeTree:
    n = len(kinds)
    parents = np.asarray(parents_list, dtype=np.int32)
    values = np.full(n, NO_VALUE, dtype=np.int32)
    values[leaf_nodes] = leaf_ids
    kind_arr = np.asarray(kinds, dtype=np.int32)
    starts = np.asarray(starts_list, dtype=np.int64)
    ends = np.asarray(ends_list, dtype=np.int64)
    child_ptr, children = children_csr(parents)
    depth = np.asarray(depths, dtype=np.int32)
    return CodeTree(
        language=language,
        kinds=kind_arr,
        named=np.asarray(named, dtype=bool),
        values=values,
        value_table=tuple(text.decode("utf-8", errors="replace") for text in table),
        parents=parents,
        child_ptr=child_ptr,
        children=children,
        starts=starts,
        ends=ends,
        depth=depth,
        height=_heights(parents, depth),
        error_bytes=_union_length(starts[kind_arr == ERROR_KIND_ID], ends[kind_arr == ERROR_KIND_ID]),
        n_bytes=n_bytes,
    )


def children_csr(parents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Children in CSR form from a preorder parent array: (child_ptr (N+1,), children (N-1,))."""
    n = len(parents)
    counts = np.bincount(parents[1:], minlength=n) if n > 1 else np.zeros(n, dtype=np.int64)
    child_ptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(counts, out=child_ptr[1:])
    # A stable sort by parent keeps each node's children in preorder, which is source order.
    children = (np.argsort(parents[1:], kind="stable") + 1).astype(np.int32)
    return child_ptr, children


def _heights(parents: np.ndarray, depth: np.ndarray) -> np.ndarray:
    height = np.zeros(len(parents), dtype=np.int32)
    for level in reversed(level_order(depth)[1:]):  # deepest level first; the root has no parent
        np.maximum.at(height, parents[level], height[level] + 1)
    return height


def level_order(keys: np.ndarray) -> list[np.ndarray]:
    """Group node indices by an integer key (depth or height): element k holds nodes with key k.

    Nodes in one group are independent of each other in a bottom-up (height) or top-down (depth)
    pass, so a model computes a whole group in one batched step.
    """
    if len(keys) == 0:
        return []
    order = np.argsort(keys, kind="stable").astype(np.int32)
    bounds = np.cumsum(np.bincount(keys))
    return np.split(order, bounds[:-1])


def _union_length(starts: np.ndarray, ends: np.ndarray) -> int:
    """Total length of the union of byte intervals given in preorder (sorted by start)."""
    total, covered_to = 0, 0
    for start, end in zip(starts.tolist(), ends.tolist(), strict=False):
        start = max(start, covered_to)
        if end > start:
            total += end - start
            covered_to = end
    return total
