"""Feedback for the server's selection layer: which lists were shown, accepted, or passed over.

- `view`: a list was returned to the editor (each choice of a classic list, which the editor shows
  whole; the first of an inline list, the one shown as ghost text);
- `select`: an item was accepted (its `codecomp.accept` command ran, or the client resolved it);
- `dismiss`: a list was superseded by a newer one for the same document (or the document closed)
  without an accept: each choice it showed.

Events go out in order through one queue, in the background: sending feedback never delays a completion.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Send = Callable[[str, str, int], Awaitable[bool]]  # (type, completion id, choice index) -> sent


@dataclass
class _Shown:
    completion_id: str
    indices: list[int]
    accepted: bool = False


@dataclass
class Feedback:
    """Tracks the list each (kind, document) shows and queues the events; `start` runs the sender.

    Args:
        send: posts one event (`CompletionClient.send_event`).
        max_queued: events waiting beyond this are dropped, oldest first (the server is away or slow).
    """

    send: Send
    max_queued: int = 1000
    _shown: dict[Hashable, _Shown] = field(default_factory=dict)
    _selected: set[tuple[str, int]] = field(default_factory=set)
    _queue: asyncio.Queue[tuple[str, str, int]] = field(default_factory=asyncio.Queue)
    _sender: asyncio.Task[None] | None = None
    dropped: int = 0

    def shown(self, key: Hashable, completion_id: str | None, indices: list[int]) -> None:
        """A new list (maybe empty: `completion_id` None) replaced the one `key` showed."""
        self._dismiss(key)
        if completion_id is not None and indices:
            self._shown[key] = _Shown(completion_id, indices)
            for index in indices:
                self._put("view", completion_id, index)

    def accepted(self, completion_id: str, index: int) -> None:
        """An item was accepted: `select`, once per (completion, choice)."""
        if (completion_id, index) in self._selected:
            return
        self._selected.add((completion_id, index))
        if len(self._selected) > 10 * self.max_queued:  # only recent accepts can repeat
            self._selected.clear()
        for shown in self._shown.values():
            if shown.completion_id == completion_id:
                shown.accepted = True
        self._put("select", completion_id, index)

    def closed(self, key: Hashable) -> None:
        """The document closed: its list, if not accepted, was passed over."""
        self._dismiss(key)

    def close_all(self) -> None:
        """The editor leaves: every list not accepted was passed over."""
        for key in list(self._shown):
            self._dismiss(key)

    def _dismiss(self, key: Hashable) -> None:
        previous = self._shown.pop(key, None)
        if previous is not None and not previous.accepted:
            for index in previous.indices:
                self._put("dismiss", previous.completion_id, index)

    def _put(self, kind: str, completion_id: str, index: int) -> None:
        if self._queue.qsize() >= self.max_queued:
            self._queue.get_nowait()
            self._queue.task_done()
            self.dropped += 1
        self._queue.put_nowait((kind, completion_id, index))

    def start(self) -> None:
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._drain())

    async def flush(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until the queued events are sent, then stop the sender."""
        if self._sender is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            log.info("%d feedback events not sent at exit", self._queue.qsize())
        self._sender.cancel()
        self._sender = None

    async def _drain(self) -> None:
        while True:
            kind, completion_id, index = await self._queue.get()
            try:
                await self.send(kind, completion_id, index)
            except Exception:  # a bug in sending must not stop feedback for the session
                log.exception("sending a %s event failed", kind)
            finally:
                self._queue.task_done()
