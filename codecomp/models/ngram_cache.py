"""The cache component of the n-gram completer: byte n-gram counts of the text at hand (the current file, a
session's recent files), interpolated with the global Kneser-Ney model (`codecomp.models.ngram.CharNGram`).

Code repeats itself within a file and a project, so the counts of the text being edited predict it well: the
cache n-gram models of Tu et al. (FSE 2014) and Hellendoorn & Devanbu (FSE 2017). The formula here is a
Witten-Bell-style interpolation of the cache's orders m..n on top of the global model:

    P^(m-1)(w | h) = P_global(w | h)
    P^(k)(w | h)   = lambda_k(h) * c(h_k, w) / c(h_k) + (1 - lambda_k(h)) * P^(k-1)(w | h),      k = m..n
    lambda_k(h)    = c(h_k) / (c(h_k) + K * T(h_k))
    P(w | h)       = P^(n)(w | h)

where h_k is the last k-1 bytes of the history h, c(h_k, w) how often byte w followed h_k in the cache, c(h_k)
the sum over w, and T(h_k) the number of distinct bytes seen after h_k. A context never seen in the cache has
lambda 0 and leaves the estimate as it is; the weight grows with how often the context was seen and shrinks
with how many different bytes followed it. Orders below m (contexts shorter than m-1 bytes) are left out: a
file's byte unigram and bigram statistics are weaker than the global model's long contexts. The cache counts
only contexts that lie inside a text (no padding), and never predicts EOF. On data/small's valid split
K = 4, m = 3 were the best of a grid (K 0.25..8, m 1..6): bpc 0.67x (cpp) and 0.61x (javascript) the plain
6-gram's, with each byte predicted from the bytes before it in its file.

A table of counts is one sorted array of uint64 context keys for all its orders, the n-grams after each
context in a slice of flat arrays: a key holds the context's bytes (up to 5, the newest lowest), its order in the
next 8 bits and, when tables are stacked for a batch, the table's slot in the top 16; so one lookup serves
every order of every row of a batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from codecomp.models.ngram import BOS, N_SYMBOLS, CharNGram, concat_ranges

MAX_ORDER = 6  # a context of up to 5 bytes (40 bits), the order above it, a slot in the top 16 bits
_ORDER_SHIFT = np.uint64(40)
_SLOT_SHIFT = np.uint64(48)


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    """How the cache is mixed with the global model (see the module docstring).

    Attributes:
        min_order: m, the lowest order of the cache that counts (contexts of m-1 bytes and longer).
        concentration: K, how many times T(h) the cache's count of a context must be to weigh one half.
    """

    min_order: int = 3
    concentration: float = 4.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_order <= MAX_ORDER or self.concentration <= 0:
            raise ValueError(f"need 1 <= min_order <= {MAX_ORDER} and concentration > 0: {self}")


@dataclasses.dataclass(frozen=True)
class Queries:
    """Contexts to look up: pairs of a row and an order whose context lies inside the text (no BOS in it).

    Attributes:
        rows: (Q,) int64 the row of each pair.
        levels: (Q,) int64 its order minus the lowest order asked for (an index into count arrays).
        keys: (Q,) uint64 its context key.
    """

    rows: np.ndarray
    levels: np.ndarray
    keys: np.ndarray

    def in_slots(self, slots: np.ndarray) -> Queries:
        """The pairs marked with their row's table slot in a `CountTable.stack`, slots (B,) int64; rows whose
        slot is negative (no table) are left out."""
        slot = slots[self.rows]
        has = slot >= 0
        return Queries(self.rows[has], self.levels[has], self.keys[has] | (slot[has].astype(np.uint64) << _SLOT_SHIFT))


def context_keys(contexts: np.ndarray, first: int, last: int) -> Queries:
    """The contexts of orders first..last of each row.

    Args:
        contexts: (B, >= last-1) int64 symbols, oldest first, BOS-padded (`CharNGram.contexts`).
    """
    width = last - 1
    newest_first = contexts[:, contexts.shape[1] - width :][:, ::-1]  # (B, last-1): 1, 2, ... bytes back
    inside = np.logical_and.accumulate(newest_first != BOS, axis=1)  # (B, last-1): bytes 1..j+1 back all real
    shifts = np.arange(width, dtype=np.uint64) * np.uint64(8)
    packed = np.cumsum(np.where(inside, newest_first, 0).astype(np.uint64) << shifts, axis=1)  # (B, last-1)
    keys = np.concatenate([np.zeros((len(contexts), 1), dtype=np.uint64), packed], axis=1)  # (B, last): order k-1
    valid = np.concatenate([np.ones((len(contexts), 1), dtype=bool), inside], axis=1)[:, first - 1 :]
    rows, levels = np.nonzero(valid)  # (Q,) each, row-major
    orders = (levels + first).astype(np.uint64)
    return Queries(rows, levels, keys[rows, levels + first - 1] | (orders << _ORDER_SHIFT))


class CountTable:
    """Byte n-gram counts of some texts (the n-grams lying wholly inside one text), all orders in one table.

    Attributes:
        ctx_keys: (C,) uint64 sorted context keys (see the module docstring).
        ctx_ptr: (C + 1,) int64: the n-grams after context i are the slice ctx_ptr[i]:ctx_ptr[i + 1] of:
        symbols: (N,) int64 the byte after the context.
        counts: (N,) float64 how often.
    """

    def __init__(self, ctx_keys: np.ndarray, ctx_ptr: np.ndarray, symbols: np.ndarray, counts: np.ndarray) -> None:
        self.ctx_keys, self.ctx_ptr, self.symbols, self.counts = ctx_keys, ctx_ptr, symbols, counts

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.ctx_keys, self.ctx_ptr, self.symbols, self.counts))

    @classmethod
    def count(cls, texts: Sequence[bytes], first: int, last: int) -> CountTable:
        """Count the n-grams of orders first..last in `texts`."""
        if not 1 <= first <= last <= MAX_ORDER:
            raise ValueError(f"cache orders must lie in 1..{MAX_ORDER}, got {first}..{last}")
        arrays = [np.frombuffer(text, dtype=np.uint8).astype(np.uint64) for text in texts if text]
        ng_keys = []
        for k in range(first, last + 1):  # increasing orders: the order bits keep the concatenation sorted
            keys = [_ngram_keys(array, k) for array in arrays if len(array) >= k]
            unique, counts = np.unique(np.concatenate(keys) if keys else np.zeros(0, np.uint64), return_counts=True)
            ng_keys.append((unique, counts, np.uint64(k) << _ORDER_SHIFT))
        symbols = np.concatenate([(keys & np.uint64(255)).astype(np.int64) for keys, _, _ in ng_keys])
        counts = np.concatenate([counts for _, counts, _ in ng_keys]).astype(np.float64)
        contexts = np.concatenate([(keys >> np.uint64(8)) | order for keys, _, order in ng_keys])  # (N,) sorted
        ctx_keys, starts = np.unique(contexts, return_index=True)
        return cls(ctx_keys, np.append(starts, len(contexts)).astype(np.int64), symbols, counts)

    @classmethod
    def stack(cls, tables: Sequence[CountTable]) -> CountTable:
        """Many tables as one, table i's keys marked with slot i (`Queries.in_slots`), so that the rows of many
        requests, each with its own tables, are looked up in one call."""
        if len(tables) > 1 << 16:
            raise ValueError(f"at most {1 << 16} tables stack, got {len(tables)}")
        offsets = np.cumsum([0] + [len(table.symbols) for table in tables])
        return cls(
            np.concatenate([table.ctx_keys | (np.uint64(slot) << _SLOT_SHIFT) for slot, table in enumerate(tables)]),
            np.concatenate([t.ctx_ptr[:-1] + offset for t, offset in zip(tables, offsets, strict=False)]
                           + [offsets[-1:]]),
            np.concatenate([table.symbols for table in tables]),
            np.concatenate([table.counts for table in tables]),
        )  # fmt: skip

    def add_counts(self, out: np.ndarray, queries: Queries) -> None:
        """Add this table's counts of the bytes after the queried contexts to count arrays.

        Args:
            out: (L, B, 257) float64 counts per query level, row and symbol, added to.
            queries: the contexts; no (level, row) pair twice.
        """
        if not len(self.ctx_keys) or not len(queries.keys):
            return
        index = np.minimum(np.searchsorted(self.ctx_keys, queries.keys), len(self.ctx_keys) - 1)
        found = self.ctx_keys[index] == queries.keys
        index, rows, levels = index[found], queries.rows[found], queries.levels[found]
        ngrams, owner = concat_ranges(self.ctx_ptr[index], self.ctx_ptr[index + 1])
        # (level, row, symbol) triples are distinct within one table, so += adds each once.
        out[levels[owner], rows[owner], self.symbols[ngrams]] += self.counts[ngrams]


def mix(probs: np.ndarray, counts: np.ndarray, settings: CacheSettings) -> np.ndarray:
    """Interpolate cache counts into next-symbol distributions, order by order (the module docstring's formula).

    Args:
        probs: (B, 257) the global model's distributions; changed in place and returned.
        counts: (L, B, 257) the cache's counts of each symbol after the row's context at orders
            settings.min_order, settings.min_order + 1, ...
    """
    for matrix in counts:
        total = matrix.sum(axis=1)  # (B,) c(h)
        prior = settings.concentration * np.count_nonzero(matrix, axis=1)  # (B,) K * T(h)
        prior[total == 0] = 1.0  # an unseen context: (0 + 1 * P) / (0 + 1), the estimate unchanged
        # (c(h, w) + K T(h) P(w)) / (c(h) + K T(h)), in place over whole rows
        probs *= prior[:, None]
        probs += matrix
        probs /= (total + prior)[:, None]
    return probs


def score_document(
    model: CharNGram,
    document: bytes,
    cache: CacheSettings | None,
    keep: np.ndarray | None = None,
    chunk: int = 2048,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every byte of a document predicted from the bytes before it, with the cache counting those bytes.

    Positions are taken `chunk` (or more, for a long file) at a time: the global model's distributions for all
    of them in one batched call, the cache's counts from a table of the text before the chunk plus, for the
    positions inside it, the counts of the chunk's earlier positions (cumulative sums over the positions of each
    context).

    Args:
        model: the global model.
        cache: the cache's mixing settings; None: the global model alone.
        keep: sorted positions whose whole distributions to return.

    Returns:
        bits (L,) float64, -log2 P(byte | bytes before); correct (L,) bool, the byte was the most probable symbol;
        and the (len(keep), 257) distributions at the `keep` positions.
    """
    length, pad = len(document), model.order - 1
    stream = np.full(pad + length, BOS, dtype=np.int64)
    stream[pad:] = np.frombuffer(document, dtype=np.uint8)
    windows = np.lib.stride_tricks.sliding_window_view(stream, pad)  # (L + 1, pad): the context of each byte
    bits, correct = np.zeros(length), np.zeros(length, dtype=bool)
    keep = np.zeros(0, dtype=np.int64) if keep is None else np.asarray(keep, dtype=np.int64)
    kept = np.zeros((len(keep), N_SYMBOLS))
    step = min(max(chunk, length // 32), 16384)  # a long file in at most ~32 chunks of bounded memory
    for start in range(0, length, step):
        stop = min(start + step, length)
        contexts, targets = windows[start:stop], stream[pad + start : pad + stop]
        probs = model.distributions(contexts)  # (C, 257)
        if cache is not None:
            counts = _chunk_counts(document[:start], contexts, targets, cache.min_order, min(model.order, MAX_ORDER))
            probs = mix(probs, counts, cache)
        rows = np.arange(stop - start)
        bits[start:stop] = -np.log2(probs[rows, targets])
        correct[start:stop] = probs.argmax(axis=1) == targets
        inside = (keep >= start) & (keep < stop)
        kept[inside] = probs[keep[inside] - start]
    return bits, correct, kept


def _chunk_counts(before: bytes, contexts: np.ndarray, targets: np.ndarray, first: int, last: int) -> np.ndarray:
    """The cache counts (L, C, 257) of orders first..last for a chunk's positions: of the bytes before the
    chunk, and of the chunk's own positions before each one."""
    queries = context_keys(contexts, first, last)
    out = np.zeros((last - first + 1, len(contexts), N_SYMBOLS))
    # Within the chunk: for each position, the one-hot counts of the earlier positions of its context (and order),
    # from running sums over the positions sorted by context; only contexts that occur twice or more matter.
    by_context = np.argsort(queries.keys, kind="stable")
    sorted_keys = queries.keys[by_context]
    repeated = np.r_[False, sorted_keys[1:] == sorted_keys[:-1]]
    repeated[:-1] |= repeated[1:]
    by_context, sorted_keys = by_context[repeated], sorted_keys[repeated]
    if len(by_context):
        rows, levels = queries.rows[by_context], queries.levels[by_context]
        onehot = np.zeros((len(by_context), N_SYMBOLS), dtype=np.int32)
        onehot[np.arange(len(by_context)), targets[rows]] = 1
        before_me = np.cumsum(onehot, axis=0) - onehot  # (R, 257) exclusive running counts
        first_of_group = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
        group_start = np.maximum.accumulate(np.where(first_of_group, np.arange(len(by_context)), 0))
        out[levels, rows] = before_me - before_me[group_start]
    if before:
        CountTable.count([before], first, last).add_counts(out, queries)
    return out


def _ngram_keys(array: np.ndarray, k: int) -> np.ndarray:
    """The keys of the order-k n-grams of one text (uint64 bytes), (len - k + 1,)."""
    targets = np.arange(k - 1, len(array))
    keys = np.zeros(len(targets), dtype=np.uint64)
    for back in range(k - 1, 0, -1):  # oldest context byte first, so the newest ends lowest
        keys = (keys << np.uint64(8)) | array[targets - back]
    return (keys << np.uint64(8)) | array[targets]
