"""Byte n-gram language model with interpolated Kneser-Ney smoothing: the baseline for the char-LSTM.

Symbols are the 256 byte values and EOF (256). A document of L bytes is the sequence of its L bytes and EOF.
Its history is padded on the left with order-1 BOS markers (id 257), which appear only in contexts and are never
predicted, so the first byte is predicted from the context "start of document".

Smoothing (Chen & Goodman 1998, interpolated Kneser-Ney):

    P_k(w | h) = max(c_k(h, w) - D_k(c_k(h, w)), 0) / c_k(h) + gamma_k(h) * P_{k-1}(w | h')
    gamma_k(h) = sum_w D_k(c_k(h, w)) / c_k(h),    P_0(w) = 1 / 257

where h' drops h's oldest symbol, and P_k = P_{k-1} when h was never seen. At the highest order c_k is the raw
count; at lower orders it is the continuation count, the number of distinct symbols seen just before (h, w), except
in contexts that begin with BOS, whose only left extension is BOS, so the raw count is used there (as KenLM does for
n-grams starting with <s>). D_k is one discount for every count (plain KN), or D1, D2, D3+ per order estimated from
the count-of-counts n1..n4 of c_k (modified KN).

Storage, per order k (contexts of k-1 symbols), all sorted int64 keys searched with `np.searchsorted`:
    ctx_keys      parent_context_id * 258 + left_symbol: a trie of contexts grown to the left, so the contexts of one
                  history at orders 1..n are found one after another; a context's id is its key's index
    ng_keys       context_id * 257 + symbol, with ng_counts the (raw or continuation) count of each n-gram
    ctx_total     c_k(h) per context, ctx_backoff gamma_k(h) per context, discounts [0, D1, D2, D3+]
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

EOF: int = 256
N_SYMBOLS: int = 257
BOS: int = 257  # only ever in contexts
_CTX_BASE = 258  # a context symbol is a byte or BOS
_NEWLINE = ord("\n")
_STATE_FORMAT = "codecomp.models.ngram.CharNGram/1"
_FALLBACK_DISCOUNT = 0.75  # modified KN, where count-of-counts are too sparse to estimate a discount


@dataclasses.dataclass(frozen=True)
class _Level:
    """The tables of one order; see the module docstring."""

    ctx_keys: np.ndarray  # (N_ctx,) int64, sorted
    ng_keys: np.ndarray  # (N_ng,) int64, sorted
    ng_counts: np.ndarray  # (N_ng,) int64
    ctx_total: np.ndarray  # (N_ctx,) float64
    ctx_backoff: np.ndarray  # (N_ctx,) float64
    discounts: np.ndarray  # (4,) float64: the discount of a count 0, 1, 2, 3+


class CharNGram:
    """Byte n-gram language model with interpolated (optionally modified) Kneser-Ney smoothing.

    Args:
        order: n, the number of symbols in the longest n-gram; the model sees up to order-1 bytes of history.
        discount: the absolute discount of plain interpolated KN, in (0, 1]; None for modified KN, with three
            discounts D1, D2, D3+ per order estimated from the count-of-counts (Chen & Goodman).
    """

    def __init__(self, order: int = 6, discount: float | None = 0.75) -> None:
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        if discount is not None and not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must lie in (0, 1], got {discount}")
        self.order = order
        self.discount = discount
        self._levels: list[_Level] | None = None

    # ---------------------------------------------------------------- training

    def fit(self, documents: Iterable[bytes]) -> CharNGram:
        """Count the n-grams of all orders in `documents`; callable once.

        Args:
            documents: whole documents, each scored as its bytes followed by EOF.

        Returns:
            self, fitted.
        """
        if self._levels is not None:
            raise RuntimeError("CharNGram.fit may be called only once")
        started = time.perf_counter()
        arrays = [np.frombuffer(doc, dtype=np.uint8) for doc in documents]
        if not arrays:
            raise ValueError("fit needs at least one document")
        pad = self.order - 1
        # The corpus as one sequence: BOS * pad, the document's bytes, EOF, for each document in turn.
        stream = np.full(sum(pad + len(a) + 1 for a in arrays), BOS, dtype=np.int64)
        offset = pad
        for array in arrays:
            stream[offset : offset + len(array)] = array
            stream[offset + len(array)] = EOF
            offset += len(array) + 1 + pad
        targets = np.flatnonzero(stream != BOS)  # (M,) positions of the predicted symbols
        symbols = stream[targets]  # (M,)
        del arrays

        levels: list[_Level] = []
        ctx_ids = np.zeros(len(targets), dtype=np.int64)  # (M,) the empty context
        ctx_keys = np.zeros(1, dtype=np.int64)
        previous: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        for k in range(1, self.order + 1):
            if k >= 2:
                ctx_keys, ctx_ids = np.unique(ctx_ids * _CTX_BASE + stream[targets - (k - 1)], return_inverse=True)
            ng_keys, ng_ids, raw = np.unique(ctx_ids * N_SYMBOLS + symbols, return_inverse=True, return_counts=True)
            if previous is not None:
                # Continuation counts of order k-1: the distinct order-k n-grams that extend each one to the left.
                prev_ctx_keys, prev_ng_keys, prev_ng_ids, prev_raw, prev_bos = previous
                parent = np.empty(len(ng_keys), dtype=np.int64)
                parent[ng_ids] = prev_ng_ids
                continuation = np.bincount(parent, minlength=len(prev_ng_keys))
                counts = np.where(prev_bos[prev_ng_keys // N_SYMBOLS], prev_raw, continuation)
                levels.append(self._level(prev_ctx_keys, prev_ng_keys, counts))
            starts_with_bos = (ctx_keys % _CTX_BASE == BOS) if k >= 2 else np.zeros(1, dtype=bool)
            previous = (ctx_keys, ng_keys, ng_ids, raw, starts_with_bos)
        assert previous is not None
        levels.append(self._level(previous[0], previous[1], previous[3]))
        self._levels = levels
        logger.info(
            "fit %d-gram model on %d symbols in %.1f s; n-grams per order %s",
            self.order,
            len(targets),
            time.perf_counter() - started,
            [len(level.ng_keys) for level in levels],
        )
        return self

    def _level(self, ctx_keys: np.ndarray, ng_keys: np.ndarray, counts: np.ndarray) -> _Level:
        counts = counts.astype(np.int64)
        if self.discount is None:
            discounts = _modified_discounts(np.bincount(counts, minlength=5)[1:5])
        else:
            discounts = np.array([0.0, self.discount, self.discount, self.discount])
        ctx_of = ng_keys // N_SYMBOLS
        total = np.bincount(ctx_of, weights=counts, minlength=len(ctx_keys)).astype(np.float64)
        # gamma(h): the mass taken off the context's n-grams goes to the lower order.
        taken = np.bincount(ctx_of, weights=discounts[np.minimum(counts, 3)], minlength=len(ctx_keys))
        return _Level(ctx_keys, ng_keys, counts, total, taken / total, discounts)

    # ---------------------------------------------------------------- scoring

    def distribution(self, history: bytes) -> np.ndarray:
        """The probabilities of the next symbol.

        Args:
            history: the document so far; only its last order-1 bytes matter. A shorter history is the start of a
                document (padded with BOS).

        Returns:
            (257,) float64 probabilities of bytes 0..255 and EOF, summing to 1, all nonzero.
        """
        levels = self._fitted()
        pad = self.order - 1
        tail = history[len(history) - pad :] if len(history) > pad else history
        context = [BOS] * (pad - len(tail)) + list(tail)  # oldest first
        probs = np.full(N_SYMBOLS, 1.0 / N_SYMBOLS)  # (257,)
        ctx_id = 0
        for k, level in enumerate(levels, start=1):
            if k >= 2:
                key = ctx_id * _CTX_BASE + context[-(k - 1)]
                index = int(np.searchsorted(level.ctx_keys, key))
                if index == len(level.ctx_keys) or level.ctx_keys[index] != key:
                    break  # unseen here, so unseen at every higher order
                ctx_id = index
            lo, hi = np.searchsorted(level.ng_keys, (ctx_id * N_SYMBOLS, (ctx_id + 1) * N_SYMBOLS))
            seen = level.ng_keys[lo:hi] - ctx_id * N_SYMBOLS
            counts = level.ng_counts[lo:hi]
            probs *= level.ctx_backoff[ctx_id]
            probs[seen] += np.maximum(counts - level.discounts[np.minimum(counts, 3)], 0.0) / level.ctx_total[ctx_id]
        return probs

    def document_bits(self, document: bytes) -> np.ndarray:
        """The surprisal of every byte of a document given the bytes before it.

        Args:
            document: a whole document, scored from its start (EOF is not scored).

        Returns:
            (len(document),) float64: -log2 P(byte_i | bytes before i), in bits.
        """
        levels = self._fitted()
        pad = self.order - 1
        if not document:
            return np.zeros(0, dtype=np.float64)
        stream = np.full(pad + len(document), BOS, dtype=np.int64)
        stream[pad:] = np.frombuffer(document, dtype=np.uint8)
        symbols = stream[pad:]  # (L,)
        probs = np.full(len(document), 1.0 / N_SYMBOLS)  # (L,)
        active = np.arange(len(document))  # (A,) positions whose context at this order was seen
        ctx_ids = np.zeros(len(document), dtype=np.int64)  # (A,)
        for k, level in enumerate(levels, start=1):
            if k >= 2:
                index, found = _lookup(level.ctx_keys, ctx_ids * _CTX_BASE + stream[active + pad - (k - 1)])
                active, ctx_ids = active[found], index[found]
                if not len(active):
                    break
            index, found = _lookup(level.ng_keys, ctx_ids * N_SYMBOLS + symbols[active])
            counts = np.where(found, level.ng_counts[index], 0)
            discounted = np.maximum(counts - level.discounts[np.minimum(counts, 3)], 0.0) / level.ctx_total[ctx_ids]
            probs[active] = probs[active] * level.ctx_backoff[ctx_ids] + discounted
        return -np.log2(probs)

    def _fitted(self) -> list[_Level]:
        if self._levels is None:
            raise RuntimeError("CharNGram is not fitted; call fit() or from_state() first")
        return self._levels

    # ---------------------------------------------------------------- persistence

    def to_state(self) -> dict[str, Any]:
        """The fitted model as plain picklable containers (str, int, float, None, lists, dicts, ndarrays)."""
        levels = self._fitted()
        return {
            "format": _STATE_FORMAT,
            "order": self.order,
            "discount": self.discount,
            "levels": [
                {field.name: getattr(level, field.name) for field in dataclasses.fields(level)} for level in levels
            ],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CharNGram:
        """Rebuild a fitted model from `to_state()`'s output."""
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"not a CharNGram state: format {state.get('format')!r}")
        model = cls(order=int(state["order"]), discount=state["discount"])
        if len(state["levels"]) != model.order:
            raise ValueError(f"state has {len(state['levels'])} levels for order {model.order}")
        dtypes: dict[str, type[np.generic]] = {field.name: np.float64 for field in dataclasses.fields(_Level)}
        dtypes.update(ctx_keys=np.int64, ng_keys=np.int64, ng_counts=np.int64)
        model._levels = [
            _Level(**{name: np.asarray(level[name], dtype=dtype) for name, dtype in dtypes.items()})
            for level in state["levels"]
        ]
        return model


def _lookup(keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each query in sorted `keys` (clipped to a valid index) and whether it is there; (Q,) each."""
    if not len(keys):
        return np.zeros(len(queries), dtype=np.int64), np.zeros(len(queries), dtype=bool)
    index = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return index, keys[index] == queries


def _modified_discounts(count_of_counts: np.ndarray) -> np.ndarray:
    """[0, D1, D2, D3+] from n1..n4, the numbers of n-grams seen exactly 1..4 times (Chen & Goodman, eq. 26).

    A discount that the counts leave undefined or outside (0, i] (tiny corpora) falls back to 0.75.
    """
    n1, n2, n3, n4 = (float(n) for n in count_of_counts)
    discounts = [0.0]
    y = n1 / (n1 + 2 * n2) if n1 + n2 > 0 else math.nan
    for i, (n_i, n_next) in enumerate([(n1, n2), (n2, n3), (n3, n4)], start=1):
        d = i - (i + 1) * y * n_next / n_i if n_i > 0 else math.nan
        discounts.append(d if 0.0 < d <= i else _FALLBACK_DISCOUNT)
    return np.array(discounts)


# -------------------------------------------------------------------- completion


def complete_line(
    model: CharNGram, prefix: bytes, beam_size: int = 4, max_chars: int = 80, k: int = 1
) -> list[tuple[bytes, float]]:
    """Complete the current line by beam search over bytes.

    A hypothesis ends when it emits b"\\n" or EOF (whose probability counts in its score; the newline is not part of
    the text) or when its text reaches `max_chars` bytes. The same text ended by both newline and EOF is one
    completion whose probability is the sum of the two.

    Args:
        model: a fitted model.
        prefix: the document up to the cursor.
        beam_size: live hypotheses kept per step, and symbols tried per hypothesis.
        max_chars: the longest completion, in bytes.
        k: how many completions to return.

    Returns:
        Up to k (completion bytes, natural-log probability) pairs, most probable first.
    """
    if beam_size < 1 or k < 1 or max_chars < 0:
        raise ValueError(f"need beam_size >= 1, k >= 1, max_chars >= 0; got {beam_size}, {k}, {max_chars}")
    keep = max(len(prefix) - (model.order - 1), 0)  # older bytes never matter; a short prefix stays a document start
    history = prefix[keep:]
    tries = min(beam_size, N_SYMBOLS)
    finished: dict[bytes, float] = {}
    beam: list[tuple[float, bytes]] = [(0.0, b"")]  # (log-probability, text)
    for _ in range(max_chars):
        candidates: list[tuple[float, bytes]] = []
        for score, text in beam:
            log_probs = np.log(model.distribution(history + text))  # (257,)
            for symbol in map(int, np.argpartition(-log_probs, tries - 1)[:tries]):
                total = score + float(log_probs[symbol])
                if symbol in (_NEWLINE, EOF):
                    finished[text] = float(np.logaddexp(finished[text], total)) if text in finished else total
                else:
                    candidates.append((total, text + bytes((symbol,))))
        beam = heapq.nlargest(beam_size, candidates)
        best_done = heapq.nlargest(k, finished.values())
        # Scores only fall as text grows, so no live hypothesis can overtake the k best finished ones.
        if not beam or (len(best_done) == k and beam[0][0] <= best_done[-1]):
            beam = []
            break
    for score, text in beam:  # reached max_chars
        finished.setdefault(text, score)
    return sorted(finished.items(), key=lambda item: -item[1])[:k]
