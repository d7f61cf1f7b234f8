"""Tree-LSTM completer: the token at a hole (the cursor), from the code on both sides of it."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from codecomp.checkpoint import LoadedCheckpoint, load
from codecomp.data.holes import HoleExample, collate_holes, make_holes
from codecomp.data.tree_vocab import TreeVocab
from codecomp.inference.completer import Candidate, CompletionOptions, CompletionRequest
from codecomp.models.components.hole_model import HoleModel, rank_holes
from codecomp.parsing import leaf_at, parse
from codecomp.text.tokens import WORD, WORD_BYTE

_TYPED = re.compile(WORD_BYTE + rb"+\Z")  # the word bytes just before the cursor
_REST = re.compile(WORD_BYTE + rb"+")  # and from the cursor on
# Stands for the token at the cursor while parsing: an identifier, so the tree around it is the
# tree of finished code; its text is hidden from the model.
PLACEHOLDER = b"__codecomp_hole__"
_DEFAULT_OPTIONS = CompletionOptions()


@dataclasses.dataclass(frozen=True)
class HoleRequest:
    """A document and a cursor (byte offset) where a token is missing or partly typed."""

    document: bytes
    cursor: int
    language: str


class NoHole(ValueError):
    """The cursor is not where an identifier can stand (inside a string or a comment, say)."""


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


class TreeLSTMCompleter:
    """The token at the cursor, batched over requests.

    Args:
        model: the trained network (put in eval mode here).
        vocab: its kind and value vocabularies.
        target_kinds: per language, the leaf kinds it predicts.
        device: where the model runs.
        window_bytes: when set, only whole lines within this many bytes before the cursor (half as
            many after) are parsed and read, so the cost does not grow with the file; None: the whole
            document.
    """

    family: ClassVar[str] = "tree_lstm"
    task: ClassVar[str] = "token"

    def __init__(
        self,
        model: HoleModel,
        vocab: TreeVocab,
        target_kinds: Mapping[str, Sequence[str]],
        device: str | torch.device = "cpu",
        window_bytes: int | None = None,
    ) -> None:
        self.model, self.vocab, self.target_kinds = model.to(device).eval(), vocab, target_kinds
        self.device = torch.device(device)
        self.window_bytes = window_bytes

    @classmethod
    def from_checkpoint(
        cls, checkpoint: LoadedCheckpoint | str | Path, device: str | torch.device = "cpu", **settings: Any
    ) -> TreeLSTMCompleter:
        """The completer of a Tree-LSTM checkpoint (already loaded, or a path); `settings`: `window_bytes`."""
        loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load(checkpoint)
        loaded.expect_family(cls.family)
        description = loaded.description
        vocab = TreeVocab.from_json(description.vocab)
        model = HoleModel(len(vocab.kinds), len(vocab.values), **description.model_config)
        model.load_state_dict(loaded.state)
        return cls(model, vocab, description.extra["target_kinds"], device, **settings)

    def hole_example(self, request: HoleRequest) -> tuple[HoleExample, bytes]:
        """Parse the document (within the window) with the placeholder standing for the token at the
        cursor, and hide it. Returns the example and the part of the token already typed.

        Raises:
            ValueError: the cursor is outside the document.
            NoHole: no identifier can stand at the cursor.
        """
        if not 0 <= request.cursor <= len(request.document):
            raise ValueError(f"cursor {request.cursor} outside the document (0..{len(request.document)})")
        if self.window_bytes is None:
            return self._hole_example(request)
        document, cursor = request.document, request.cursor
        before, after = window(document[:cursor], document[cursor:], self.window_bytes)
        return self._hole_example(HoleRequest(before + after, len(before), request.language))

    def _hole_example(self, request: HoleRequest) -> tuple[HoleExample, bytes]:
        # The word typed before the cursor (what `leaf_at` would give, without a parse of its own).
        typed = _TYPED.search(request.document, max(0, request.cursor - 256), request.cursor)
        partial = typed.group() if typed is not None and WORD.fullmatch(typed.group()) else b""
        start = request.cursor - len(partial)
        rest = _REST.match(request.document, request.cursor)  # the rest of a word the cursor is inside
        end = rest.end() if rest is not None else request.cursor
        source = request.document[:start] + PLACEHOLDER + request.document[end:]
        tree = parse(source, request.language)
        leaf = leaf_at(tree, start + len(PLACEHOLDER))
        if leaf is None or tree.value(leaf.node) != PLACEHOLDER.decode():
            raise NoHole("the cursor is not where an identifier can stand")
        return make_holes(tree, np.array([leaf.node])), partial

    def complete(
        self,
        requests: Sequence[CompletionRequest],
        options: CompletionOptions = _DEFAULT_OPTIONS,
        deadlines: Sequence[float] | None = None,
    ) -> list[list[Candidate]]:
        """Per request, the top `options.k` tokens at the cursor as the text to insert there: the rest of
        each token after what is already typed (a token that is all typed is dropped). No candidates
        where no identifier can stand (inside a string or a comment). `deadlines` are not used: one
        batched pass is the whole computation."""
        examples, partials, rows = [], [], []
        for row, request in enumerate(requests):
            before, after = request.prefix, request.suffix
            if self.window_bytes is not None:
                before, after = window(before, after, self.window_bytes)
            try:
                example, partial = self._hole_example(HoleRequest(before + after, len(before), request.language))
            except NoHole:
                continue
            examples.append(example)
            partials.append(partial)
            rows.append(row)
        results: list[list[Candidate]] = [[] for _ in requests]
        if examples:
            for row, partial, candidates in zip(rows, partials, self.rank(examples, partials, options.k), strict=True):
                results[row] = [
                    Candidate(c.text[len(partial) :], c.log_prob) for c in candidates if len(c.text) > len(partial)
                ]
        return results

    def complete_holes(self, requests: Sequence[HoleRequest], k: int = 5) -> list[list[Candidate]]:
        """Top-k whole tokens (not only their untyped rest) per hole, best first: what hole evaluation
        scores. Raises NoHole where no identifier can stand at a cursor."""
        if not requests:
            return []
        examples, partials = zip(*(self.hole_example(r) for r in requests), strict=True)
        return self.rank(examples, partials, k)

    @torch.inference_mode()
    def rank(self, examples: Sequence[HoleExample], partials: Sequence[bytes], k: int = 5) -> list[list[Candidate]]:
        """Top-k whole tokens for holes already made by `hole_example`, in one batched pass."""
        batch = collate_holes(examples, self.vocab, self.target_kinds).to(self.device)
        ranked = rank_holes(self.model(batch), batch, self.vocab, k, partials)
        return [[Candidate(text.encode(), math.log(p)) for text, p in hole] for hole in ranked]
