"""One completion request end to end: caches, every model of the language in parallel, the deadline, the merge.

Each model is asked through its exact cache (with in-flight de-duplication) and its approximate
cache; at the deadline the answer is built from what has arrived, and says which models answered.
A model still computing at the deadline is not cancelled: its answer still fills the cache.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

from prometheus_client import Counter

from codecomp.serve.dispatch.batching import DeadlineExpired, QueueFull
from codecomp.serve.dispatch.dispatcher import ModelAnswer, ModelEndpoint, Query
from codecomp.serve.dispatch.metrics import Metrics
from codecomp.serve.service.approx_cache import ApproximateCache, ContextSketcher, Sketch
from codecomp.serve.service.arrival import arrival_time
from codecomp.serve.service.cache import PredictionCache, TypedThroughCache, context_key
from codecomp.serve.service.correction import make_correction
from codecomp.serve.service.feedback import Event
from codecomp.serve.service.learning import FeedbackLearner, Shown, StateKey
from codecomp.serve.service.overlap import trim_candidates
from codecomp.serve.service.selection import GLOBAL, Choice, Ranking, SelectionConfig, make_policy
from codecomp.serve.service.state_store import StateStore
from codecomp.serve.service.writes import StateWriter
from codecomp.text.digest import digest

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """No model could take the request: the caller answers 503 with Retry-After."""


@dataclasses.dataclass(frozen=True)
class CompletionInput:
    language: str
    prefix: bytes
    suffix: bytes
    user: str = "anonymous"
    filepath: str = ""
    deadline_ms: float | None = None  # at most the objective
    client: str = ""  # set when no user is named: the connection's host and client program, to tell editors apart

    # Hashed once per request, however many models and caches look at them (files can be large).
    @functools.cached_property
    def prefix_digest(self) -> bytes:
        return digest((self.prefix,))

    @functools.cached_property
    def suffix_digest(self) -> bytes:
        return digest((self.suffix,))

    @functools.cached_property
    def session(self) -> str:
        """The editing session: a line model's prefix state and the feedback's supersede rule follow it.

        Editors that name no user are told apart by `client`, and documents without a path by their first
        line, so two of them do not share one session and evict each other's prefix state."""
        who = f"{self.user}@{self.client}" if self.client else self.user
        line_end = self.prefix.find(b"\n", 0, 256)
        head = self.prefix[:line_end] if line_end >= 0 else self.prefix[:256] if len(self.prefix) >= 256 else b""
        where = self.filepath or f"head:{digest((head,)).hex()[:16]}"  # the first line: stable while typing below it
        return f"{who}\0{where}\0{self.language}"


@dataclasses.dataclass(frozen=True)
class CompletionOutput:
    id: str
    choices: list[Choice]
    models: dict[str, str]  # model asked -> ok; late (computing at the deadline); expired (in the queue); shed; error
    cache: dict[str, str]  # model -> hit, shared, typed, approx, miss
    degraded: bool  # a model is missing, or an answer was cut short by the deadline
    light: bool  # some answer was computed with the smaller options of an overloaded queue
    latency_ms: float
    versions: dict[str, str] = dataclasses.field(default_factory=dict)  # model -> checkpoint version that answered


@dataclasses.dataclass  # not frozen: OmegaConf makes a frozen schema read-only, refusing the yaml
class ServiceConfig:
    objective_ms: float = 50.0  # end-to-end latency objective, the default deadline
    margin_ms: float = 10.0  # models stop this long before the deadline: half for RPC, half for the reply
    max_choices: int = 5
    cache_bytes: int = 64 << 20  # exact cache bound per model; 0 turns caches off
    approx_threshold: float = 0.9  # Jaccard similarity for the approximate cache
    approx_entries: int = 10_000  # 0 turns it off
    approx_audit: float = 0.0  # share of approximate and typed-through hits also computed, to count differing answers
    typed_sessions: int = 10_000  # sessions whose last answer is kept for typing through it (0: off)
    completions_kept: int = 100_000  # recent completions remembered for feedback events
    max_in_flight: int = 64  # requests in progress at once; more are shed with 503 at once
    selection: SelectionConfig = dataclasses.field(default_factory=SelectionConfig)


class CompletionService:
    def __init__(self, endpoints: dict[str, ModelEndpoint], languages: dict[str, list[str]], config: ServiceConfig,
                 metrics: Metrics, store: StateStore) -> None:  # fmt: skip
        """`languages` maps each language to the models that serve it, in the configured order; `store` keeps
        the feedback and what the selection layer learned from it (loaded here, so it survives restarts)."""
        self.endpoints, self.languages, self.config, self.metrics = endpoints, languages, config, metrics
        self.exact = {name: PredictionCache[ModelAnswer](config.cache_bytes) for name in endpoints}
        self.typed = TypedThroughCache(sessions=config.typed_sessions)
        self.sketcher = ContextSketcher()  # one for every model's approximate cache: a request sketches once
        self.approx = {
            name: ApproximateCache[ModelAnswer](config.approx_threshold, max_entries=config.approx_entries,
                                                sketcher=self.sketcher)
            for name in endpoints
        }  # fmt: skip
        selection = config.selection
        policy, correction = make_policy(selection, config.max_choices), make_correction(selection)
        self.learner = FeedbackLearner(policy, correction, config.completions_kept, deferred=store.learner_deferred,
                                       from_typing=selection.learn_from_typing)  # fmt: skip
        self.store = store
        restored = store.load(self.learner)
        log.info("selection: %s%s, %d learned states restored", selection.policy,
                 " with per-user correction" if correction else "", restored)  # fmt: skip
        self.writer = StateWriter(store)  # state writes in the background, off the event loop
        self.approx_audited = self.approx_differs = 0
        self._counters: dict[tuple[int, tuple[str, ...]], Counter] = {}
        self.in_flight = 0
        self._audits = 0.0

    async def complete(self, request: CompletionInput) -> CompletionOutput:
        """Shed at once (the cheapest answer under overload) only what cannot make its deadline, which
        counts from the request's arrival (`arrival.py`): the wait in front of the handler is on its clock."""
        arrived = arrival_time()
        budget_ms = min(self.config.objective_ms, request.deadline_ms or self.config.objective_ms)
        waited_ms = (time.monotonic() - arrived) * 1000
        if self.in_flight >= self.config.max_in_flight:
            self._count(self.metrics.requests, "shed")
            raise Overloaded(f"{self.in_flight} requests in progress")
        if waited_ms >= budget_ms - self.config.margin_ms:
            self._count(self.metrics.requests, "shed")
            raise Overloaded(f"waited {waited_ms:.0f} ms for the server, past its {budget_ms:.0f} ms deadline")
        self.in_flight += 1
        try:
            return await self._complete(request, arrived, budget_ms)
        finally:
            self.in_flight -= 1

    async def _complete(self, request: CompletionInput, started: float, budget_ms: float) -> CompletionOutput:
        deadline = started + max(0.0, budget_ms - self.config.margin_ms) / 1000
        names = [name for name in self.languages[request.language] if self.endpoints[name].applies(request.prefix)]
        # The context's sketch for the approximate caches: made once for all the models, and only if one asks.
        sketch = functools.cache(functools.partial(self.sketcher.sketch, request.language, request.prefix))
        ready: dict[str, tuple[ModelAnswer, str]] = {}  # answered by a cache, here and now: no task
        tasks: dict[str, asyncio.Task[tuple[ModelAnswer, str]]] = {}
        for name in names:
            key = context_key(self.endpoints[name].version, request.language, request.prefix_digest,
                              request.suffix_digest)  # fmt: skip
            found = self._cached(name, key, request, sketch)
            if found is not None and (found[1] == "hit" or not self._audit()):
                self._count(self.metrics.cache, name, found[1])
                self._remember_typed(request.session, name, request, found[0])
                ready[name] = found
            else:  # an audited cache answer is computed too, to compare
                tasks[name] = asyncio.ensure_future(self._ask(name, key, request, deadline, found, sketch))
        # Answers travel back after the models' deadline: wait half the margin past it; the other half
        # is for the HTTP reply.
        reply_by = started + (budget_ms - self.config.margin_ms / 2) / 1000
        if tasks:  # none when no model applies here (token models after a space), or caches answered
            await asyncio.wait(tasks.values(), timeout=max(0.0, reply_by - time.monotonic()))
        answers: dict[str, ModelAnswer] = {}
        status, cache = {}, {}
        for name in names:
            task = tasks.get(name)
            if task is None:
                answers[name], cache[name] = ready[name]
                status[name] = "ok"
            elif not task.done():
                status[name] = "late"
                task.add_done_callback(_consume)
            elif isinstance(task.exception(), QueueFull):
                status[name] = "shed"
            elif isinstance(task.exception(), DeadlineExpired):
                status[name] = "expired"
            elif task.exception() is not None:
                status[name] = "error"
                log.warning("model %s failed: %s", name, task.exception())
            else:
                answers[name], cache[name] = task.result()
                status[name] = "ok"
            self._count(self.metrics.model_answers, name, status[name])
        if status and not answers and all(s in ("shed", "expired") for s in status.values()):
            self._count(self.metrics.requests, "shed")
            raise Overloaded("no model could take the request in time")
        degraded = len(answers) < len(names) or any(a.cut_short for a in answers.values())
        ranking, rows = self._rank(request, names, answers, cache)
        output = CompletionOutput(
            id=f"cmpl-{uuid.uuid4().hex}",
            choices=ranking.choices,
            models=status,
            cache=cache,
            degraded=degraded,
            light=any(a.light for a in answers.values()),
            latency_ms=(time.monotonic() - started) * 1000,
            versions={name: answer.version for name, answer in answers.items()},
        )
        shown = Shown(request.user, request.language, request.session, ranking, rows)
        self._persist(self.learner.shown(output.id, shown, request.prefix))  # judges the session's earlier ones
        self.store.remember(output.id, shown)  # for its events reaching another frontend (shared stores)
        self._count(self.metrics.requests, "degraded" if degraded else "ok")
        if degraded:
            self.metrics.degraded.inc()
        self.metrics.request_latency.observe(time.monotonic() - started)
        return output

    def _cached(
        self, name: str, key: bytes, request: CompletionInput, sketch: Callable[[], Sketch]
    ) -> tuple[ModelAnswer, str] | None:
        """The model's answer if a cache has it (exact, typed through, approximate: each counts its hit or miss);
        None: the model is asked (`_ask`).

        Caches never mix checkpoint versions (a hot reload switches them): every lookup is by the version served
        now, and an answer is stored only under the version that computed it."""
        exact, version = self.exact[name], self.endpoints[name].version
        found: tuple[ModelAnswer, str] | None = None
        if key in exact:
            found = cast(ModelAnswer, exact.get(key)), "hit"
        elif (typed := self.typed.lookup(request.session, _typed_key(name, version), request.prefix,
                                         request.suffix_digest)) is not None:  # fmt: skip
            found = ModelAnswer(typed, cut_short=False, light=False, version=version), "typed"
        elif (near := self.approx[name].find(version, sketch)) is not None:
            found = near[0], "approx"
        return found

    async def _ask(
        self, name: str, key: bytes, request: CompletionInput, deadline: float,
        audited: tuple[ModelAnswer, str] | None, sketch: Callable[[], Sketch],
    ) -> tuple[ModelAnswer, str]:  # fmt: skip
        """The model's answer through the exact cache (shared with identical requests in flight); `audited`, a
        cache's answer to compare it with."""
        endpoint = self.endpoints[name]
        version = endpoint.version
        query = Query(request.prefix, request.suffix, request.language, request.session)
        answer, how = await self.exact[name].get_or_compute(
            key,
            lambda: endpoint.submit(query, deadline),
            _answer_bytes,
            cacheable=lambda answer: _cacheable(answer) and answer.version == version,
        )
        self._count(self.metrics.cache, name, how)
        if audited is not None:  # does the model say what the cache said?
            self.approx_audited += 1
            self.approx_differs += [c.text for c in audited[0].candidates] != [c.text for c in answer.candidates]
        if _cacheable(answer):
            self._remember_typed(request.session, name, request, answer)
            if how == "miss":
                self.approx[name].put(answer.version, sketch, answer)
        return answer, how

    def _remember_typed(self, session: str, name: str, request: CompletionInput, answer: ModelAnswer) -> None:
        """Keep the session's answer, so that typing through one of its candidates is answered at once."""
        self.typed.store(session, _typed_key(name, answer.version), len(request.prefix), request.prefix_digest,
                         request.suffix_digest, answer.candidates)  # fmt: skip

    def _count(self, counter: Counter, *labels: str) -> None:
        """`counter.labels(*labels).inc()`, each labelled child found once (prometheus checks labels each time)."""
        key = (id(counter), labels)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = counter.labels(*labels)
        child.inc()

    def _audit(self) -> bool:
        self._audits += self.config.approx_audit
        if self._audits >= 1:
            self._audits -= 1
            return True
        return False

    def _rank(
        self, request: CompletionInput, names: list[str], answers: dict[str, ModelAnswer], cache: dict[str, str]
    ) -> tuple[Ranking, list[dict[str, float]] | None]:
        """The selection policy's ranking, re-ranked per user by the correction when it is on."""
        candidates = {name: trim_candidates(answer.candidates, request.suffix) for name, answer in answers.items()}
        key = (request.user, request.language)
        return self.learner.rank(key, names, candidates, cache, request.prefix, request.suffix)

    async def feedback(self, event: Event) -> tuple[int, bool]:
        """Store an event with what it says about its completion, and learn from it; returns the stored row
        and whether the completion was still remembered (an event for a forgotten one is stored, not learned).

        Raises:
            ValueError: the choice index is beyond the completion's choices.
        """
        shown = self.learner.recent.get(event.completion_id)
        if shown is None and (shown := await self.store.recall(event.completion_id)) is not None:
            self.learner.adopt(event.completion_id, shown)  # served by another frontend
        if shown is not None:
            choices = shown.ranking.choices
            if event.choice_index is not None and event.choice_index >= len(choices):
                raise ValueError(f"completion {event.completion_id} has {len(choices)} choices")
            if event.choice_index is not None:
                choice = choices[event.choice_index]
                event = dataclasses.replace(event, user=shown.user, language=shown.language, model=choice.model,
                                            text=choice.text)  # fmt: skip
            else:
                event = dataclasses.replace(event, user=shown.user, language=shown.language)
        _, changed = self.learner.event(event.type, event.completion_id, event.choice_index)
        row = await self.store.record(event, changed, self.learner.take_pending())  # durable before acknowledged
        return row, shown is not None

    def _persist(self, keys: list[StateKey]) -> None:
        """Write what a superseded view taught in the background, off the event loop (`writes.StateWriter`)."""
        self.writer.submit(keys, self.learner.take_pending())

    async def drain(self) -> None:
        """Wait for the state writes in flight (before the store closes)."""
        await self.writer.drain()

    def selection_stats(self) -> dict[str, Any]:
        """The policy, how many completions taught it, and the population's weights per language."""
        learner = self.learner
        population = {language: learner.policy.weights((GLOBAL, language)) for language in self.languages}
        users = {user for user, _ in learner.policy.state if user != GLOBAL}
        return {"policy": learner.policy.name, "correction": learner.correction is not None,
                "updates": learner.updates, "users": len(users), "population_weights": population}  # fmt: skip

    def cache_stats(self) -> dict[str, Any]:
        return {
            name: {
                "exact": {"hits": c.hits, "shared": c.shared, "misses": c.misses, "bytes": c.nbytes},
                "approx": {"hits": self.approx[name].hits, "misses": self.approx[name].misses},
            }
            for name, c in self.exact.items()
        } | {
            "typed": {"hits": self.typed.hits, "misses": self.typed.misses},
            "approx_audited": self.approx_audited,
            "approx_differs": self.approx_differs,
        }


def _typed_key(model: str, version: str) -> str:
    """The typed-through cache's model key: the model at one checkpoint version."""
    return f"{model}@{version}"


def _answer_bytes(answer: ModelAnswer) -> int:
    return 64 + sum(len(c.text) + 48 for c in answer.candidates)


def _cacheable(answer: ModelAnswer) -> bool:
    return not answer.cut_short and not answer.light  # a fuller answer may come next time


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a late model's failure is not an unhandled-exception warning
