"""Prediction caches of the serving layer (Clipper-style): the exact cache and the typed-through cache.

`PredictionCache` is an LRU cache bounded in bytes, keyed by `context_key`, that also de-duplicates
identical requests in flight. `TypedThroughCache` answers a keystroke that typed the start of one of
the session's last candidates. The approximate (LSH) cache is in `serve/approx_cache.py`.

The caches are meant for one asyncio event loop; they are not thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar, cast

from codecomp.serve.protocol import WireCandidate
from codecomp.text.digest import digest

logger = logging.getLogger(__name__)

V = TypeVar("V")

Outcome = Literal["hit", "shared", "miss"]

_MISSING = object()


def context_key(
    model_version: str, language: str, prefix_digest: bytes, suffix_digest: bytes, options: bytes = b""
) -> bytes:
    """The exact cache key of a completion request (16-byte blake2b digest).

    Args:
        model_version: Identifies the model weights; a new version must never see old answers.
        language: Language of the document (e.g. "cpp", "javascript").
        prefix_digest: `digest((prefix,))` of the document bytes before the cursor (hashed once per request).
        suffix_digest: `digest((suffix,))` of the document bytes after the cursor.
        options: Serialized request options that change the answer (e.g. number of candidates).

    Returns:
        The digest, unambiguous over the parts: ("ab", "c") and ("a", "bc") give different keys.
    """
    return digest((model_version.encode(), language.encode(), prefix_digest, suffix_digest, options))


def _always(_: object) -> bool:
    return True


@dataclass(slots=True)
class _Flight(Generic[V]):
    """A computation in flight and how many callers are waiting for it."""

    task: asyncio.Future[V]
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
        def store(future: asyncio.Future[V]) -> None:
            # A done callback rather than a `finally`: it also runs when the computation is cancelled before
            # it ever started.
            if self._inflight.get(key) is flight:
                del self._inflight[key]
            if future.cancelled():
                return
            if future.exception() is not None:
                # Retrieving the exception here keeps asyncio from logging it when no caller is left.
                logger.debug("computation for key %s failed: %r", key.hex(), future.exception())
            elif cacheable(value := future.result()):
                self.put(key, value, nbytes(value))

        computing = compute()
        # A future (a model queue's) is awaited as it is; any other awaitable runs in a task of its own.
        future = computing if isinstance(computing, asyncio.Future) else asyncio.ensure_future(computing)
        flight = _Flight(future)
        self._inflight[key] = flight
        future.add_done_callback(store)
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


Candidates = list[WireCandidate]


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

    def lookup(self, session: str, model: str, prefix: bytes, suffix_digest: bytes) -> Candidates | None:
        """The candidates left after what was typed since the session's last answer, or None.
        `suffix_digest` is `digest((suffix,))`; the prefix is hashed only when the rest of it could match."""
        entry = self._last.get((session, model))
        found = None
        if entry is not None:
            length, prefix_digest, stored_suffix, candidates = entry
            typed = prefix[length:]
            if (
                0 < len(typed) <= self.max_typed
                and b"\n" not in typed
                and digest((prefix[:length],)) == prefix_digest
                and suffix_digest == stored_suffix
            ):
                rest = [
                    WireCandidate(c.text[len(typed) :], c.log_prob, c.complete)
                    for c in candidates
                    if c.text.startswith(typed)
                ]
                found = [c for c in rest if c.text] or None
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def store(
        self,
        session: str,
        model: str,
        prefix_length: int,
        prefix_digest: bytes,
        suffix_digest: bytes,
        candidates: Candidates,
    ) -> None:
        """Remember the session's answer; the digests are `digest((prefix,))` and `digest((suffix,))`."""
        if self.sessions == 0:
            return
        self._last[(session, model)] = (prefix_length, prefix_digest, suffix_digest, candidates)
        self._last.move_to_end((session, model))
        while len(self._last) > self.sessions:
            self._last.popitem(last=False)
