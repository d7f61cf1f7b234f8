"""One completion request end to end: caches, every model of the language in parallel, the deadline, the merge.

Each model is asked through its exact cache (with in-flight de-duplication) and its approximate
cache; at the deadline the answer is built from what has arrived, and says which models answered.
A model still computing at the deadline is not cancelled: its answer still fills the cache.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
import time
import uuid
from typing import Any

from codecomp.serve.dispatch.batching import DeadlineExpired, QueueFull
from codecomp.serve.dispatch.dispatcher import ModelAnswer, ModelEndpoint, Query
from codecomp.serve.dispatch.metrics import Metrics
from codecomp.serve.protocol import WireCandidate
from codecomp.serve.service.approx_cache import ApproximateCache
from codecomp.serve.service.cache import PredictionCache, TypedThroughCache, context_key
from codecomp.serve.service.selection import Choice, FixedInterleave, SelectionPolicy
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

    # Hashed once per request, however many models and caches look at them (files can be large).
    @functools.cached_property
    def prefix_digest(self) -> bytes:
        return digest((self.prefix,))

    @functools.cached_property
    def suffix_digest(self) -> bytes:
        return digest((self.suffix,))


@dataclasses.dataclass(frozen=True)
class CompletionOutput:
    id: str
    choices: list[Choice]
    models: dict[str, str]  # model asked -> ok; late (computing at the deadline); expired (in the queue); shed; error
    cache: dict[str, str]  # model -> hit, shared, typed, approx, miss
    degraded: bool  # a model is missing, or an answer was cut short by the deadline
    light: bool  # some answer was computed with the smaller options of an overloaded queue
    latency_ms: float


@dataclasses.dataclass(frozen=True)
class Served:
    """A completion as feedback events refer to it."""

    user: str
    language: str
    choices: list[Choice]


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
    max_loop_lag_ms: float = 10.0  # shed at once while the event loop runs this far behind


class CompletionService:
    def __init__(self, endpoints: dict[str, ModelEndpoint], languages: dict[str, list[str]], config: ServiceConfig,
                 metrics: Metrics, selection: SelectionPolicy | None = None) -> None:  # fmt: skip
        """`languages` maps each language to the models that serve it, in the configured order; `selection`
        ranks their candidates into one list (the fixed interleave by default)."""
        self.endpoints, self.languages, self.config, self.metrics = endpoints, languages, config, metrics
        self.selection = selection if selection is not None else FixedInterleave(config.max_choices)
        self.exact = {name: PredictionCache[ModelAnswer](config.cache_bytes) for name in endpoints}
        self.typed = TypedThroughCache(sessions=config.typed_sessions)
        self.approx = {
            name: ApproximateCache[ModelAnswer](threshold=config.approx_threshold, max_entries=config.approx_entries)
            for name in endpoints
        }
        # What feedback events need of recent completions (not their contexts, which may be large).
        self.recent: collections.OrderedDict[str, Served] = collections.OrderedDict()
        self.approx_audited = self.approx_differs = 0
        self.in_flight = 0
        self.loop_lag_ms = 0.0
        self._audits = 0.0

    async def complete(self, request: CompletionInput) -> CompletionOutput:
        if self.in_flight >= self.config.max_in_flight or self.loop_lag_ms > self.config.max_loop_lag_ms:
            # The cheapest answer under overload, at once: requests waiting for this event loop are not
            # counted by their deadlines, which start here.
            self.metrics.requests.labels("shed").inc()
            raise Overloaded(f"{self.in_flight} requests in progress, event loop {self.loop_lag_ms:.0f} ms behind")
        self.in_flight += 1
        try:
            return await self._complete(request)
        finally:
            self.in_flight -= 1

    async def watch_loop_lag(self, interval_s: float = 0.005) -> None:
        """Keep `loop_lag_ms`, a moving average of how late this event loop wakes up: its backlog.
        Slow to move, so a lasting backlog sheds work and one stall (a start-up, a collection) does not."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval_s)
            late_ms = max(0.0, (time.monotonic() - before - interval_s) * 1000)
            self.loop_lag_ms = 0.9 * self.loop_lag_ms + 0.1 * late_ms

    async def _complete(self, request: CompletionInput) -> CompletionOutput:
        started = time.monotonic()
        budget_ms = min(self.config.objective_ms, request.deadline_ms or self.config.objective_ms)
        deadline = started + max(0.0, budget_ms - self.config.margin_ms) / 1000
        names = [name for name in self.languages[request.language] if self.endpoints[name].applies(request.prefix)]
        tasks = {name: asyncio.ensure_future(self._ask(name, request, deadline)) for name in names}
        # Answers travel back after the models' deadline: wait half the margin past it; the other half
        # is for the HTTP reply.
        reply_by = started + (budget_ms - self.config.margin_ms / 2) / 1000
        if tasks:  # none when no model applies here (token models after a space)
            await asyncio.wait(tasks.values(), timeout=max(0.0, reply_by - time.monotonic()))
        answers: dict[str, ModelAnswer] = {}
        status, cache = {}, {}
        for name, task in tasks.items():
            if not task.done():
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
            self.metrics.model_answers.labels(name, status[name]).inc()
        if status and not answers and all(s in ("shed", "expired") for s in status.values()):
            self.metrics.requests.labels("shed").inc()
            raise Overloaded("no model could take the request in time")
        degraded = len(answers) < len(names) or any(a.cut_short for a in answers.values())
        output = CompletionOutput(
            id=f"cmpl-{uuid.uuid4().hex}",
            choices=self.selection.rank(
                request.user, request.language, names, {n: a.candidates for n, a in answers.items()}
            ),
            models=status,
            cache=cache,
            degraded=degraded,
            light=any(a.light for a in answers.values()),
            latency_ms=(time.monotonic() - started) * 1000,
        )
        self._remember(request, output)
        self.metrics.requests.labels("degraded" if degraded else "ok").inc()
        if degraded:
            self.metrics.degraded.inc()
        self.metrics.request_latency.observe(time.monotonic() - started)
        return output

    async def _ask(self, name: str, request: CompletionInput, deadline: float) -> tuple[ModelAnswer, str]:
        endpoint = self.endpoints[name]
        session = f"{request.user}\0{request.filepath}\0{request.language}"
        key = context_key(endpoint.version, request.language, request.prefix_digest, request.suffix_digest)
        found, how = None, "miss"
        if key not in self.exact[name]:
            typed = self.typed.lookup(session, name, request.prefix, request.suffix_digest)
            if typed is not None:
                found, how = ModelAnswer(typed, cut_short=False, light=False), "typed"
            elif (near := self.approx[name].lookup(endpoint.version, request.language, request.prefix)) is not None:
                found, how = near[0], "approx"
        if found is not None and not self._audit():
            self.metrics.cache.labels(name, how).inc()
            self._remember_typed(session, name, request, found.candidates)
            return found, how
        query = Query(request.prefix, request.suffix, request.language, session)
        answer, how = await self.exact[name].get_or_compute(
            key, lambda: endpoint.submit(query, deadline), _answer_bytes, cacheable=_cacheable
        )
        self.metrics.cache.labels(name, how).inc()
        if found is not None:  # an audited approximate answer: does the model say the same?
            self.approx_audited += 1
            self.approx_differs += [c.text for c in found.candidates] != [c.text for c in answer.candidates]
        if _cacheable(answer):
            self._remember_typed(session, name, request, answer.candidates)
            if how == "miss":
                self.approx[name].store(endpoint.version, request.language, request.prefix, answer)
        return answer, how

    def _remember_typed(
        self, session: str, name: str, request: CompletionInput, candidates: list[WireCandidate]
    ) -> None:
        """Keep the session's answer, so that typing through one of its candidates is answered at once."""
        self.typed.store(session, name, len(request.prefix), request.prefix_digest, request.suffix_digest, candidates)

    def _audit(self) -> bool:
        self._audits += self.config.approx_audit
        if self._audits >= 1:
            self._audits -= 1
            return True
        return False

    def _remember(self, request: CompletionInput, output: CompletionOutput) -> None:
        self.recent[output.id] = Served(request.user, request.language, output.choices)
        while len(self.recent) > self.config.completions_kept:
            self.recent.popitem(last=False)

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


def _answer_bytes(answer: ModelAnswer) -> int:
    return 64 + sum(len(c.text) + 48 for c in answer.candidates)


def _cacheable(answer: ModelAnswer) -> bool:
    return not answer.cut_short and not answer.light  # a fuller answer may come next time


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a late model's failure is not an unhandled-exception warning
