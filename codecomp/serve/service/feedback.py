"""Durable feedback and learned state, in SQLite: the editors' view / select / dismiss events, and the
weights the selection policy and the per-user correction learned from them (so they survive a restart).

One file, WAL journal (readers never block the writer). Every write is one transaction: an event and the
state rows it changed land together or not at all. Calls block: the service makes them off its event loop.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

EVENT_TYPES = ("view", "select", "dismiss")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received REAL NOT NULL,        -- unix time, seconds
    type TEXT NOT NULL CHECK (type IN ('view', 'select', 'dismiss')),
    completion_id TEXT NOT NULL,
    choice_index INTEGER,          -- NULL for an event about the whole list
    user TEXT NOT NULL,            -- '' when the completion is no longer remembered
    language TEXT NOT NULL,
    model TEXT NOT NULL,           -- the model whose candidate the choice was ('' unknown)
    text TEXT NOT NULL,            -- the choice's text ('' unknown)
    select_kind TEXT,              -- Tabby's: NULL (the whole choice) or 'line'
    view_id TEXT,                  -- Tabby's: the view the event belongs to
    elapsed REAL                   -- Tabby's: milliseconds from view to the event
);
CREATE INDEX IF NOT EXISTS events_by_user ON events (user, received);
CREATE TABLE IF NOT EXISTS selection_state (
    kind TEXT NOT NULL,            -- the policy's name (exp3, exp4) or 'correction'
    user TEXT NOT NULL,            -- '' for the population's state, every new user's prior
    language TEXT NOT NULL,
    weights TEXT NOT NULL,         -- JSON: name -> weight
    updated REAL NOT NULL,
    PRIMARY KEY (kind, user, language)
);
"""
# Columns added since the first schema: a store written by an older server gains them on open.
_ADDED_COLUMNS = {"select_kind": "TEXT", "view_id": "TEXT", "elapsed": "REAL"}


@dataclasses.dataclass(frozen=True)
class Event:
    type: str
    completion_id: str
    choice_index: int | None
    user: str = ""
    language: str = ""
    model: str = ""
    text: str = ""
    select_kind: str | None = None
    view_id: str | None = None
    elapsed: float | None = None


StateRow = tuple[tuple[str, str, str], dict[str, float]]  # ((kind, user, language), weights)


class FeedbackStore:
    """Events and learned state in one SQLite file; survives restarts."""

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
            present = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
            for column, kind in _ADDED_COLUMNS.items():
                if column not in present:
                    self._db.execute(f"ALTER TABLE events ADD COLUMN {column} {kind}")

    def write(self, event: Event | None = None, states: Iterable[StateRow] = ()) -> int:
        """Store an event (if any) and the state rows it changed, in one transaction; returns the event's row id."""
        row = 0
        now = time.time()
        with self._lock, self._db:
            if event is not None:
                fields = dataclasses.astuple(event)
                cursor = self._db.execute(
                    "INSERT INTO events (received, type, completion_id, choice_index, user, language, model, text,"
                    " select_kind, view_id, elapsed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (now, *fields),
                )
                row = int(cursor.lastrowid or 0)
            self._db.executemany(
                "INSERT INTO selection_state (kind, user, language, weights, updated) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (kind, user, language) DO UPDATE SET weights = excluded.weights,"
                " updated = excluded.updated",
                [(*key, json.dumps(weights), now) for key, weights in states],
            )
        return row

    def add(self, event: Event) -> int:
        """Store one event; returns its row id."""
        return self.write(event)

    def events(self, user: str | None = None) -> list[Event]:
        query = (
            "SELECT type, completion_id, choice_index, user, language, model, text, select_kind, view_id, elapsed"
            " FROM events"
        )
        with self._lock:
            rows = self._db.execute(query + " WHERE user = ? ORDER BY id" if user else query + " ORDER BY id",
                                    (user,) if user else ()).fetchall()  # fmt: skip
        return [Event(*row) for row in rows]

    def states(self) -> dict[tuple[str, str, str], dict[str, float]]:
        """Every learned state row."""
        with self._lock:
            rows = self._db.execute("SELECT kind, user, language, weights FROM selection_state").fetchall()
        return {(kind, user, language): json.loads(weights) for kind, user, language, weights in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
