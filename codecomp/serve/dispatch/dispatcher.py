"""The model-abstraction layer: per model a deadline queue, per replica a batch worker, RPC to containers.

Containers announce themselves (hello, then heartbeats) over the router transport; each live replica
gets a worker that takes batches from its model's queue with its own AIMD batch size and sends them
over RPC. Each editing session has a home replica (rendezvous hashing over the live ones), which holds
its prefix state: a worker takes its own sessions' requests first, and others' only to fill its batch
while their home is busy. A replica that stops beating, or whose process dies, is dropped: its batch
in flight goes back into the queue for another replica, or expires there at its deadline, and its
sessions find new homes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import logging
import time
from collections.abc import Callable

import zmq

from codecomp.serve import protocol
from codecomp.serve.dispatch import batching
from codecomp.serve.dispatch.batching import AIMDBatchSize, Claim, DeadlineQueue, QueueFull, Retry, run_batch
from codecomp.serve.dispatch.metrics import Metrics
from codecomp.serve.dispatch.transport import RouterTransport
from codecomp.serve.protocol import Options, WireCandidate, WireRequest
from codecomp.text.tokens import at_token

log = logging.getLogger(__name__)
_HOMES_KEPT = 100_000  # sessions whose home replica is remembered (recomputed when forgotten)


class ReplicaLost(Retry):
    """The replica died or hung with the batch; another replica may take it."""


class BatchFailed(RuntimeError):
    """The container answered the batch with an error."""


@dataclasses.dataclass  # not frozen: OmegaConf makes a frozen schema read-only, refusing the yaml
class BatchingConfig:
    """Per model. Latencies in milliseconds."""

    objective_ms: float = 20.0  # batch latency the AIMD controller keeps under
    max_batch: int = 64
    wait_ms: float = 0.0  # how long a worker waits for a batch to fill
    max_queue: int = 256
    fixed: bool = False  # keep batches at max_batch (max_batch=1: batching off)
    light_at: float = 0.5  # queue fill share above which batches get light options (smaller answers)
    # A line model's container joins requests to the rows it is decoding: each is sent as a batch of its own while
    # fewer than the AIMD size are in flight (False: batch at a time; the Tree-LSTM, one step, always is).
    continuous: bool = False


@dataclasses.dataclass(frozen=True)
class ModelAnswer:
    candidates: list[WireCandidate]
    cut_short: bool  # the deadline stopped the model before it finished (an anytime partial answer)
    light: bool  # computed with the light options of an overloaded queue
    version: str = ""  # the checkpoint version that computed it: caches store it under this version only


@dataclasses.dataclass(frozen=True, slots=True)
class Query:
    """What a model is asked: the context around the cursor and the editing session it belongs to."""

    prefix: bytes
    suffix: bytes
    language: str
    session: str


@dataclasses.dataclass
class Replica:
    identity: bytes
    model: str
    family: str
    version: str
    pid: int
    last_seen: float
    aimd: AIMDBatchSize
    batch_latency_s: float = 0.01  # moving average, for the admission estimate
    worker: asyncio.Task[None] | None = None
    alive: bool = True
    busy: bool = False  # computing a batch


class ModelEndpoint:
    """One served model: its queue, its replicas and their workers.

    `trigger` is "always", or "token": the model is asked only where a token is being typed (a
    token model has nothing to say after a space or a brace, and skipping it there saves its time).
    """

    def __init__(
        self, name: str, batching: BatchingConfig, options: Options, light: Options, metrics: Metrics,
        trigger: str = "always",
    ) -> None:  # fmt: skip
        if trigger not in ("always", "token"):
            raise ValueError(f"model {name}: trigger must be 'always' or 'token', not {trigger!r}")
        self.name, self.batching, self.options, self.light, self.metrics = name, batching, options, light, metrics
        self.trigger = trigger
        waited = metrics.queue_wait.labels(name).observe
        self.queue: DeadlineQueue[Query, ModelAnswer] = DeadlineQueue(batching.max_queue, waited=waited)
        self.replicas: dict[bytes, Replica] = {}
        self.version = ""
        self.family = ""
        # A hot reload's new replicas (`staging` version): beating, warmed up, taking no batch until `promote`.
        self.staging = ""
        self.staged: dict[bytes, Replica] = {}
        self._homes: dict[str, bytes] = {}  # session -> home replica, for the present set of replicas

    def submit(self, request: Query, deadline: float) -> asyncio.Future[ModelAnswer]:
        """Queue a request; raises QueueFull at the bound, or when the queue ahead of it would take the
        replicas longer to clear than the request has left (better refused now than late)."""
        rate = sum(r.aimd.size / r.batch_latency_s for r in self.replicas.values() if r.alive)  # requests/s
        if rate == 0:
            raise QueueFull("no live replica (restarting)")
        if len(self.queue) / rate > deadline - time.monotonic():
            raise QueueFull(f"{len(self.queue)} requests ahead would take {len(self.queue) / rate * 1000:.0f} ms")
        future = self.queue.put(request, deadline)
        self.metrics.queue_depth.labels(self.name).set(len(self.queue))
        return future

    def home(self, session: str) -> bytes | None:
        """The live replica a session's requests go to (None: no session, or no replica). Rendezvous
        hashing: when a replica goes, only its sessions move; a new one takes a fair share of them."""
        home = self._homes.get(session)
        if home is None and session and self.replicas:
            key = session.encode("utf-8", "surrogatepass") + b"\0"
            home = max(self.replicas, key=lambda identity: hashlib.blake2b(key + identity, digest_size=8).digest())
            if len(self._homes) >= _HOMES_KEPT:
                self._homes.clear()
            self._homes[session] = home
        return home

    def claim(self, replica: Replica, query: Query) -> Claim:
        """What `replica`'s worker makes of a queued request: its own session's; spare (its home is busy
        with a batch, or gone), taken when there is room; or another idle replica's, left to it."""
        home = self.home(query.session)
        if home is None or home == replica.identity:
            return Claim.OWN
        owner = self.replicas.get(home)
        return Claim.SPARE if owner is None or owner.busy else Claim.NOT_OURS

    def claimant(self, replica: Replica) -> Callable[[Query], Claim] | None:
        """How `replica`'s worker claims queued requests now: by `claim` when other replicas share the queue; with
        none (None) every session's home is this one, and the queue pops earliest deadline first at no cost per
        queued request."""
        return functools.partial(self.claim, replica) if len(self.replicas) > 1 else None

    def replicas_changed(self) -> None:
        """A replica joined or left: sessions find their homes again, and waiting workers look again."""
        self._homes.clear()
        self.queue.notify()

    def applies(self, prefix: bytes) -> bool:
        return self.trigger == "always" or at_token(prefix)

    @property
    def live_replicas(self) -> int:
        return sum(r.alive for r in self.replicas.values())


class Dispatcher:
    """Routes batches to containers over a router transport and keeps track of which are alive."""

    def __init__(
        self, transport: RouterTransport, endpoints: dict[str, ModelEndpoint], metrics: Metrics,
        heartbeat_timeout_s: float = 1.0,
    ) -> None:  # fmt: skip
        self.transport, self.endpoints, self.metrics = transport, endpoints, metrics
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.replicas: dict[bytes, Replica] = {}
        self.retired: set[bytes] = set()  # replaced by a hot reload: their last heartbeats are not new hellos
        self._batch_ids = itertools.count()
        self._in_flight: dict[int, tuple[bytes, asyncio.Future[protocol.Result | protocol.Error]]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._receive_loop()), asyncio.create_task(self._watch_loop())]

    async def stop(self) -> None:
        for replica in list(self.replicas.values()):
            with contextlib.suppress(zmq.ZMQError):
                await self.transport.send(replica.identity, protocol.pack(protocol.Shutdown()))
            self.lose(replica.identity, "frontend stopping")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- containers coming and going -------------------------------------------------------------

    async def _receive_loop(self) -> None:
        while True:
            peer, frame = await self.transport.receive()
            try:
                self._handle(peer, frame)
            except Exception:  # one bad container message must not stop the frontend hearing the others
                log.exception("dropped a message from %r", peer)

    def _handle(self, peer: bytes, frame: bytes) -> None:
        try:
            message = protocol.unpack(frame)
        except protocol.ProtocolError as error:
            log.warning("dropped a message from %r: %s", peer, error)
            return
        if isinstance(message, protocol.Hello):  # a heartbeat is a hello too
            self._beat(peer, message)
        elif isinstance(message, protocol.Result | protocol.Error):
            waiting = self._in_flight.get(message.batch) if message.batch is not None else None
            if waiting is not None and waiting[0] == peer:  # answered by the replica it was sent to
                del self._in_flight[message.batch]  # type: ignore[arg-type]
                if not waiting[1].done():
                    waiting[1].set_result(message)
            elif isinstance(message, protocol.Error):
                log.warning("container %r: %s", peer, message.message)

    def _beat(self, peer: bytes, message: protocol.Hello) -> None:
        replica = self.replicas.get(peer)
        if replica is not None:
            replica.last_seen = time.monotonic()
            return
        if peer in self.retired:
            return
        endpoint = self.endpoints.get(message.model)
        if endpoint is None:
            log.warning("container %r serves %r, which is not a served model; ignored", peer, message.model)
            return
        staged = bool(endpoint.staging) and message.version == endpoint.staging  # a hot reload's new replica
        if not staged and endpoint.live_replicas and message.version != endpoint.version:
            # The caches key answers by checkpoint version: one endpoint serves one version at a time.
            log.warning("container %r serves %s version %s, not %s; ignored", peer, message.model, message.version,
                        endpoint.version)  # fmt: skip
            return
        b = endpoint.batching
        replica = Replica(
            peer, endpoint.name, message.family, message.version, message.pid, time.monotonic(),
            AIMDBatchSize(b.objective_ms / 1000, b.max_batch, fixed=b.fixed),
        )  # fmt: skip
        self.replicas[peer] = replica
        if staged:  # beating (so watched), but taking no batch until `promote`
            endpoint.staged[peer] = replica
            log.info(
                "replica %s of %s staged (version %s)", peer.decode(errors="replace"), endpoint.name, replica.version
            )
            return
        endpoint.replicas[peer] = replica
        endpoint.version, endpoint.family = replica.version, replica.family
        self.start_worker(endpoint, replica)
        endpoint.replicas_changed()
        self.metrics.replicas.labels(endpoint.name).set(endpoint.live_replicas)
        log.info("replica %s of %s joined (pid %d)", peer.decode(errors="replace"), endpoint.name, replica.pid)

    def start_worker(self, endpoint: ModelEndpoint, replica: Replica) -> None:
        """Have `replica` take requests from its model's queue (a hot reload's `promote` calls it too)."""
        replica.worker = asyncio.create_task(self._work(endpoint, replica))

    def holds(self, replica: Replica) -> bool:
        """Whether the replica has requests in flight."""
        return replica.busy or any(peer == replica.identity for peer, _ in self._in_flight.values())

    def lose(self, identity: bytes, reason: str) -> None:
        """Drop a replica: its batch in flight is retried elsewhere, its worker stops."""
        replica = self.replicas.pop(identity, None)
        if replica is None:
            return
        replica.alive = False
        endpoint = self.endpoints[replica.model]
        endpoint.replicas.pop(identity, None)
        endpoint.staged.pop(identity, None)
        for batch, (peer, future) in list(self._in_flight.items()):
            if peer == identity:
                del self._in_flight[batch]
                if not future.done():
                    future.set_exception(ReplicaLost(reason))
        if replica.worker is not None and not replica.busy:
            replica.worker.cancel()  # idle in the queue; a busy one stops after its batch (and requeues it)
        endpoint.replicas_changed()  # its sessions move to the others
        self.metrics.replicas.labels(endpoint.name).set(endpoint.live_replicas)
        level = logging.INFO if identity in self.retired else logging.WARNING
        log.log(level, "replica %s of %s lost: %s", identity.decode(errors="replace"), replica.model, reason)

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_timeout_s / 5)
            now = time.monotonic()
            for replica in list(self.replicas.values()):
                if now - replica.last_seen > self.heartbeat_timeout_s:
                    self.lose(replica.identity, f"no heartbeat for {now - replica.last_seen:.2f} s")

    # -- batches ---------------------------------------------------------------------------------

    async def _work(self, endpoint: ModelEndpoint, replica: Replica) -> None:
        queue = endpoint.queue
        record = functools.partial(self._record, endpoint, replica)
        claimant = functools.partial(endpoint.claimant, replica)
        if endpoint.batching.continuous:

            async def predict_one(items: list[Query], deadlines: list[float]) -> list[ModelAnswer]:
                light = len(queue) > endpoint.batching.light_at * endpoint.batching.max_queue
                return await self._call(replica, items, deadlines, endpoint.light if light else endpoint.options, light)

            return await batching.feed_continuously(queue, replica, predict_one, record, claimant)
        while replica.alive:
            batch = await queue.take(replica.aimd.size, endpoint.batching.wait_ms / 1000, claimant)
            replica.busy = True  # from here on `lose` leaves the worker to requeue its batch
            if not replica.alive:
                queue.requeue(batch)
                return
            if len(queue):
                queue.notify()  # what is left of its sessions' requests is spare for idle replicas now
            light = len(queue) > endpoint.batching.light_at * endpoint.batching.max_queue
            options = endpoint.light if light else endpoint.options
            self.metrics.queue_depth.labels(endpoint.name).set(len(queue))
            started = time.monotonic()

            async def predict(items: list[Query], deadlines: list[float]) -> list[ModelAnswer]:
                return await self._call(replica, items, deadlines, options, light)  # noqa: B023

            try:
                await run_batch(batch, predict, queue)
            finally:
                replica.busy = False
            if replica.alive:
                record(len(batch), time.monotonic() - started)

    def _record(self, endpoint: ModelEndpoint, replica: Replica, size: int, elapsed: float) -> None:
        """A batch of `size` answered in `elapsed` s (continuous: a request, `size` rows in flight when it left)."""
        replica.aimd.record(size, elapsed)
        replica.batch_latency_s = 0.8 * replica.batch_latency_s + 0.2 * elapsed
        self.metrics.model_latency.labels(endpoint.name).observe(elapsed)
        self.metrics.batch_size.labels(endpoint.name).observe(size)

    async def _call(
        self, replica: Replica, items: list[Query], deadlines: list[float], options: Options, light: bool
    ) -> list[ModelAnswer]:
        batch_id = next(self._batch_ids)
        now = time.monotonic()  # budgets travel as time left: the container's clock is its own
        requests = [
            WireRequest(q.prefix, q.suffix, q.language, q.session, max(0.0, (d - now) * 1000))
            for q, d in zip(items, deadlines, strict=True)
        ]
        frame = protocol.pack(protocol.Predict(batch=batch_id, requests=requests, options=options))
        future: asyncio.Future[protocol.Result | protocol.Error] = asyncio.get_running_loop().create_future()
        self._in_flight[batch_id] = (replica.identity, future)
        try:
            await self.transport.send(replica.identity, frame)
        except zmq.ZMQError as error:  # the peer is gone (ROUTER_MANDATORY)
            self._in_flight.pop(batch_id, None)
            self.lose(replica.identity, f"send failed: {error}")
            raise ReplicaLost(str(error)) from None
        reply = await future  # a hung replica is dropped by the watch loop, which fails this future
        if isinstance(reply, protocol.Error):
            raise BatchFailed(reply.message)
        if len(reply.results) != len(items) or len(reply.cut_short) != len(items):
            raise BatchFailed(f"{len(reply.results)} results for a batch of {len(items)}")
        return [
            ModelAnswer(result, cut, light, replica.version)
            for result, cut in zip(reply.results, reply.cut_short, strict=True)
        ]
