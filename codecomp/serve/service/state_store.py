"""Where feedback events and the selection layer's learned state live: one small interface, two backends.

- `sqlite` (the default, embedded): one frontend; it applies what it learns at once and writes the event
  with the state rows it changed in one transaction (`feedback.py`).
- `redis`: several frontends share one Redis (`redis_store.py`); each sends the updates it learns as lessons,
  every frontend applies all of them in the order Redis gives them, and ranks from its own copy in memory.

The service calls `record` before acknowledging an event: what it returns is durable.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable
from typing import Protocol

from codecomp.serve.service.feedback import Event, FeedbackStore
from codecomp.serve.service.learning import FeedbackLearner, Lesson, Shown, StateKey


class StoreUnavailable(RuntimeError):
    """The store cannot take the event now (shared store down and the local buffer full): answer 503."""


@dataclasses.dataclass
class StoreConfig:
    """conf/serve.yaml's `store`; the SQLite file is the top-level `store_path` (with Redis: the local buffer)."""

    backend: str = "sqlite"  # sqlite (one frontend) or redis (state shared by every frontend on it)
    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "codecomp"  # of every Redis key, so several deployments can share one Redis
    buffer: int = 10_000  # events kept locally (durably, in the SQLite file) while Redis is unreachable
    completion_ttl_s: int = 3600  # how long other frontends can resolve a completion's events
    snapshot_every: int = 1000  # lessons between two snapshots of the weights in Redis (older lessons are dropped)


class StateStore(Protocol):
    backend: str
    learner_deferred: bool  # the learner keeps its updates as lessons for `record`, rather than applying them

    def load(self, learner: FeedbackLearner) -> int:
        """Bind the learner this store feeds, and restore what is already known; returns the states loaded."""
        ...

    async def start(self) -> None:
        """Connect (and catch up) before serving."""
        ...

    def remember(self, completion_id: str, shown: Shown) -> None:
        """A completion was served (feedback events about it may reach any frontend): not awaited."""
        ...

    async def recall(self, completion_id: str) -> Shown | None:
        """A completion another frontend served, or None."""
        ...

    def record(self, event: Event | None, changed: list[StateKey], lessons: list[Lesson]) -> Awaitable[int]:
        """Store an event (if any) and what it taught, durably; the awaitable gives the event's id (0 for none, or
        not numbered yet). What to write is taken when called (the weights may change before it runs).

        Raises:
            StoreUnavailable: it cannot be kept now.
        """
        ...

    def health(self) -> tuple[bool, int]:
        """Whether the store is degraded (shared store unreachable), and how many events wait locally."""
        ...

    async def close(self) -> None: ...


class SqliteStateStore:
    """One frontend's events and state in one SQLite file (written off the event loop)."""

    backend = "sqlite"
    learner_deferred = False

    def __init__(self, path: str) -> None:
        self.store = FeedbackStore(path)
        self.learner: FeedbackLearner | None = None

    def load(self, learner: FeedbackLearner) -> int:
        self.learner = learner
        return learner.restore(self.store.states())

    async def start(self) -> None:
        pass

    def remember(self, completion_id: str, shown: Shown) -> None:
        pass  # one frontend: its learner remembers it

    async def recall(self, completion_id: str) -> Shown | None:
        return None

    def record(self, event: Event | None, changed: list[StateKey], lessons: list[Lesson]) -> Awaitable[int]:
        assert self.learner is not None and not lessons  # applied by the learner already
        rows = [(key, self.learner.state(key)) for key in dict.fromkeys(changed)]
        return asyncio.to_thread(self.store.write, event, rows)  # a disk write, off the event loop

    def health(self) -> tuple[bool, int]:
        return False, 0

    async def close(self) -> None:
        self.store.close()


def make_store(config: StoreConfig, path: str) -> StateStore:
    """The backend `config.backend` names; `path` is the SQLite file (the local buffer for Redis)."""
    if config.backend == "sqlite":
        return SqliteStateStore(path)
    if config.backend == "redis":
        from codecomp.serve.service.redis_store import RedisStateStore  # redis-py only where it is used

        return RedisStateStore(config, path)
    raise ValueError(f"unknown store backend {config.backend!r}; use sqlite or redis")
