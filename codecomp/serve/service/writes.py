"""The selection state's writes in the background, off the event loop, at most one in flight.

A completion that teaches the selection layer something (a superseded view, what the session typed since the
last one) changes learned state, which the store keeps. Written once per request, as a disk transaction in a
thread, that cost more CPU than the rest of the request. A store that writes the current state of the keys it
is given (SQLite: `learner_deferred` false) needs only their latest state, so the keys changed while a write is
in flight are written together by the next one. A store that records lessons in order (Redis) gets every
request's lessons at once, in order, as before.
"""

from __future__ import annotations

import asyncio
import logging

from codecomp.serve.service.learning import Lesson, StateKey
from codecomp.serve.service.state_store import StateStore

log = logging.getLogger(__name__)


class StateWriter:
    """Writes what completions taught to `store`, in the background."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._writes: set[asyncio.Future[int]] = set()  # in flight
        self._waiting: dict[StateKey, None] = {}  # keys changed since the write in flight began (ordered, once each)
        self.written = 0  # writes started (tests and benchmarks read it)

    def submit(self, keys: list[StateKey], lessons: list[Lesson]) -> None:
        """Write the state of `keys` and the `lessons` soon; returns at once."""
        if not keys and not lessons:
            return
        if lessons or self.store.learner_deferred:  # in order, each as it comes
            self._start(keys, lessons)
            return
        self._waiting.update(dict.fromkeys(keys))
        if not self._writes:
            self._start(list(self._waiting), [])
            self._waiting.clear()

    def _start(self, keys: list[StateKey], lessons: list[Lesson]) -> None:
        write = asyncio.ensure_future(self.store.record(None, keys, lessons))
        self.written += 1
        self._writes.add(write)
        write.add_done_callback(self._done)

    def _done(self, write: asyncio.Future[int]) -> None:
        self._writes.discard(write)
        if not write.cancelled() and write.exception() is not None:
            log.warning("writing the selection state failed: %s", write.exception())
        if self._waiting and not self._writes:
            self._start(list(self._waiting), [])
            self._waiting.clear()

    async def drain(self) -> None:
        """Wait until everything submitted is written (before the store closes)."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
