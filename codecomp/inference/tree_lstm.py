"""Tree-LSTM completer: the token at a hole (the cursor), from the code around it, read as the model learnt.

A model trained with editor-like holes (`codecomp.data.hole_settings`) is served the document with the rest
of the statement being typed cut after the cursor and the code after that statement kept; one trained on
whole files reads the whole document; one trained on prefixes only the text before the cursor.
"""

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
from codecomp.data.hole_settings import (
    PLACEHOLDER,
    SETTINGS,
    HoleSettings,
    parse_at_cursor,
    separated,
    statement_end,
    window,
)
from codecomp.data.holes import HoleExample, collate_holes, make_holes
from codecomp.data.tree_vocab import TreeVocab
from codecomp.inference.completer import Candidate, CompletionOptions, CompletionRequest
from codecomp.models.components.hole_model import HoleModel, rank_holes
from codecomp.text.tokens import WORD, WORD_BYTE

__all__ = ["PLACEHOLDER", "HoleRequest", "NoHole", "TreeLSTMCompleter", "typed_word", "window"]

_TYPED = re.compile(WORD_BYTE + rb"+\Z")  # the word bytes just before the cursor
_REST = re.compile(WORD_BYTE + rb"+")  # and from the cursor on
_DEFAULT_OPTIONS = CompletionOptions()


@dataclasses.dataclass(frozen=True)
class HoleRequest:
    """A document and a cursor (byte offset) where a token is missing or partly typed; `cut`: the rest of the
    statement at the cursor is not in the document (an editor mid-typing: `hole_settings.parse_at_cursor`)."""

    document: bytes
    cursor: int
    language: str
    cut: bool = False


class NoHole(ValueError):
    """The cursor is not where an identifier can stand (inside a string or a comment, say)."""


def typed_word(prefix: bytes) -> bytes:
    """The part of a name typed just before the cursor at the end of `prefix` (b"" when none)."""
    typed = _TYPED.search(prefix, max(0, len(prefix) - 256))
    return typed.group() if typed is not None and WORD.fullmatch(typed.group()) else b""


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
        context: what `complete` reads around the cursor, one of `hole_settings.SETTINGS`: `whole_file`
            (the document as it is), `editor` (the rest of the statement being typed cut, on the cursor's
            line; the code after it kept) or `prefix` (nothing after the cursor). From a checkpoint: the
            context its model was trained for (`HoleSettings.served_context`).
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
        context: str = "whole_file",
    ) -> None:
        if context not in SETTINGS:
            raise ValueError(f"unknown context {context!r}; expected one of {SETTINGS}")
        self.model, self.vocab, self.target_kinds = model.to(device).eval(), vocab, target_kinds
        self.device = torch.device(device)
        self.window_bytes, self.context = window_bytes, context

    @classmethod
    def from_checkpoint(
        cls, checkpoint: LoadedCheckpoint | str | Path, device: str | torch.device = "cpu", **settings: Any
    ) -> TreeLSTMCompleter:
        """The completer of a Tree-LSTM checkpoint (already loaded, or a path); `settings`: `context` (default:
        the one its hole settings were trained for; whole_file for older checkpoints) and `window_bytes`
        (default: for a cursor context, the window its cursor holes were trained in; else the whole document)."""
        loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load(checkpoint)
        loaded.expect_family(cls.family)
        description = loaded.description
        vocab = TreeVocab.from_json(description.vocab)
        model = HoleModel(len(vocab.kinds), len(vocab.values), **description.model_config)
        model.load_state_dict(loaded.state)
        hole_settings = HoleSettings.from_json(description.extra.get("hole_settings"))
        settings.setdefault("context", hole_settings.served_context)
        if settings["context"] != "whole_file":
            settings.setdefault("window_bytes", hole_settings.window_bytes)
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
        return self._hole_example(HoleRequest(before + after, len(before), request.language, request.cut))

    def _hole_example(self, request: HoleRequest) -> tuple[HoleExample, bytes]:
        partial = typed_word(request.document[: request.cursor])  # what `leaf_at` would give, without a parse
        rest = _REST.match(request.document, request.cursor)  # the rest of a word the cursor is inside
        end = rest.end() if rest is not None else request.cursor
        start = request.cursor - len(partial)
        parsed = parse_at_cursor(request.document[:start], request.document[end:], request.language, request.cut)
        if parsed is None:
            raise NoHole("the cursor is not where an identifier can stand")
        tree, leaf = parsed
        return make_holes(tree, np.array([leaf]), partials=(partial,)), partial

    def served_suffix(self, prefix: bytes, suffix: bytes, language: str) -> bytes:
        """What the model reads after the cursor in its `context`: the suffix, nothing, or (editor) the suffix
        without the rest of the statement being typed.

        Editor: text after the cursor on its own line belongs to the statement being typed (an auto-closed
        `)`, the rest of an edited expression), the lines below are the code after it; so the cut runs to
        the end of the statement enclosing the cursor in the parse, but not past the end of the line. With
        only spaces after the cursor on its line (typing at a line's end), nothing is cut and nothing parsed.
        """
        if self.context == "whole_file":
            return suffix
        if self.context == "prefix":
            return b""
        rest = _REST.match(suffix)
        word_end = rest.end() if rest is not None else 0  # the rest of the word under the cursor goes too
        line_end = suffix.find(b"\n", word_end)
        line_end = len(suffix) if line_end < 0 else line_end
        if not suffix[word_end:line_end].strip():
            return suffix[word_end:]
        before, after = prefix[: len(prefix) - len(typed_word(prefix))], suffix[word_end:]
        if self.window_bytes is not None:
            before, after = window(before, after, self.window_bytes)
        parsed = parse_at_cursor(before, after, language)
        if parsed is None:  # no identifier can stand here: the text as it is (`complete` answers nothing)
            return suffix
        tree, leaf = parsed
        end = statement_end(tree, leaf) - len(before) - len(PLACEHOLDER)  # an offset into `after`
        return separated(suffix[word_end + min(max(end, 0), line_end - word_end) :])

    def complete(
        self,
        requests: Sequence[CompletionRequest],
        options: CompletionOptions = _DEFAULT_OPTIONS,
        deadlines: Sequence[float] | None = None,
    ) -> list[list[Candidate]]:
        """Per request, the top `options.k` tokens at the cursor as the text to insert there: the rest of
        each token after what is already typed (a token that is all typed is dropped), read in the
        completer's `context`. No candidates where no identifier can stand (inside a string or a comment).
        `deadlines` are not used: one batched pass is the whole computation."""
        examples, partials, rows = [], [], []
        cut = self.context != "whole_file"  # the statement at the cursor is unfinished (or gone, editor)
        for row, request in enumerate(requests):
            before, after = request.prefix, self.served_suffix(request.prefix, request.suffix, request.language)
            if self.window_bytes is not None:
                before, after = window(before, after, self.window_bytes)
            try:
                example, partial = self._hole_example(HoleRequest(before + after, len(before), request.language, cut))
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
        scores. Each document is read as given, whatever `context` says (evaluation builds each setting's
        text itself). Raises NoHole where no identifier can stand at a cursor."""
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
