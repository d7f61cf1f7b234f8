"""The approximate (LSH) prediction cache: near-identical completion contexts share an answer.

The exact text of the current line (plus language, and the model version) selects a bucket; within it,
MinHash/LSH over shingles of the preceding tokens finds candidates whose exact Jaccard similarity is
then checked against a threshold. A context's sketch does not depend on the model, so a request sketches
its context once for all its models' caches. Meant for one asyncio event loop; not thread-safe.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from codecomp.text.digest import digest
from codecomp.text.minhash import MinHasher, jaccard
from codecomp.text.tokens import code_tokens

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Sketch:
    """What the approximate caches know of one completion context; the same for every model, so a request
    computes it once (`ContextSketcher.sketch`) and every model's cache looks it up.

    Attributes:
        bucket: digest of the language and the current line (the text of the line before the cursor).
        shingles: the shingles of the tokens before the current line.
        band_keys: the LSH band keys of their MinHash signature, salted with `bucket`.
    """

    bucket: bytes
    shingles: frozenset[bytes]
    band_keys: tuple[bytes, ...]


class ContextSketcher:
    """The sketch of a context: the current line, and MinHash/LSH of the shingles of the tokens before it.

    Args:
        context_tokens: How many tokens before the current line are compared.
        shingle: Tokens per shingle.
        bands: LSH bands.
        rows: MinHash values per band.
        seed: Seed of the MinHash permutations; fixed so signatures agree across processes.
        remembered: contexts before a line whose shingles and signature are kept for the next requests.
    """

    def __init__(
        self, context_tokens: int = 64, shingle: int = 3, bands: int = 16, rows: int = 4, seed: int = 0,
        remembered: int = 1024,
    ) -> None:  # fmt: skip
        if context_tokens < 1 or shingle < 1 or bands < 1 or rows < 1:
            raise ValueError("context_tokens, shingle, bands and rows must be >= 1")
        self.context_tokens, self.shingle, self.bands, self.rows = context_tokens, shingle, bands, rows
        self._hasher = MinHasher(bands, rows, seed)
        # Bytes before the current line that are tokenised: enough for `context_tokens` tokens in any
        # realistic code, while a 100 KB prefix costs no more than a short one. A shorter tail is tried
        # first: it gives the same last tokens whenever it holds enough of them.
        self._tail_bytes = max(4096, 64 * context_tokens)
        self._short_tail = 8 * context_tokens
        # The shingles and signature of recent contexts before the current line, by the bytes they depend on:
        # typing along a line leaves them unchanged, so most requests of an editing session reuse them.
        self._recent: OrderedDict[tuple[bool, bytes], tuple[frozenset[bytes], np.ndarray]] = OrderedDict()
        self._remembered = remembered

    def _context_tokens(self, prefix: bytes) -> tuple[bytes, list[bytes]]:
        """The current line and the last `context_tokens` tokens before it.

        A tail that starts after the file start may cut its first token in two, so that token is left out;
        every later token is whole and the same whatever the tail's length, hence a shorter tail holding
        `context_tokens` tokens after its first gives the same answer as a longer one.
        """
        cut = prefix.rfind(b"\n") + 1
        for tail in (self._short_tail, self._tail_bytes):
            start = max(0, cut - tail)
            tokens = code_tokens(prefix, start, cut)
            if start > 0 and tokens:
                tokens = tokens[1:]  # the tail may have cut the first token in two
            if start == 0 or len(tokens) >= self.context_tokens:
                break
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

    def sketch(self, language: str, prefix: bytes) -> Sketch:
        """The sketch of the context before the cursor at the end of `prefix`."""
        cut = prefix.rfind(b"\n") + 1
        start = max(0, cut - self._tail_bytes)
        before = (start == 0, prefix[start:cut])  # all that the shingles depend on
        known = self._recent.get(before)
        if known is None:
            shingles = self._shingles(self._context_tokens(prefix)[1])
            known = self._recent[before] = shingles, self._hasher.signature(shingles)
            if len(self._recent) > self._remembered:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(before)
        bucket = digest((language.encode(), prefix[cut:]))
        return Sketch(bucket, known[0], self._hasher.band_keys(known[1], salt=bucket))


@dataclass(slots=True)
class _Entry(Generic[V]):
    version: str
    sketch: Sketch
    value: V


class ApproximateCache(Generic[V]):
    """LSH cache under which near-identical completion contexts share an answer.

    The answer depends strongly on the current line, so the exact text of the line before the cursor,
    with the language, forms a bucket that a hit must match exactly, as must the model version. Within
    it, the last `context_tokens` tokens before the current line are compared as sets of `shingle`-token
    shingles: MinHash with `bands` x `rows` permutations finds candidates sharing a band, and the best
    candidate by exact Jaccard similarity is returned if it reaches `threshold`. The band map is the
    cache's own rather than a datasketch MinHashLSH: its keys carry the bucket, so contexts typed on
    other lines never become candidates, and entries leave it on LRU eviction.

    `find` and `put` take what makes a context's `Sketch`, which a request makes once for all its models'
    caches (their sketchers must agree: pass one `sketcher` to all); `lookup` and `store` sketch a prefix.

    Args:
        threshold: Jaccard similarity a hit requires.
        max_entries: LRU bound on stored entries; 0 turns the cache off.
        sketcher: How contexts are sketched; by default one of the remaining arguments.
        context_tokens, shingle, bands, rows, seed: the default sketcher's (see `ContextSketcher`).

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
        sketcher: ContextSketcher | None = None,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self.sketcher = sketcher or ContextSketcher(context_tokens, shingle, bands, rows, seed)
        self.threshold = threshold
        self.max_entries = max_entries
        self.bands = self.sketcher.bands
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[int, _Entry[V]] = OrderedDict()
        self._bands: dict[bytes, set[int]] = {}
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def band_buckets(self) -> int:
        """Number of LSH band buckets currently referenced (bounded by len(self) * bands)."""
        return len(self._bands)

    def signature(self, prefix: bytes) -> tuple[int, ...]:
        """MinHash signature of the context before the current line (deterministic across processes)."""
        return self.sketcher.signature(prefix)

    def _best(self, version: str, sketch: Sketch) -> tuple[int, float] | None:
        """The candidate (id, exact Jaccard) of this model version most similar to `sketch`, among those
        sharing a band."""
        best: tuple[int, float] | None = None
        seen: set[int] = set()
        for band_key in sketch.band_keys:
            for entry_id in self._bands.get(band_key, ()):
                if entry_id in seen:
                    continue
                seen.add(entry_id)
                entry = self._entries[entry_id]
                if entry.version != version:
                    continue
                # Band keys carry the bucket, so every candidate is of the same line and language.
                sim = jaccard(sketch.shingles, entry.sketch.shingles)
                if best is None or sim > best[1]:
                    best = (entry_id, sim)
        return best

    def find(self, version: str, sketch: Callable[[], Sketch]) -> tuple[V, float] | None:
        """A value stored by this model version for a context similar enough to the one `sketch` makes (called
        only while the cache is on; a request passes one that sketches once for all its models), with its Jaccard
        similarity, or None."""
        if self.max_entries <= 0:
            self.misses += 1
            return None
        best = self._best(version, sketch())
        if best is None or best[1] < self.threshold:
            self.misses += 1
            return None
        entry_id, sim = best
        self._entries.move_to_end(entry_id)
        self.hits += 1
        return self._entries[entry_id].value, sim

    def put(self, version: str, sketch: Callable[[], Sketch], value: V) -> None:
        """Store `value` for the context `sketch` makes (as in `find`), replacing the value of an identical
        context if there is one."""
        if self.max_entries <= 0:
            return
        made = sketch()
        best = self._best(version, made)
        if best is not None and best[1] == 1.0:
            entry_id = best[0]
            self._entries[entry_id].value = value
            self._entries.move_to_end(entry_id)
            return
        entry_id = self._next_id
        self._next_id += 1
        self._entries[entry_id] = _Entry(version, made, value)
        for band_key in made.band_keys:
            self._bands.setdefault(band_key, set()).add(entry_id)
        while len(self._entries) > self.max_entries:
            self._evict(next(iter(self._entries)))

    def lookup(self, model_version: str, language: str, prefix: bytes) -> tuple[V, float] | None:
        """`find` for the context at the end of `prefix`."""
        return self.find(model_version, lambda: self.sketcher.sketch(language, prefix))

    def store(self, model_version: str, language: str, prefix: bytes, value: V) -> None:
        """`put` for the context at the end of `prefix`."""
        self.put(model_version, lambda: self.sketcher.sketch(language, prefix), value)

    def _evict(self, entry_id: int) -> None:
        entry = self._entries.pop(entry_id)
        for band_key in entry.sketch.band_keys:
            ids = self._bands[band_key]
            ids.discard(entry_id)
            if not ids:
                del self._bands[band_key]
