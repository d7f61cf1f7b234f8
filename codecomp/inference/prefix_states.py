"""A per-session cache of a line model's states at recent prefixes, so one more keystroke costs one
more byte of reading, not the whole prefix."""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

from codecomp.text.digest import digest

State = TypeVar("State")


class PrefixStateCache(Generic[State]):
    """Model states of recent prefixes per session.

    For each session (user, file, language) the states read at the last `per_session` prefixes are
    kept, each with a digest of its prefix (not the prefix: files can be large); a new prefix resumes
    from the longest of them that it still starts with (typing goes on from the newest, a deletion
    from an older one). The least recently used session goes first when there are over `sessions`.
    """

    def __init__(self, sessions: int = 1024, per_session: int = 8) -> None:
        if sessions < 1 or per_session < 1:
            raise ValueError("sessions and per_session must be positive")
        self.sessions, self.per_session = sessions, per_session
        self._entries: collections.OrderedDict[str, dict[int, tuple[bytes, State]]] = collections.OrderedDict()
        self.hits = self.misses = 0

    def lookup(self, session: str, prefix: bytes, max_gap: int) -> tuple[State, bytes] | None:
        """The state of the longest cached prefix of `prefix` within `max_gap` bytes, and the rest to read."""
        states = self._entries.get(session)
        if states is not None:
            self._entries.move_to_end(session)
            for length in sorted(states, reverse=True):
                if len(prefix) - length > max_gap:
                    break
                stored, state = states[length]
                if length <= len(prefix) and digest((prefix[:length],)) == stored:
                    self.hits += 1
                    return state, prefix[length:]
        self.misses += 1
        return None

    def store(self, session: str, prefix: bytes, state: State) -> None:
        """Keep `state` as the state after reading `prefix` in `session`."""
        states = self._entries.pop(session, {})
        states.pop(len(prefix), None)
        states[len(prefix)] = (digest((prefix,)), state)  # dicts keep insertion order: newest last
        for length in list(states)[: -self.per_session]:
            del states[length]
        self._entries[session] = states
        while len(self._entries) > self.sessions:
            self._entries.popitem(last=False)
