"""Learning from feedback: what each recent completion showed, and what the user's events say about it.

Semantics (Tabby's events, plus the one an editor never sends):
- `select` (also Tabby's partial `select_kind: line`): the choice was taken;
- `dismiss`: none of the choices was taken;
- `view`: the list was shown (with a `choice_index`: that choice, as an inline client shows one; a rejection
  then counts against the choices viewed, not the whole list); a viewed completion that the next request
  of the same session supersedes without a `select` counts as not taken;
each completion teaches the selection policy (and the per-user correction) at most once, at its first
`select` or rejection. Events for completions no longer remembered teach nothing (they are still stored).

A learner either applies what it learns at once (one frontend, SQLite) or, `deferred`, keeps each update as a
`Lesson` for the caller to send to a shared store, which applies every frontend's lessons in one order
(`redis_store.py`) through `apply`.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence

from codecomp.serve.protocol import WireCandidate
from codecomp.serve.service.correction import Correction, features
from codecomp.serve.service.selection import GLOBAL, Ranking, SelectionPolicy

StateKey = tuple[str, str, str]  # (kind: the policy's name or "correction", user, language)


@dataclasses.dataclass
class Shown:
    """A completion as feedback events refer to it."""

    user: str
    language: str
    session: str
    ranking: Ranking
    features: list[dict[str, float]] | None  # per choice, when the correction re-ranked them
    viewed: bool = False
    seen: set[int] = dataclasses.field(default_factory=set)  # the choices a `view` named (none named: all)
    resolved: bool = False  # taught the policy already

    @property
    def key(self) -> tuple[str, str]:
        return self.user, self.language


@dataclasses.dataclass(frozen=True)
class Lesson:
    """One update of the policy and the correction: what a completion showed and the user's answer to it."""

    completion_id: str
    user: str
    language: str
    ranking: Ranking
    features: list[dict[str, float]] | None
    accepted: int | None  # the index of the choice taken, None when none was
    seen: tuple[int, ...] = ()  # the choices the user was shown, when the client said (none: all of them)


class FeedbackLearner:
    """Remembers the last `kept` completions and turns events into updates of the policy and correction.

    Every method returns the state keys it changed, for the caller to persist. `deferred`: updates are not
    applied but kept in `pending` (as `Lesson`s), and nothing is returned as changed.
    """

    def __init__(self, policy: SelectionPolicy, correction: Correction | None, kept: int = 100_000,
                 deferred: bool = False) -> None:  # fmt: skip
        self.policy, self.correction, self.kept, self.deferred = policy, correction, kept, deferred
        self.pending: list[Lesson] = []
        self.recent: collections.OrderedDict[str, Shown] = collections.OrderedDict()
        self._last_of_session: dict[str, str] = {}
        self.updates = 0

    def rank(
        self,
        key: tuple[str, str],
        asked: Sequence[str],
        candidates: Mapping[str, Sequence[WireCandidate]],
        cache: Mapping[str, str],
        prefix: bytes,
        suffix: bytes,
    ) -> tuple[Ranking, list[dict[str, float]] | None]:
        """The policy's ranking, re-ranked for the user by the correction when it is on (with the features it
        used, which the correction learns from later)."""
        ranking = self.policy.rank(key, asked, candidates)
        if self.correction is None or not ranking.choices:
            return ranking, None
        rows = features(ranking, cache, prefix, suffix)
        order = self.correction.rerank(key, rows)
        return ranking.reordered(order), [rows[i] for i in order]

    def shown(self, completion_id: str, shown: Shown) -> list[StateKey]:
        """Remember a completion; its session's previous one, viewed and not taken, counts as rejected."""
        changed: list[StateKey] = []
        previous = self._last_of_session.get(shown.session)
        if previous is not None and (earlier := self.recent.get(previous)) is not None and earlier.viewed:
            changed = self._teach(previous, earlier, None)
        self._last_of_session[shown.session] = completion_id
        self.recent[completion_id] = shown
        while len(self.recent) > self.kept:
            _, dropped = self.recent.popitem(last=False)
            if self._last_of_session.get(dropped.session) not in self.recent:
                self._last_of_session.pop(dropped.session, None)
        return changed

    def adopt(self, completion_id: str, shown: Shown) -> None:
        """Remember a completion another frontend served (its events may reach this one)."""
        self.recent[completion_id] = shown
        while len(self.recent) > self.kept:
            self.recent.popitem(last=False)

    def event(self, kind: str, completion_id: str, choice_index: int | None) -> tuple[Shown | None, list[StateKey]]:
        """Apply one event; returns the completion it refers to (None if not remembered) and the keys changed."""
        shown = self.recent.get(completion_id)
        if shown is None:
            return None, []
        if kind == "view":
            shown.viewed = True
            if choice_index is not None and choice_index < len(shown.ranking.choices):
                shown.seen.add(choice_index)  # an inline client names the ghost text it showed
            return shown, []
        if kind == "select" and choice_index is not None and choice_index < len(shown.ranking.choices):
            return shown, self._teach(completion_id, shown, choice_index)
        if kind == "dismiss":
            return shown, self._teach(completion_id, shown, None)
        return shown, []

    def _teach(self, completion_id: str, shown: Shown, accepted: int | None) -> list[StateKey]:
        if shown.resolved or not shown.ranking.choices:
            return []
        shown.resolved = True
        lesson = Lesson(completion_id, shown.user, shown.language, shown.ranking, shown.features, accepted,
                        tuple(sorted(shown.seen)))  # fmt: skip
        if self.deferred:
            self.pending.append(lesson)
            return []
        return self.apply(lesson)

    def take_pending(self) -> list[Lesson]:
        """The lessons kept since the last call (deferred mode), for the caller to send on."""
        pending, self.pending = self.pending, []
        return pending

    def apply(self, lesson: Lesson) -> list[StateKey]:
        """Update the policy and the correction from one lesson; returns the state keys changed."""
        self.updates += 1
        key = (lesson.user, lesson.language)
        self.policy.learn(key, lesson.ranking, lesson.accepted, lesson.seen)
        changed: list[StateKey] = []
        if self.policy.name != "fixed":
            changed += [(self.policy.name, lesson.user, lesson.language), (self.policy.name, GLOBAL, lesson.language)]
        if self.correction is not None and lesson.features is not None:
            self.correction.learn(key, lesson.features, lesson.accepted, lesson.seen)
            changed += [("correction", lesson.user, lesson.language), ("correction", GLOBAL, lesson.language)]
        return changed

    def state(self, key: StateKey) -> dict[str, float]:
        """The current weights under a state key (a copy, for persisting)."""
        kind, user, language = key
        if kind == "correction":
            assert self.correction is not None
            return dict(self.correction.table.get((user, language), {}))
        return dict(self.policy.state.get((user, language), {}))

    def restore(self, states: dict[StateKey, dict[str, float]]) -> int:
        """Load persisted weights (those of another policy are ignored); returns how many were loaded."""
        loaded = 0
        for (kind, user, language), weights in states.items():
            if kind == "correction" and self.correction is not None:
                self.correction.table[(user, language)] = dict(weights)
            elif kind == self.policy.name:
                self.policy.state[(user, language)] = dict(weights)
            else:
                continue
            loaded += 1
        return loaded
