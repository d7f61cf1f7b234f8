"""Prediction caches of the serving layer (Clipper-style): an exact cache and an approximate (LSH) cache.

`PredictionCache` is an LRU cache bounded in bytes, keyed by `context_key`, that also de-duplicates
identical requests in flight. `ApproximateCache` lets near-identical contexts share an answer: the
exact text of the current line (plus model version and language) selects a bucket, and within it
MinHash/LSH over shingles of the preceding tokens finds candidates whose exact Jaccard similarity is
then checked against a threshold.

Both caches are meant for one asyncio event loop; they are not thread-safe.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar, cast

import numpy as np

logger = logging.getLogger(__name__)

V = TypeVar("V")

Outcome = Literal["hit", "shared", "miss"]

_MISSING = object()


def _digest(parts: Iterable[bytes], size: int = 16) -> bytes:
    """blake2b over `parts`, each prefixed with its length so that no two part lists collide."""
    h = hashlib.blake2b(digest_size=size)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()


def context_key(model_version: str, language: str, prefix: bytes, suffix: bytes, options: bytes = b"") -> bytes:
    """The exact cache key of a completion request (16-byte blake2b digest).

    Args:
        model_version: Identifies the model weights; a new version must never see old answers.
        language: Language of the document (e.g. "cpp", "javascript").
        prefix: Document bytes before the cursor.
        suffix: Document bytes after the cursor.
        options: Serialized request options that change the answer (e.g. number of candidates).

    Returns:
        The digest, unambiguous over the parts: ("ab", "c") and ("a", "bc") give different keys.
    """
    return _digest((model_version.encode(), language.encode(), prefix, suffix, options))


def _always(_: object) -> bool:
    return True


@dataclass(slots=True)
class _Flight(Generic[V]):
    """A computation in flight and how many callers are waiting for it."""

    task: asyncio.Task[V]
    waiters: int = 0


class PredictionCache(Generic[V]):
    """Exact LRU cache bounded in bytes, with de-duplication of identical requests in flight.

    Args:
        max_bytes: Bound on the summed sizes of the stored entries; 0 turns the cache off (nothing is
            stored or found, and requests in flight are not shared either: "caches off" for benchmarks).

    Attributes:
        hits: Lookups answered from the cache.
        misses: Lookups that found nothing (and, in `get_or_compute`, computed the value).
        shared: `get_or_compute` calls that joined an identical computation already in flight.
        evictions: Entries removed to make room.
        nbytes: Current summed size of the stored entries.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.shared = 0
        self.evictions = 0
        self.nbytes = 0
        self._entries: OrderedDict[bytes, tuple[V, int]] = OrderedDict()
        self._inflight: dict[bytes, _Flight[V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def _lookup(self, key: bytes) -> object:
        """The stored value (marked most recently used) or `_MISSING`; counts nothing."""
        entry = self._entries.get(key)
        if entry is None:
            return _MISSING
        self._entries.move_to_end(key)
        return entry[0]

    def get(self, key: bytes) -> V | None:
        """The value stored under `key`, or None; counts a hit or a miss."""
        found = self._lookup(key)
        if found is _MISSING:
            self.misses += 1
            return None
        self.hits += 1
        return cast(V, found)

    def put(self, key: bytes, value: V, nbytes: int) -> None:
        """Store `value` under `key`, evicting least recently used entries until it fits.

        Args:
            key: The cache key (see `context_key`).
            value: The value to store.
            nbytes: The entry's size as the caller accounts it. An entry larger than `max_bytes` is not
                stored (and any older value under the same key is dropped, as it is stale).
        """
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= old[1]
        if self.max_bytes <= 0:
            return
        if nbytes > self.max_bytes:
            logger.debug("not caching an entry of %d bytes (max_bytes=%d)", nbytes, self.max_bytes)
            return
        while self.nbytes + nbytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.nbytes -= evicted
            self.evictions += 1
        self._entries[key] = (value, nbytes)
        self.nbytes += nbytes

    async def get_or_compute(
        self,
        key: bytes,
        compute: Callable[[], Awaitable[V]],
        nbytes: Callable[[V], int],
        cacheable: Callable[[V], bool] = _always,
    ) -> tuple[V, Outcome]:
        """The value under `key`, computing it (once for all concurrent callers) if needed.

        The computation runs in its own task so that a caller's cancellation does not cancel it while
        other callers still wait for it; once every waiting caller has been cancelled it is cancelled
        too, since nobody wants the answer.

        Args:
            key: The cache key (see `context_key`).
            compute: Produces the value on a miss.
            nbytes: Size of a computed value, for the byte bound.
            cacheable: Whether a computed value may be stored (False for degraded or partial answers);
                callers sharing the computation receive the value either way.

        Returns:
            The value and how it was obtained: "hit" (stored), "shared" (joined an identical
            computation in flight) or "miss" (computed for this call).

        Raises:
            Exception: Whatever `compute` raised, delivered to every caller sharing the computation;
                nothing is stored then.
        """
        if self.max_bytes <= 0:
            self.misses += 1
            return await compute(), "miss"
        found = self._lookup(key)
        if found is not _MISSING:
            self.hits += 1
            return cast(V, found), "hit"
        outcome: Outcome
        flight = self._inflight.get(key)
        if flight is not None:
            self.shared += 1
            outcome = "shared"
        else:
            self.misses += 1
            outcome = "miss"
            flight = self._start(key, compute, nbytes, cacheable)
        return await self._join(key, flight), outcome

    def _start(
        self,
        key: bytes,
        compute: Callable[[], Awaitable[V]],
        nbytes: Callable[[V], int],
        cacheable: Callable[[V], bool],
    ) -> _Flight[V]:
        async def compute_and_store() -> V:
            value = await compute()
            if cacheable(value):
                self.put(key, value, nbytes(value))
            return value

        flight = _Flight(asyncio.get_running_loop().create_task(compute_and_store()))
        self._inflight[key] = flight

        def finish(task: asyncio.Task[V]) -> None:
            # A done callback rather than a `finally` in the task: it also runs when the task is
            # cancelled before it ever started.
            if self._inflight.get(key) is flight:
                del self._inflight[key]
            if not task.cancelled() and task.exception() is not None:
                # Retrieving the exception here keeps asyncio from logging it when no caller is left.
                logger.debug("computation for key %s failed: %r", key.hex(), task.exception())

        flight.task.add_done_callback(finish)
        return flight

    async def _join(self, key: bytes, flight: _Flight[V]) -> V:
        flight.waiters += 1
        try:
            # Shielded: cancelling this caller must not cancel the computation other callers await.
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # Every caller was cancelled. Forget the flight first, so that a new identical request
                # starts afresh instead of joining a computation that is about to be cancelled.
                if self._inflight.get(key) is flight:
                    del self._inflight[key]
                flight.task.cancel()


# Identifiers and numbers are one token each; any other non-space byte is a token by itself.
_TOKEN = re.compile(rb"[A-Za-z0-9_$]+|\S")
_EMPTY = (1 << 64) - 1  # the signature of a context with no shingles


def tokenize(data: bytes, start: int = 0, end: int | None = None) -> list[bytes]:
    """Tokens of `data[start:end]` (without copying it): identifiers/numbers, or single non-space bytes."""
    return _TOKEN.findall(data, start, len(data) if end is None else end)


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    """Jaccard similarity of two sets; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


@dataclass(slots=True)
class _Features:
    bucket: bytes
    shingles: frozenset[int]
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
    candidate by exact Jaccard similarity is returned if it reaches `threshold`.

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
        rng = random.Random(seed)
        # Permutations x -> a * x + b (mod 2**64) with odd a: bijections of the 64-bit shingle hashes,
        # applied to all shingles at once in numpy (wrapping uint64 arithmetic).
        self._mult = np.array([rng.randrange(1 << 64) | 1 for _ in range(bands * rows)], dtype=np.uint64)
        self._add = np.array([rng.randrange(1 << 64) for _ in range(bands * rows)], dtype=np.uint64)
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
        tokens = tokenize(prefix, start, cut)
        if start > 0 and tokens:
            tokens = tokens[1:]  # the tail may have cut the first token in two
        return prefix[cut:], tokens[-self.context_tokens :]

    def _shingles(self, tokens: list[bytes]) -> frozenset[int]:
        if not tokens:
            return frozenset()
        k = min(self.shingle, len(tokens))
        # Tokens never contain a space, so joining with one is unambiguous.
        return frozenset(
            int.from_bytes(hashlib.blake2b(b" ".join(tokens[i : i + k]), digest_size=8).digest(), "little")
            for i in range(len(tokens) - k + 1)
        )

    def _signature(self, shingles: frozenset[int]) -> tuple[int, ...]:
        if not shingles:
            return (_EMPTY,) * len(self._mult)
        x = np.fromiter(shingles, dtype=np.uint64, count=len(shingles))
        return tuple((self._mult[:, None] * x[None, :] + self._add[:, None]).min(axis=1).tolist())

    def signature(self, prefix: bytes) -> tuple[int, ...]:
        """MinHash signature of the context before the current line (deterministic across processes)."""
        return self._signature(self._shingles(self._context_tokens(prefix)[1]))

    def _features(self, model_version: str, language: str, prefix: bytes) -> _Features:
        _, start = self._bounds(prefix)
        memo_key = (model_version, language, start > 0, prefix[start:])
        if self._memo is not None and self._memo[0] == memo_key:
            return self._memo[1]
        line, tokens = self._context_tokens(prefix)
        bucket = _digest((model_version.encode(), language.encode(), line))
        shingles = self._shingles(tokens)
        sig = self._signature(shingles)
        band_keys = tuple(
            _digest((bucket, band.to_bytes(4, "little"), *(v.to_bytes(8, "little") for v in sig[lo : lo + self.rows])))
            for band, lo in enumerate(range(0, len(sig), self.rows))
        )
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
                entry = self._entries[entry_id]
                if entry.features.bucket != features.bucket:  # guards against a digest collision
                    continue
                sim = jaccard(features.shingles, entry.features.shingles)
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


Candidates = list[tuple[bytes, float, bool]]  # (text to insert, log-probability, complete), as on the wire


class TypedThroughCache:
    """Per editing session, the last answer: a keystroke that types the next characters of a candidate
    is answered with the rest of that candidate, as an editor keeps showing ghost text typed through.

    Args:
        sessions: sessions remembered (LRU); 0 turns it off.
        max_typed: at most this many bytes typed since the answer (never a newline).
    """

    def __init__(self, sessions: int = 10_000, max_typed: int = 8) -> None:
        self.sessions, self.max_typed = sessions, max_typed
        self._last: OrderedDict[tuple[str, str], tuple[int, bytes, bytes, Candidates]] = OrderedDict()
        self.hits = self.misses = 0

    def lookup(self, session: str, model: str, prefix: bytes, suffix: bytes) -> Candidates | None:
        """The candidates left after what was typed since the session's last answer, or None."""
        entry = self._last.get((session, model))
        found = None
        if entry is not None:
            length, prefix_digest, suffix_digest, candidates = entry
            typed = prefix[length:]
            if (
                0 < len(typed) <= self.max_typed
                and b"\n" not in typed
                and _digest((prefix[:length],)) == prefix_digest
                and _digest((suffix,)) == suffix_digest
            ):
                rest = [(text[len(typed) :], p, done) for text, p, done in candidates if text.startswith(typed)]
                found = [c for c in rest if c[0]] or None
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def store(self, session: str, model: str, prefix: bytes, suffix: bytes, candidates: Candidates) -> None:
        if self.sessions == 0:
            return
        self._last[(session, model)] = (len(prefix), _digest((prefix,)), _digest((suffix,)), candidates)
        self._last.move_to_end((session, model))
        while len(self._last) > self.sessions:
            self._last.popitem(last=False)
