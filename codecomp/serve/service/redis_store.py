"""Selection and correction state shared by every frontend through one Redis.

No frontend ever writes weights. Each sends what it learned as a lesson (what a completion showed and the
user's answer) to one Redis stream; every frontend applies every lesson, its own included, in the stream's
order, to its own copy in memory: the same lessons in the same order give the same weights everywhere, and
concurrent updates cannot overwrite each other (the fixed-share step and the correction's SGD are applied
whole, never read-modified-written in Redis). Ranking reads the copy in memory (no Redis round trip on the
request path); the other frontends' lessons arrive through a blocking stream read, within milliseconds.

One Lua script stores an event and its lessons atomically, and marks each completion resolved (SET NX), so a
completion teaches once however many frontends its events reach. Completions are kept in Redis for a while
(`completion_ttl_s`) so an event reaching another frontend, or arriving after a restart, still counts.

Every `snapshot_every` lessons the weights are saved in Redis with the stream position they stand for (the
first frontend there writes it) and the lessons older than the previous snapshot are dropped: a frontend
starts from the newest snapshot and the lessons after it; one that fell behind what was dropped reloads.

Redis unreachable: completions go on from the weights in memory; events (with their lessons) go to a bounded
buffer in the local SQLite file before they are acknowledged, and are sent in order once Redis is back. Run
Redis with `appendonly yes` for its data to survive a restart of Redis itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from codecomp.serve.service.feedback import Event
from codecomp.serve.service.learning import FeedbackLearner, Lesson, Shown, StateKey
from codecomp.serve.service.selection import Choice, Ranking
from codecomp.serve.service.state_store import StoreConfig, StoreUnavailable

log = logging.getLogger(__name__)

# KEYS: events stream, lessons stream, event counter, lesson counter, then one resolved mark per lesson.
# ARGV: the event's JSON ('' for none), the marks' time to live (seconds), then the lessons' JSON.
# Lessons are numbered (n): a reader sees a gap when lessons it had not read were dropped.
_RECORD = """
local id = 0
if ARGV[1] ~= '' then
  id = redis.call('INCR', KEYS[3])
  redis.call('XADD', KEYS[1], '*', 'id', id, 'event', ARGV[1])
end
for i = 5, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[2]) then
    redis.call('XADD', KEYS[2], '*', 'n', redis.call('INCR', KEYS[4]), 'lesson', ARGV[i - 2])
  end
end
return id
"""
# KEYS: the snapshot hash, the lessons stream. ARGV: lessons applied, the stream id they end at, the weights.
# Only a newer snapshot replaces the one there; the lessons before the one it replaces are dropped.
_SNAPSHOT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'updates') or '0')
if tonumber(ARGV[1]) <= current then return 0 end
local previous = redis.call('HGET', KEYS[1], 'id')
redis.call('HSET', KEYS[1], 'updates', ARGV[1], 'id', ARGV[2], 'state', ARGV[3])
if previous then redis.call('XTRIM', KEYS[2], 'MINID', previous) end
return 1
"""
_RETRY_S = 0.5  # between attempts to reach Redis while it is down
_BLOCK_MS = 1000  # a stream read waits this long for new lessons
_REMEMBER_IN_FLIGHT = 1000  # completions being written at once; beyond, some are not shared (never waited on)


def shown_to_json(shown: Shown) -> str:
    r = shown.ranking
    return json.dumps({
        "user": shown.user, "language": shown.language, "session": shown.session, "features": shown.features,
        "choices": [[c.text, c.log_prob, c.model] for c in r.choices], "advice": r.advice, "scores": r.scores,
        "answered": r.answered, "sampled": list(r.sampled) if r.sampled else None, "offers": r.offers,
    })  # fmt: skip


def shown_from_json(text: str | bytes) -> Shown:
    d = json.loads(text)
    ranking = Ranking([Choice(*c) for c in d["choices"]], d["advice"], d["scores"], d["answered"],
                      tuple(d["sampled"]) if d["sampled"] else None, d.get("offers", {}))  # fmt: skip
    return Shown(d["user"], d["language"], d["session"], ranking, d["features"])


def lesson_to_json(lesson: Lesson) -> str:
    shown = Shown(lesson.user, lesson.language, "", lesson.ranking, lesson.features)
    return json.dumps({"id": lesson.completion_id, "shown": json.loads(shown_to_json(shown)),
                       "accepted": lesson.accepted, "seen": list(lesson.seen), "typed": lesson.typed})  # fmt: skip


def lesson_from_json(text: str | bytes) -> Lesson:
    d = json.loads(text)
    shown = shown_from_json(json.dumps(d["shown"]))
    return Lesson(d["id"], shown.user, shown.language, shown.ranking, shown.features, d["accepted"],
                  tuple(d.get("seen", ())), d.get("typed"))  # fmt: skip


class LocalBuffer:
    """Events and their lessons waiting for Redis, in order, durably (a table of the frontend's SQLite file)."""

    def __init__(self, path: str | Path, limit: int) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.limit = limit
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS redis_buffer (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                             " event TEXT NOT NULL, lessons TEXT NOT NULL)")  # fmt: skip
            self.size = self._db.execute("SELECT COUNT(*) FROM redis_buffer").fetchone()[0]

    def push(self, event: str, lessons: list[str]) -> None:
        with self._lock, self._db:
            if self.size >= self.limit:
                raise StoreUnavailable(f"Redis unreachable and {self.size} events buffered already")
            self._db.execute("INSERT INTO redis_buffer (event, lessons) VALUES (?, ?)", (event, json.dumps(lessons)))
            self.size += 1

    def oldest(self, n: int) -> list[tuple[int, str, list[str]]]:
        with self._lock:
            rows = self._db.execute("SELECT id, event, lessons FROM redis_buffer ORDER BY id LIMIT ?", (n,)).fetchall()
        return [(row_id, event, json.loads(lessons)) for row_id, event, lessons in rows]

    def drop(self, row_id: int) -> None:
        with self._lock, self._db:
            self.size -= self._db.execute("DELETE FROM redis_buffer WHERE id = ?", (row_id,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()


class RedisStateStore:
    """Events, lessons and recent completions in Redis; the weights in each frontend's memory."""

    backend = "redis"
    learner_deferred = True

    def __init__(self, config: StoreConfig, path: str) -> None:
        self.config = config
        p = config.prefix
        names = {"events": "events", "lessons": "lessons", "counter": "event_id", "lesson_counter": "lesson_id",
                 "snapshot": "snapshot"}  # fmt: skip
        self.keys = {what: f"{p}:{name}" for what, name in names.items()}
        self.buffer = LocalBuffer(path, config.buffer)
        self.learner: FeedbackLearner | None = None
        self.connected = False
        self.last_id = "0-0"  # of the last lesson applied
        self.seq = 0  # its number
        self._tasks: set[asyncio.Task[Any]] = set()
        self._redis: aioredis.Redis | None = None
        self._tail: aioredis.Redis | None = None

    def _client(self, timeout_s: float) -> aioredis.Redis:
        # No retries inside redis-py: an unreachable Redis is noticed at once, and the buffer takes over.
        return aioredis.Redis.from_url(self.config.redis_url, socket_timeout=timeout_s, socket_connect_timeout=0.5,
                                       retry=Retry(NoBackoff(), 0))  # fmt: skip

    def load(self, learner: FeedbackLearner) -> int:
        self.learner = learner
        return 0  # the lessons are applied by `start`, from Redis

    async def start(self, catch_up_s: float = 30.0) -> None:
        self._redis = self._client(timeout_s=2.0)
        self._tail = self._client(timeout_s=_BLOCK_MS / 1000 + 2.0)
        self._script = self._redis.register_script(_RECORD)
        self._save = self._redis.register_script(_SNAPSHOT)
        try:  # apply what is known before serving (a new frontend ranks as the others do)
            async with asyncio.timeout(catch_up_s):
                await self._load_snapshot()
                while await self._read(block_ms=None):
                    pass
            self.connected = True
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("Redis %s unreachable at start (%s): serving from what is in memory", self.config.redis_url,
                        error)  # fmt: skip
        task = asyncio.create_task(self._follow())
        self._tasks.add(task)
        log.info("selection state shared through Redis %s: %d lessons applied", self.config.redis_url,
                 self.learner.updates if self.learner else 0)  # fmt: skip

    async def _load_snapshot(self) -> None:
        """Start again from the newest snapshot (at start, or after falling behind what was dropped)."""
        assert self._tail is not None and self.learner is not None
        saved: Any = await self._tail.hgetall(self.keys["snapshot"])
        if not saved:
            return
        learner = self.learner
        learner.policy.state.clear()
        if learner.correction is not None:
            learner.correction.table.clear()
        learner.restore({(kind, user, language): weights for kind, user, language, weights in
                         json.loads(saved[b"state"])})  # fmt: skip
        learner.updates = self.seq = int(saved[b"updates"])
        self.last_id = saved[b"id"].decode()

    async def _read(self, block_ms: int | None) -> int:
        """Apply the next lessons of the stream; returns how many."""
        assert self._tail is not None and self.learner is not None
        found: Any = await self._tail.xread({self.keys["lessons"]: self.last_id}, count=500, block=block_ms)
        applied = 0
        snapshot = None
        for _, entries in found:
            for entry_id, fields in entries:
                n = int(fields[b"n"])
                if n > self.seq + 1:  # dropped before this frontend read them: start again from the snapshot
                    before = self.seq
                    await self._load_snapshot()
                    if self.seq > before:
                        log.warning("lessons %d to %d dropped unread: reloaded the snapshot", before + 1, n - 1)
                        return applied + 1  # read on from the snapshot
                    log.error("lessons %d to %d lost (no snapshot covers them)", before + 1, n - 1)
                if n <= self.seq:
                    log.warning("lesson numbers start again at %d: Redis restarted without its data", n)
                self.last_id, self.seq = entry_id.decode(), n
                try:
                    self.learner.apply(lesson_from_json(fields[b"lesson"]))
                    applied += 1
                except (KeyError, ValueError, TypeError, IndexError) as error:
                    log.warning("lesson %s skipped: %s", self.last_id, error)
                if n % self.config.snapshot_every == 0:
                    snapshot = (n, self.last_id, self._state_json())  # the weights right here
        if snapshot is not None:
            await self._save(keys=[self.keys["snapshot"], self.keys["lessons"]], args=list(snapshot))
        return applied

    def _state_json(self) -> str:
        learner = self.learner
        assert learner is not None
        kinds = [learner.policy.name] + (["correction"] if learner.correction is not None else [])
        tables = [learner.policy.state, learner.correction.table if learner.correction is not None else {}]
        return json.dumps([[kind, user, language, weights] for kind, table in zip(kinds, tables, strict=True)
                           for (user, language), weights in table.items()])  # fmt: skip

    async def _follow(self) -> None:
        """Apply every frontend's lessons as they come; while Redis is unreachable, retry, then send the buffer."""
        while True:
            try:
                if self.buffer.size:
                    await self._flush()
                await self._read(block_ms=_BLOCK_MS)
                if not self.connected:
                    log.warning("Redis %s reachable again", self.config.redis_url)
                self.connected = True
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as error:
                if self.connected:
                    log.warning("Redis %s unreachable (%s): events buffered locally", self.config.redis_url, error)
                self.connected = False
                await asyncio.sleep(_RETRY_S)

    async def _flush(self) -> None:
        """Send the buffered events, oldest first; each leaves the buffer once Redis has it."""
        while rows := await asyncio.to_thread(self.buffer.oldest, 100):
            for row_id, event, lessons in rows:
                await self._send(event, lessons)
                await asyncio.to_thread(self.buffer.drop, row_id)
        log.info("buffered events sent to Redis")

    async def _send(self, event: str, lessons: list[str]) -> int:
        marks = [f"{self.config.prefix}:resolved:{json.loads(lesson)['id']}" for lesson in lessons]
        keys = [self.keys["events"], self.keys["lessons"], self.keys["counter"], self.keys["lesson_counter"], *marks]
        return int(await self._script(keys=keys, args=[event, self.config.completion_ttl_s, *lessons]))

    def record(self, event: Event | None, changed: list[StateKey], lessons: list[Lesson]) -> Awaitable[int]:
        payload = json.dumps(dataclasses.asdict(event) | {"received": time.time()}) if event is not None else ""
        return self._record(payload, [lesson_to_json(lesson) for lesson in lessons])  # encoded now, as they are

    async def _record(self, payload: str, texts: list[str]) -> int:
        if not payload and not texts:
            return 0
        if self.connected and not self.buffer.size:  # in order: nothing may overtake what is buffered
            try:
                return await self._send(payload, texts)
            except (RedisError, OSError) as error:
                log.warning("Redis %s unreachable (%s): events buffered locally", self.config.redis_url, error)
                self.connected = False
        await asyncio.to_thread(self.buffer.push, payload, texts)  # durable before it is acknowledged
        return 0  # no id yet: Redis numbers it when the buffer is sent

    def remember(self, completion_id: str, shown: Shown) -> None:
        if self._redis is None or not self.connected or len(self._tasks) > _REMEMBER_IN_FLIGHT:
            return
        key = f"{self.config.prefix}:completion:{completion_id}"
        task = asyncio.ensure_future(self._redis.set(key, shown_to_json(shown), ex=self.config.completion_ttl_s))
        self._tasks.add(task)
        task.add_done_callback(_forget(self._tasks))

    async def recall(self, completion_id: str) -> Shown | None:
        if self._redis is None or not self.connected:
            return None
        try:
            text = await self._redis.get(f"{self.config.prefix}:completion:{completion_id}")
        except (RedisError, OSError):
            return None
        return shown_from_json(text) if text is not None else None

    async def events(self) -> list[Event]:
        """Every stored event, oldest first."""
        assert self._redis is not None
        entries: Any = await self._redis.xrange(self.keys["events"])
        fields = {f.name for f in dataclasses.fields(Event)}
        return [Event(**{k: v for k, v in json.loads(e[b"event"]).items() if k in fields}) for _, e in entries]

    def health(self) -> tuple[bool, int]:
        return not self.connected, self.buffer.size

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tail is not None:  # a stream read blocked in Redis may not notice the cancel: end it here
            await self._tail.connection_pool.disconnect()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2 * _BLOCK_MS / 1000)
        for client in (self._redis, self._tail):
            if client is not None:
                await client.aclose()
        self.buffer.close()


def _forget(tasks: set[asyncio.Task[Any]]) -> Any:
    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("completion not shared: %s", task.exception())

    return done
