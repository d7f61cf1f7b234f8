"""The approximate (LSH) prediction cache: near-identical completion contexts share an answer.

The exact text of the current line (plus model version and language) selects a bucket; within it,
MinHash/LSH over shingles of the preceding tokens finds candidates whose exact Jaccard similarity is
then checked against a threshold. Meant for one asyncio event loop; not thread-safe.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from codecomp.text.digest import digest
from codecomp.text.minhash import MinHasher, jaccard
from codecomp.text.tokens import code_tokens

V = TypeVar("V")


@dataclass(slots=True)
class _Features:
    bucket: bytes
    shingles: frozenset[bytes]
    band_keys: tuple[bytes, ...]


@dataclass(slots=True)
class _Entry(Generic[V]):
    features: _Features
    value: V


class ApproximateCache(Generic[V]):
    """LSH cache under which near-identical completion contexts share an answer.

    The answer depends strongly on the current line, so the exact text of the line before the cursor,
    with the model version and language, forms a bucket key that a hit must match exactly. Within it,
    the last `context_tokens` tokens before the current line are compared as sets of `shingle`-token
    shingles: MinHash with `bands` x `rows` permutations finds candidates sharing a band, and the best
    candidate by exact Jaccard similarity is returned if it reaches `threshold`. The band map is the
    cache's own rather than a datasketch MinHashLSH: its keys carry the bucket, so contexts typed on
    other lines never become candidates, and entries leave it on LRU eviction.

    Args:
        threshold: Jaccard similarity a hit requires.
        context_tokens: How many tokens before the current line are compared.
        shingle: Tokens per shingle.
        bands: LSH bands.
        rows: MinHash values per band.
        max_entries: LRU bound on stored entries; 0 turns the cache off.
        seed: Seed of the MinHash permutations; fixed so signatures agree across processes.

    Attributes:
        hits: Lookups that returned a value.
        misses: Lookups that did not.
    """

    def __init__(
        self,
        threshold: float = 0.9,
        context_tokens: int = 64,
        shingle: int = 3,
        bands: int = 16,
        rows: int = 4,
        max_entries: int = 10_000,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if context_tokens < 1 or shingle < 1 or bands < 1 or rows < 1:
            raise ValueError("context_tokens, shingle, bands and rows must be >= 1")
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.threshold = threshold
        self.context_tokens = context_tokens
        self.shingle = shingle
        self.bands = bands
        self.rows = rows
        self.max_entries = max_entries
        self._hasher = MinHasher(bands, rows, seed)
        # Bytes before the current line that are tokenised: enough for `context_tokens` tokens in any
        # realistic code, while a 100 KB prefix costs no more than a short one.
        self._tail_bytes = max(4096, 64 * context_tokens)
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[int, _Entry[V]] = OrderedDict()
        self._bands: dict[bytes, set[int]] = {}
        self._next_id = 0
        # The usual pattern is lookup (miss), compute, store with the same prefix: remember the last
        # features so that the store does not hash the context again.
        self._memo: tuple[tuple[str, str, bool, bytes], _Features] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def band_buckets(self) -> int:
        """Number of LSH band buckets currently referenced (bounded by len(self) * bands)."""
        return len(self._bands)

    def _bounds(self, prefix: bytes) -> tuple[int, int]:
        """Where the current line starts (after the last newline) and where the tokenised tail starts."""
        cut = prefix.rfind(b"\n") + 1
        return cut, max(0, cut - self._tail_bytes)

    def _context_tokens(self, prefix: bytes) -> tuple[bytes, list[bytes]]:
        """The current line and the last `context_tokens` tokens before it."""
        cut, start = self._bounds(prefix)
        tokens = code_tokens(prefix, start, cut)
        if start > 0 and tokens:
            tokens = tokens[1:]  # the tail may have cut the first token in two
        return prefix[cut:], tokens[-self.context_tokens :]

    def _shingles(self, tokens: list[bytes]) -> frozenset[bytes]:
        if not tokens:
            return frozenset()
        k = min(self.shingle, len(tokens))
        # Tokens never contain a space, so joining with one is unambiguous.
        return frozenset(b" ".join(tokens[i : i + k]) for i in range(len(tokens) - k + 1))

    def signature(self, prefix: bytes) -> tuple[int, ...]:
        """MinHash signature of the context before the current line (deterministic across processes)."""
        return tuple(self._hasher.signature(self._shingles(self._context_tokens(prefix)[1])).tolist())

    def _features(self, model_version: str, language: str, prefix: bytes) -> _Features:
        _, start = self._bounds(prefix)
        memo_key = (model_version, language, start > 0, prefix[start:])
        if self._memo is not None and self._memo[0] == memo_key:
            return self._memo[1]
        line, tokens = self._context_tokens(prefix)
        bucket = digest((model_version.encode(), language.encode(), line))
        shingles = self._shingles(tokens)
        band_keys = self._hasher.band_keys(self._hasher.signature(shingles), salt=bucket)
        features = _Features(bucket, shingles, band_keys)
        self._memo = (memo_key, features)
        return features

    def _best(self, features: _Features) -> tuple[int, float] | None:
        """The candidate (id, exact Jaccard) most similar to `features`, among those sharing a band."""
        best: tuple[int, float] | None = None
        seen: set[int] = set()
        for band_key in features.band_keys:
            for entry_id in self._bands.get(band_key, ()):
                if entry_id in seen:
                    continue
                seen.add(entry_id)
                # Band keys carry the bucket, so every candidate is of the same line, version and language.
                sim = jaccard(features.shingles, self._entries[entry_id].features.shingles)
                if best is None or sim > best[1]:
                    best = (entry_id, sim)
        return best

    def lookup(self, model_version: str, language: str, prefix: bytes) -> tuple[V, float] | None:
        """A stored value for a context similar enough to this one, with its Jaccard similarity, or None."""
        if self.max_entries <= 0:
            self.misses += 1
            return None
        best = self._best(self._features(model_version, language, prefix))
        if best is None or best[1] < self.threshold:
            self.misses += 1
            return None
        entry_id, sim = best
        self._entries.move_to_end(entry_id)
        self.hits += 1
        return self._entries[entry_id].value, sim

    def store(self, model_version: str, language: str, prefix: bytes, value: V) -> None:
        """Store `value` for this context, replacing the value of an identical context if there is one."""
        if self.max_entries <= 0:
            return
        features = self._features(model_version, language, prefix)
        best = self._best(features)
        if best is not None and best[1] == 1.0:
            entry_id = best[0]
            self._entries[entry_id].value = value
            self._entries.move_to_end(entry_id)
            return
        entry_id = self._next_id
        self._next_id += 1
        self._entries[entry_id] = _Entry(features, value)
        for band_key in features.band_keys:
            self._bands.setdefault(band_key, set()).add(entry_id)
        while len(self._entries) > self.max_entries:
            self._evict(next(iter(self._entries)))

    def _evict(self, entry_id: int) -> None:
        entry = self._entries.pop(entry_id)
        for band_key in entry.features.band_keys:
            ids = self._bands[band_key]
            ids.discard(entry_id)
            if not ids:
                del self._bands[band_key]
