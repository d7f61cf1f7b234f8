"""Learning from feedback: what each recent completion showed, and what the user's events say about it.

Semantics (Tabby's events, plus the one an editor never sends):
- `select` (also Tabby's partial `select_kind: line`): the choice was taken;
- `dismiss`: none of the choices was taken;
- `view`: the list was shown (with a `choice_index`: that choice, as an inline client shows one; a rejection
  then counts against the choices viewed, not the whole list); a viewed completion that the next request
  of the same session supersedes without a `select` counts as not taken;
each completion teaches the selection policy (and the per-user correction) at most once, at its first
`select` or rejection. Events for completions no longer remembered teach nothing (they are still stored).

Learning from typing (`from_typing`, full information): the session's next requests show what the user typed
after a completion's cursor (a later prefix that continues this one); once that decides every candidate of
every model (`typed.py`), the completion teaches once more: the policy, every answering model (not only the
ones shown), and the correction (the population's weights and the user's offsets), every candidate labelled.
The events then teach only the user's correction offsets (what this user takes, a habit the typed text does
not show), so the population does not learn twice from one request; in the feedback replay the policies
learn better so (exp4 alone: 32.1% accepted against 29.6% with the events as well, tuning part). A request
that does not continue the prefix (an edit elsewhere) leaves the older completions unjudged. The session's
next requests must reach the frontend that served it (session affinity) for this to happen.

A learner either applies what it learns at once (one frontend, SQLite) or, `deferred`, keeps each update as a
`Lesson` for the caller to send to a shared store, which applies every frontend's lessons in one order
(`redis_store.py`) through `apply`.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence

from codecomp.serve.protocol import WireCandidate
from codecomp.serve.service.correction import Correction
from codecomp.serve.service.features import features
from codecomp.serve.service.selection import GLOBAL, Ranking, SelectionPolicy
from codecomp.serve.service.typed import verdict

StateKey = tuple[str, str, str]  # (kind: the policy's name or "correction", user, language)
_TAIL = 32  # bytes of a completion's prefix kept, to tell whether a later prefix continues it
_WAITING = 32  # completions per session waiting for what is typed to judge them (older ones are given up)
TYPED = "#typed"  # the lesson id of what was typed after a completion: its completion's id and this


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
    cursor: int = -1  # bytes of the prefix it completed (-1: unknown, not judged by what is typed)
    tail: bytes = b""  # the last bytes of that prefix

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
    typed: dict[str, int] | None = None  # learning from typing: each candidate's text -> characters taken


class FeedbackLearner:
    """Remembers the last `kept` completions and turns events into updates of the policy and correction.

    Every method returns the state keys it changed, for the caller to persist. `deferred`: updates are not
    applied but kept in `pending` (as `Lesson`s), and nothing is returned as changed. `from_typing`: learn
    from what is typed after each completion too (the module's docstring); as nearly every request teaches
    then, and no one waits for that learning to be durable, what it changed is handed out (applied: the keys
    to persist; deferred: the lessons) every `typed_batch` lessons, or with the next event's.
    """

    def __init__(self, policy: SelectionPolicy, correction: Correction | None, kept: int = 100_000,
                 deferred: bool = False, from_typing: bool = False, typed_batch: int = 32) -> None:  # fmt: skip
        self.policy, self.correction, self.kept, self.deferred = policy, correction, kept, deferred
        self.from_typing, self.typed_batch = from_typing, typed_batch
        self.pending: list[Lesson] = []
        self._typed: list[Lesson] = []  # deferred lessons from typing, not yet handed out
        self._dirty: dict[StateKey, None] = {}  # keys applied lessons from typing changed, not yet handed out
        self._unsaved = 0  # lessons from typing since the last hand-out
        self.recent: collections.OrderedDict[str, Shown] = collections.OrderedDict()
        self._last_of_session: dict[str, str] = {}
        self._waiting: dict[str, list[str]] = {}  # session -> completions not yet judged by what was typed
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
        rows = features(ranking, cache, prefix, suffix, candidates)
        order = self.correction.rerank(key, rows)
        return ranking.reordered(order), [rows[i] for i in order]

    def shown(self, completion_id: str, shown: Shown, prefix: bytes | None = None) -> list[StateKey]:
        """Remember a completion; its session's previous one, viewed and not taken, counts as rejected. With
        `prefix` (the document before the cursor) and `from_typing`, the session's earlier completions are
        judged by what was typed since, and this one waits for what comes next."""
        changed: list[StateKey] = []
        previous = self._last_of_session.get(shown.session)
        if previous is not None and (earlier := self.recent.get(previous)) is not None and earlier.viewed:
            changed = self._teach(previous, earlier, None)
        self._last_of_session[shown.session] = completion_id
        self.recent[completion_id] = shown
        if self.from_typing and prefix is not None:
            self._judge(shown.session, prefix)
            if self._unsaved >= self.typed_batch:
                changed += self._hand_out()
            shown.cursor, shown.tail = len(prefix), prefix[-_TAIL:]
            waiting = self._waiting.setdefault(shown.session, [])
            waiting.append(completion_id)
            del waiting[:-_WAITING]
        while len(self.recent) > self.kept:
            _, dropped = self.recent.popitem(last=False)
            if self._last_of_session.get(dropped.session) not in self.recent:
                self._last_of_session.pop(dropped.session, None)
                self._waiting.pop(dropped.session, None)
        return changed

    def _judge(self, session: str, prefix: bytes) -> None:
        """Judge the session's waiting completions by what `prefix` shows was typed after each; those it does not
        decide wait on; those it does not continue (an edit elsewhere) are given up."""
        waiting = []
        for completion_id in self._waiting.pop(session, []):
            shown = self.recent.get(completion_id)
            start = shown.cursor if shown is not None else -1
            if shown is None or len(prefix) < start or prefix[start - len(shown.tail) : start] != shown.tail:
                continue
            typed = prefix[start:].decode("utf-8", "ignore")
            offers = shown.ranking.offers.values()
            texts = {t for offer in offers for t in offer} or {c.text for c in shown.ranking.choices}
            verdicts = {text: verdict(text, typed) for text in texts}
            if any(v is None for v in verdicts.values()):
                waiting.append(completion_id)
                continue
            lesson = Lesson(completion_id + TYPED, shown.user, shown.language, shown.ranking, shown.features, None,
                            typed={t: v or 0 for t, v in verdicts.items()})  # fmt: skip
            if self.deferred:
                self._typed.append(lesson)
            else:
                self._dirty.update(dict.fromkeys(self.apply(lesson)))
            self._unsaved += 1
        if waiting:
            self._waiting[session] = waiting

    def _hand_out(self) -> list[StateKey]:
        """What learning from typing changed since the last call: the keys (applied) or lessons (deferred, into
        `pending`)."""
        changed, self._dirty, self._unsaved = list(self._dirty), {}, 0
        self.pending += self._typed
        self._typed = []
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
        changed = self._hand_out()  # written with the event
        lesson = Lesson(completion_id, shown.user, shown.language, shown.ranking, shown.features, accepted,
                        tuple(sorted(shown.seen)))  # fmt: skip
        if self.deferred:
            self.pending.append(lesson)
            return []
        return list(dict.fromkeys(changed + self.apply(lesson)))

    def take_pending(self) -> list[Lesson]:
        """The lessons kept since the last call (deferred mode), for the caller to send on."""
        pending, self.pending = self.pending, []
        return pending

    def apply(self, lesson: Lesson) -> list[StateKey]:
        """Update the policy and the correction from one lesson; returns the state keys changed."""
        self.updates += 1
        key = (lesson.user, lesson.language)
        changed: list[StateKey] = []
        if lesson.typed is not None:
            self.policy.learn_typed(key, lesson.ranking, lesson.typed)
        elif not self.from_typing:  # learning from typing: the policy learns from that alone
            self.policy.learn(key, lesson.ranking, lesson.accepted, lesson.seen)
        if self.policy.name != "fixed" and (lesson.typed is not None or not self.from_typing):
            changed += [(self.policy.name, lesson.user, lesson.language), (self.policy.name, GLOBAL, lesson.language)]
        if self.correction is not None and lesson.features is not None:
            if lesson.typed is not None:
                taken = [lesson.typed.get(choice.text, 0) > 0 for choice in lesson.ranking.choices]
                learned = self.correction.learn_typed(key, lesson.features, taken)
            else:
                learned = self.correction.learn(key, lesson.features, lesson.accepted, lesson.seen)
            changed += [("correction", user, language) for user, language in learned]
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
