"""One completion in flight per document: a short debounce, and a newer request cancels an older one.

Typing fast sends a request per keystroke; each waits `debounce_s` first, and a newer request for the
same key (kind of request, document) cancels the older one wherever it is (waiting, or in its HTTP
call), so a burst of keystrokes costs the server one request. The client's `$/cancelRequest` cancels the
handler's task, and with it the work it awaits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

T = TypeVar("T")


class Superseded(Exception):
    """A newer request for the same document replaced this one (it answers with an empty list)."""


class LatestOnly:
    """Runs `work` for a key after `debounce_s`, cancelling the older work of that key still running."""

    def __init__(self, debounce_s: float) -> None:
        self.debounce_s = debounce_s
        self._running: dict[Hashable, asyncio.Task[object]] = {}
        self.superseded = 0

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> T:
        """The result of `work()`; raises `Superseded` if a newer `run` for `key` came first.

        If the caller itself is cancelled (`$/cancelRequest`), the work is cancelled with it and
        `CancelledError` propagates.
        """
        older = self._running.get(key)
        if older is not None:
            older.cancel()
        task: asyncio.Task[T] = asyncio.ensure_future(self._debounced(work))
        self._running[key] = task  # type: ignore[assignment]
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():  # cancelled from outside: pass it on
                raise
            self.superseded += 1
            raise Superseded from None
        finally:
            if self._running.get(key) is task:
                del self._running[key]

    async def _debounced(self, work: Callable[[], Awaitable[T]]) -> T:
        if self.debounce_s > 0:
            await asyncio.sleep(self.debounce_s)
        return await work()

    def cancel_all(self) -> None:
        for task in self._running.values():
            task.cancel()
