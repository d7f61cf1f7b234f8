"""Hole settings: what a model sees around a hole, in training, in evaluation and when serving.

Three settings, named alike everywhere (data config, checkpoint, evaluation, completer):
- `whole_file`: the file with only the hole's text hidden (several holes per file in training).
- `editor`: an editor mid-typing. The file up to the cursor (the hole's start), the rest of the current
  statement gone (from the hole to the end of its enclosing statement), the code after that statement
  kept; optionally a prefix of the token already typed (`partial`). The text is parsed as it is, so the
  tree has the ERROR and MISSING nodes a server sees.
- `prefix`: the file up to the cursor only.

In the editor and prefix settings the token at the cursor is replaced by `PLACEHOLDER` (an identifier)
before parsing, as the completer does with what the user typed there, so training, evaluation and
serving build the same tree; its text is then hidden from the model.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import numpy as np

from codecomp.parsing import CodeTree, kind_names, parse
from codecomp.text.brackets import statement_closing
from codecomp.text.tokens import WORD_BYTE

SETTINGS = ("whole_file", "editor", "prefix")
CURSOR_SETTINGS = ("editor", "prefix")  # the settings that cut the file at the cursor (one hole per text)
# Stands for the token at the cursor while parsing: an identifier, so the tree around it is the tree of
# finished code up to there; its text is hidden from the model.
PLACEHOLDER = b"__codecomp_hole__"
MEMBER_ACCESS = (b".", b"->", b"::")  # what precedes a member or a qualified name
_WORD_BYTE = re.compile(WORD_BYTE)

# Nodes whose children are statements (blocks, files, class bodies, case bodies): the enclosing
# statement of a leaf is its ancestor that is a child of one of these. ERROR counts, so a damaged
# region's pieces are statements of their own.
_CONTAINERS = {
    "cpp": frozenset({"translation_unit", "compound_statement", "declaration_list", "field_declaration_list",
                      "case_statement", "preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif",
                      "preproc_elifdef", "ERROR"}),
    "javascript": frozenset({"program", "statement_block", "class_body", "switch_case", "switch_default",
                             "ERROR"}),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class HoleSettings:
    """How training builds holes, recorded in a checkpoint so that serving builds contexts alike.

    Attributes:
        shares: per setting, the share of training files that get holes of that setting, and its share of
            the loss (settings absent from a batch leave theirs to the others); sums to 1.
        partial_rate: share of editor and prefix holes whose token is partly typed (a prefix of 1 to
            len - 1 characters, recorded with the hole; ranking keeps only candidates that start with it).
        window_bytes: editor and prefix holes read whole lines within this many bytes before the cursor and
            half as many after the cut, as the server's window does; None: the whole file.
    """

    shares: dict[str, float] = dataclasses.field(default_factory=lambda: {"whole_file": 1.0})
    partial_rate: float = 0.0
    window_bytes: int | None = None

    @classmethod
    def create(
        cls, shares: Mapping[str, float] | None = None, partial_rate: float = 0.0, window_bytes: int | None = None
    ) -> HoleSettings:
        """Checked settings, shares normalised to sum to 1 (settings with share 0 left out); None: whole_file."""
        shares = dict(shares) if shares else {"whole_file": 1.0}
        unknown = set(shares) - set(SETTINGS)
        if unknown:
            raise ValueError(f"unknown hole settings {sorted(unknown)}; expected some of {SETTINGS}")
        if any(share < 0 for share in shares.values()) or sum(shares.values()) <= 0:
            raise ValueError(f"hole setting shares must be >= 0 with a positive sum, not {shares}")
        if not 0.0 <= partial_rate <= 1.0:
            raise ValueError(f"partial_rate must be within [0, 1], not {partial_rate}")
        total = sum(shares.values())
        normalised = {name: float(shares[name]) / total for name in SETTINGS if shares.get(name, 0) > 0}
        return cls(normalised, float(partial_rate), window_bytes)

    @classmethod
    def from_json(cls, data: Mapping[str, object] | None) -> HoleSettings:
        """Read back `to_json`; None (a checkpoint from before hole settings were recorded): whole_file only."""
        if not data:
            return cls()
        return cls.create(data.get("shares"), data.get("partial_rate", 0.0), data.get("window_bytes"))  # type: ignore[arg-type]

    def to_json(self) -> dict[str, object]:
        return {"shares": dict(self.shares), "partial_rate": self.partial_rate, "window_bytes": self.window_bytes}

    def draw(self, rng: np.random.Generator) -> str:
        """One setting, drawn by share."""
        names = list(self.shares)
        return names[int(rng.choice(len(names), p=list(self.shares.values())))]

    @property
    def served_context(self) -> str:
        """The context a completer builds for this model: `editor` when it learnt editor holes (what an editor
        sends), else its only cursor setting, else the whole file."""
        if "editor" in self.shares:
            return "editor"
        return "prefix" if "whole_file" not in self.shares else "whole_file"


def statement_end(tree: CodeTree, node: int) -> int:
    """The end byte of the statement enclosing `node`: its ancestor (or itself) whose parent holds
    statements (a block, the file, a class body). A leaf in a `for` header gets the whole loop, one in a
    lambda's body the statement of that body."""
    containers = _CONTAINERS[tree.language]
    names = kind_names(tree.language)
    parents = tree.parents
    while parents[node] >= 0 and names[int(tree.kinds[parents[node]])] not in containers:
        node = int(parents[node])
    return int(tree.ends[node])


def is_member_access(document: bytes, start: int) -> bool:
    """Whether the token at `start` follows `.`, `->` or `::` (spaces between allowed): a member or a
    qualified name. A spread (`...args`) is not one."""
    before = document[max(0, start - 64) : start].rstrip()
    return before.endswith(MEMBER_ACCESS) and not before.endswith(b"...")


def window(prefix: bytes, suffix: bytes, window_bytes: int) -> tuple[bytes, bytes]:
    """The text around a cursor a model reads: at most `window_bytes` before it and half as many after,
    cut to whole lines where cut at all (so the cost of a request does not grow with the file)."""
    before = prefix[-window_bytes:] if window_bytes > 0 else b""
    if len(before) < len(prefix) and b"\n" in before:
        before = before[before.index(b"\n") + 1 :]  # start at a line start
    after = suffix[: window_bytes // 2]
    if len(after) < len(suffix) and b"\n" in after:
        after = after[: after.rindex(b"\n") + 1]
    return before, after


def cursor_text(document: bytes, start: int, setting: str, cut_end: int, partial: bytes = b"") -> tuple[bytes, int]:
    """The text an editor holds when the token at `start` is being typed: (text, cursor).

    Args:
        document: the finished file.
        start: the hole's first byte.
        setting: `editor` (the code from `cut_end` on is kept) or `prefix` (nothing after the cursor).
        cut_end: where the code after the current statement starts (`statement_end`); editor only.
        partial: the part of the token already typed.
    """
    if setting not in CURSOR_SETTINGS:
        raise ValueError(f"{setting!r} does not cut the file at a cursor; expected one of {CURSOR_SETTINGS}")
    after = separated(document[cut_end:]) if setting == "editor" else b""
    return document[:start] + partial + after, start + len(partial)


def separated(after: bytes) -> bytes:
    """`after`, with a space in front when it starts with a word byte: what follows a cut must not read as
    the rest of the word at the cursor."""
    return b" " + after if _WORD_BYTE.match(after) else after


def placeholder_leaf(tree: CodeTree, offset: int) -> int | None:
    """The leaf holding PLACEHOLDER at byte `offset`, None when the parse did not keep it whole."""
    leaves = np.flatnonzero(tree.is_leaf & (tree.starts == offset))
    for leaf in leaves.tolist():
        if tree.value(leaf) == PLACEHOLDER.decode():
            return leaf
    return None


def parse_at_cursor(before: bytes, after: bytes, language: str, cut: bool = False) -> tuple[CodeTree, int] | None:
    """Parse `before + PLACEHOLDER + after`: the tree and the placeholder's leaf, None when no identifier
    can stand at the cursor (inside a string or a comment, say).

    Args:
        cut: the rest of the statement at the cursor is gone (the editor and prefix settings): close the
            brackets it left open and end it (`text.brackets`) before `after`, for a tree like finished code's.
    """
    closing = statement_closing(before) if cut else b""
    tree = parse(before + PLACEHOLDER + closing + after, language)
    leaf = placeholder_leaf(tree, len(before))
    return None if leaf is None else (tree, leaf)


def sample_partial(target: str, rate: float, rng: np.random.Generator) -> bytes:
    """With probability `rate`, a prefix of `target` of 1 to len - 1 characters (what is typed so far), else b""."""
    if len(target) < 2 or rng.random() >= rate:
        return b""
    return target[: int(rng.integers(1, len(target)))].encode("utf-8")
