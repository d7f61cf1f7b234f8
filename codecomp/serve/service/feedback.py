"""Durable feedback: the editor's view / select / dismiss events, in SQLite, for the selection layer to learn from."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from pathlib import Path

EVENT_TYPES = ("view", "select", "dismiss")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received REAL NOT NULL,        -- unix time, seconds
    type TEXT NOT NULL CHECK (type IN ('view', 'select', 'dismiss')),
    completion_id TEXT NOT NULL,
    choice_index INTEGER NOT NULL,
    user TEXT NOT NULL,
    language TEXT NOT NULL,
    model TEXT NOT NULL,           -- the model whose candidate the choice was
    text TEXT NOT NULL             -- the choice's text
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user, received);
"""


@dataclasses.dataclass(frozen=True)
class Event:
    type: str
    completion_id: str
    choice_index: int
    user: str
    language: str
    model: str
    text: str


class FeedbackStore:
    """Appends events to a SQLite file (WAL: readers never block the writer); survives restarts."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def add(self, event: Event) -> int:
        """Store one event; returns its row id."""
        with self._lock, self._db:
            cursor = self._db.execute(
                "INSERT INTO events (received, type, completion_id, choice_index, user, language, model, text)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), *dataclasses.astuple(event)),
            )
        return int(cursor.lastrowid or 0)

    def events(self, user: str | None = None) -> list[Event]:
        query = "SELECT type, completion_id, choice_index, user, language, model, text FROM events"
        with self._lock:
            rows = self._db.execute(query + " WHERE user = ? ORDER BY id" if user else query + " ORDER BY id",
                                    (user,) if user else ()).fetchall()  # fmt: skip
        return [Event(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
