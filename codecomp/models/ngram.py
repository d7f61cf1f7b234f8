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
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

EOF: int = 256
N_SYMBOLS: int = 257
BOS: int = 257  # only ever in contexts
_CTX_BASE = 258  # a context symbol is a byte or BOS
_STATE_FORMAT = "codecomp.models.ngram.CharNGram/1"
_FALLBACK_DISCOUNT = 0.75  # modified KN, where count-of-counts are too sparse to estimate a discount
_DENSE_ROWS = 16384  # orders with at most this many contexts keep whole distributions: 33 MB at most each


@dataclasses.dataclass(frozen=True)
class _Level:
    """The tables of one order; see the module docstring."""

    ctx_keys: np.ndarray  # (N_ctx,) int64, sorted
    ng_keys: np.ndarray  # (N_ng,) int64, sorted
    ng_counts: np.ndarray  # (N_ng,) int64
    ctx_total: np.ndarray  # (N_ctx,) float64
    ctx_backoff: np.ndarray  # (N_ctx,) float64
    discounts: np.ndarray  # (4,) float64: the discount of a count 0, 1, 2, 3+


@dataclasses.dataclass(frozen=True)
class _Lookup:
    """What `distributions` reads per order, derived from a _Level once (not saved): each context's n-grams are
    ng_keys[ctx_ptr[c] : ctx_ptr[c + 1]], since ng_keys are sorted by context first."""

    ctx_ptr: np.ndarray  # (N_ctx + 1,) int64
    ng_symbols: np.ndarray  # (N_ng,) int64, the predicted symbol of each n-gram
    ng_mass: np.ndarray  # (N_ng,) float64, max(c - D(c), 0) / c(h): its discounted share of its context


def _derive(level: _Level) -> _Lookup:
    ctx_of = level.ng_keys // N_SYMBOLS
    ctx_ptr = np.searchsorted(ctx_of, np.arange(len(level.ctx_keys) + 1))
    mass = np.maximum(level.ng_counts - level.discounts[np.minimum(level.ng_counts, 3)], 0.0) / level.ctx_total[ctx_of]
    return _Lookup(ctx_ptr, level.ng_keys % N_SYMBOLS, mass)


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
        self._lookups: list[_Lookup] = []
        self._dense: list[np.ndarray] = []  # see _dense_tables

    # ---------------------------------------------------------------- training

    def fit(self, documents: Iterable[bytes], progress: Callable[[int], object] | None = None) -> CharNGram:
        """Count the n-grams of all orders in `documents`; callable once.

        Args:
            documents: whole documents, each scored as its bytes followed by EOF.
            progress: called with 1 as each order is counted (a progress bar's `update`).

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
            if progress is not None:
                progress(1)
        assert previous is not None
        levels.append(self._level(previous[0], previous[1], previous[3]))
        self._set_levels(levels)
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
        return self.distributions(self.contexts([history]))[0]

    def contexts(self, histories: Sequence[bytes]) -> np.ndarray:
        """The contexts the model reads after each history: (B, order-1) int64 symbols, oldest first, padded on
        the left with BOS where a history is shorter (the start of a document)."""
        pad = self.order - 1
        contexts = np.full((len(histories), pad), BOS, dtype=np.int64)
        for row, history in enumerate(histories):
            tail = history[len(history) - pad :] if len(history) > pad else history
            if tail:
                contexts[row, pad - len(tail) :] = np.frombuffer(tail, dtype=np.uint8)
        return contexts

    def distributions(self, contexts: np.ndarray) -> np.ndarray:
        """The next-symbol probabilities after many contexts at once (the batched `distribution`).

        The low orders, whose contexts are few, are tables of whole distributions computed once (`_dense`); a row
        starts from the table of the longest of those orders its context was seen at. Each higher order is then
        one vectorised step over the rows still seen: find the context, scale the row by its backoff weight
        gamma(h), and add the discounted shares of the n-grams seen after it. The same floating-point operations
        in the same order as one row at a time, so the results do not depend on the batch.

        Args:
            contexts: (B, order-1) int64 symbols, oldest first, BOS-padded (see `contexts`).

        Returns:
            (B, 257) float64 probabilities, each row summing to 1, all nonzero.
        """
        levels = self._fitted()
        probs = np.empty((len(contexts), N_SYMBOLS))  # (B, 257)
        rows = np.arange(len(contexts))  # (A,) rows whose context is seen at order k
        ctx_ids = np.zeros(len(contexts), dtype=np.int64)  # (A,) their context ids at order k
        for k in range(2, len(self._dense) + 1):
            index, found = _lookup(levels[k - 1].ctx_keys, ctx_ids * _CTX_BASE + contexts[rows, -(k - 1)])
            probs[rows[~found]] = self._dense[k - 2][ctx_ids[~found]]  # unseen at order k: order k-1 is final
            rows, ctx_ids = rows[found], index[found]
        probs[rows] = self._dense[-1][ctx_ids]
        return self._refine(probs, contexts, rows, ctx_ids, len(self._dense) + 1, self.order)

    def _refine(
        self, probs: np.ndarray, contexts: np.ndarray, rows: np.ndarray, ctx_ids: np.ndarray, first: int, last: int
    ) -> np.ndarray:
        """Apply orders first..last to `probs` (B, 257) in place, where `rows` (A,) hold the distributions of
        order first-1 and were seen at it with `ctx_ids` (A,); returns `probs`."""
        levels = self._fitted()
        for k in range(first, last + 1):
            level, lookup = levels[k - 1], self._lookups[k - 1]
            if k >= 2:
                index, found = _lookup(level.ctx_keys, ctx_ids * _CTX_BASE + contexts[rows, -(k - 1)])
                rows, ctx_ids = rows[found], index[found]
                if not len(rows):
                    break  # unseen here, so unseen at every higher order
            ngrams, owner = concat_ranges(lookup.ctx_ptr[ctx_ids], lookup.ctx_ptr[ctx_ids + 1])  # (N,) each
            probs[rows] *= level.ctx_backoff[ctx_ids][:, None]
            # (row, symbol) pairs are distinct within an order, so a fancy-indexed += adds each once.
            probs[rows[owner], lookup.ng_symbols[ngrams]] += lookup.ng_mass[ngrams]
        return probs

    def _dense_tables(self) -> list[np.ndarray]:
        """Per order k = 1, 2, ... while its contexts are at most _DENSE_ROWS: the distribution after each of
        its contexts, (N_ctx, 257), computed row by row as `_refine` would."""
        levels, tables = self._fitted(), []
        symbols = np.zeros((1, 0), dtype=np.int64)  # (N_ctx, k-1) each context of order k, oldest first
        for k, level in enumerate(levels, start=1):
            if k >= 2:
                parent, left = level.ctx_keys // _CTX_BASE, level.ctx_keys % _CTX_BASE
                symbols = np.concatenate([left[:, None], symbols[parent]], axis=1)
            if len(level.ctx_keys) > _DENSE_ROWS:
                break
            contexts = np.full((len(symbols), self.order - 1), BOS, dtype=np.int64)
            contexts[:, self.order - k :] = symbols
            start = np.full((len(symbols), N_SYMBOLS), 1.0 / N_SYMBOLS)
            ids = np.zeros(len(symbols), dtype=np.int64)
            tables.append(self._refine(start, contexts, np.arange(len(symbols)), ids, 1, k))
        return tables

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
        model._set_levels(
            [
                _Level(**{name: np.asarray(level[name], dtype=dtype) for name, dtype in dtypes.items()})
                for level in state["levels"]
            ]
        )
        return model

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted tables as flat named arrays, "<order>.<table>" (e.g. "3.ng_keys"): a checkpoint's tensors."""
        return {f"{k}.{name}": array for k, level in enumerate(self.to_state()["levels"], start=1)
                for name, array in level.items()}  # fmt: skip

    @classmethod
    def from_arrays(cls, order: int, discount: float | None, arrays: Mapping[str, np.ndarray]) -> CharNGram:
        """Rebuild a fitted model from `to_arrays()`'s output and its order and discount."""
        names = [field.name for field in dataclasses.fields(_Level)]
        try:
            levels = [{name: arrays[f"{k}.{name}"] for name in names} for k in range(1, order + 1)]
        except KeyError as missing:
            raise ValueError(f"the arrays of a {order}-gram model lack {missing}") from None
        return cls.from_state({"format": _STATE_FORMAT, "order": order, "discount": discount, "levels": levels})

    def _set_levels(self, levels: list[_Level]) -> None:
        self._levels = levels
        self._lookups = [_derive(level) for level in levels]
        self._dense = self._dense_tables()


def _lookup(keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each query in sorted `keys` (clipped to a valid index) and whether it is there; (Q,) each."""
    if not len(keys):
        return np.zeros(len(queries), dtype=np.int64), np.zeros(len(queries), dtype=bool)
    index = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return index, keys[index] == queries


def concat_ranges(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The integers of the ranges [starts[i], stops[i]) concatenated, (N,), and the range i each came from, (N,)."""
    sizes = stops - starts
    owner = np.repeat(np.arange(len(sizes)), sizes)
    offsets = np.cumsum(sizes) - sizes  # where each range begins in the output
    return starts[owner] + np.arange(int(sizes.sum())) - offsets[owner], owner


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
