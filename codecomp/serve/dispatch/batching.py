"""Adaptive batching (Clipper section 4.3): a deadline-ordered queue per model, batch sizes tuned by AIMD.

Every replica of a model takes batches from the model's one queue, earliest deadline first; each
replica keeps its own batch size, grown additively while its measured batch latency stays under the
objective and cut by a fraction when it goes over. A worker may `claim` requests: its own first, then
spare ones to fill its batch, leaving the rest to their own workers (the dispatcher's session
affinity). Requests whose deadline has passed are dropped before a batch forms, and a full queue
refuses new work at once instead of letting latency grow.

Under continuous batching (a line model's container joins new requests to the rows it is decoding at its next
step) a worker does not wait for a batch to come back: it sends each request as soon as its replica has a free
row, at most its AIMD size in flight (`Rows`), and the AIMD controller learns from each request's latency.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class QueueFull(Exception):
    """The queue is at its bound: the caller should shed the request (503 with Retry-After)."""


class DeadlineExpired(Exception):
    """The request's deadline passed while it waited in the queue; it was never computed."""


class Retry(Exception):
    """Raised by a batch's `predict` when this worker could not compute it but another may (its replica
    died): the batch's requests go back into the queue instead of failing."""


class Claim(enum.Enum):
    """What a worker that takes from a shared queue makes of one request."""

    OWN = "own"  # its own: taken first
    SPARE = "spare"  # another worker's, which may take long to come: taken when there is room in the batch
    NOT_OURS = "not ours"  # left for the worker it belongs to


# Gives the claim in force (None: the worker may take any request, earliest deadline first).
Claimant = Callable[[], Callable[[Item], Claim] | None]


@dataclasses.dataclass(order=True)
class Pending(Generic[Item, Result]):
    """A queued request: its deadline (a `time.monotonic()` instant) orders the queue."""

    deadline: float
    sequence: int  # ties broken by arrival
    item: Item = dataclasses.field(compare=False)
    future: asyncio.Future[Result] = dataclasses.field(compare=False)
    timer: asyncio.TimerHandle | None = dataclasses.field(default=None, compare=False)  # expires it in the queue
    queued_at: float = dataclasses.field(default=0.0, compare=False)  # when it was put, on the queue's clock


class DeadlineQueue(Generic[Item, Result]):
    """A bounded queue ordered by deadline, from which batch workers take up to n items at a time.

    Args:
        max_size: requests waiting at most; `put` past it raises QueueFull.
        clock: the time source (`time.monotonic` unless a test steps time itself).
        waited: called with the seconds each request waited, when a worker takes it (a metric's `observe`).
    """

    def __init__(
        self, max_size: int, clock: Callable[[], float] = time.monotonic, waited: Callable[[float], None] | None = None
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be positive, got {max_size}")
        self.max_size = max_size
        self.clock = clock
        self.waited = waited
        self._heap: list[Pending[Item, Result]] = []
        self._sequence = itertools.count()
        self._arrived = asyncio.Event()
        self.expired = 0  # requests dropped because their deadline passed in the queue

    def __len__(self) -> int:
        return len(self._heap)

    def put(self, item: Item, deadline: float) -> asyncio.Future[Result]:
        """Queue a request; the returned future gets its result, or the exception that stopped it."""
        if len(self._heap) >= self.max_size:
            self._drop_dead()
        if len(self._heap) >= self.max_size:
            raise QueueFull(f"queue holds {len(self._heap)} requests, its bound")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        pending = Pending(deadline, next(self._sequence), item, future, queued_at=self.clock())
        self._push(pending)
        self._arrived.set()
        return future

    def _push(self, pending: Pending[Item, Result]) -> None:
        # Expire it at its deadline even if no worker comes to take it (all busy, or none alive).
        delay = max(0.0, pending.deadline - self.clock())
        pending.timer = asyncio.get_running_loop().call_later(delay, self._expire, pending)
        heapq.heappush(self._heap, pending)

    def _expire(self, pending: Pending[Item, Result]) -> None:
        if not pending.future.done():
            pending.future.set_exception(DeadlineExpired("deadline passed before a batch formed"))
            self.expired += 1

    async def take(
        self, max_items: int, wait_s: float = 0.0, claimant: Claimant[Item] | None = None
    ) -> list[Pending[Item, Result]]:
        """Wait for work, then return up to `max_items` live requests, earliest deadline first.

        After the first request is there, waits up to `wait_s` more for the batch to fill.
        Requests whose deadline has passed, or whose caller gave up, are dropped on the way.
        With a claim (`claimant()`, asked at each look at the queue: the replicas may change while it
        waits), the batch is the worker's own requests (earliest deadline first), then spare ones while
        there is room; it waits while there is neither (`notify` wakes it to look again).
        """
        if max_items < 1:
            raise ValueError(f"max_items must be positive, got {max_items}")
        while True:
            self._drop_dead()
            claim = claimant() if claimant is not None else None
            if not self._takeable(claim):
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if wait_s > 0 and self._takeable(claim) < max_items:
                fill_by = self.clock() + wait_s
                while self._takeable(claim) < max_items and (remaining := fill_by - self.clock()) > 0:
                    self._arrived.clear()
                    try:
                        await asyncio.wait_for(self._arrived.wait(), remaining)
                    except TimeoutError:
                        break
                self._drop_dead()
            batch = self._pop(max_items, claim)
            now = self.clock()
            for pending in batch:
                if pending.timer is not None:
                    pending.timer.cancel()  # being computed now: it is answered, late or not
                if self.waited is not None:
                    self.waited(now - pending.queued_at)
            if batch:
                return batch

    def notify(self) -> None:
        """Wake the waiting workers to look again: what they may claim has changed."""
        self._arrived.set()

    def _takeable(self, claim: Callable[[Item], Claim] | None) -> int:
        if claim is None:
            return len(self._heap)
        return sum(claim(pending.item) is not Claim.NOT_OURS for pending in self._heap)

    def _pop(self, max_items: int, claim: Callable[[Item], Claim] | None) -> list[Pending[Item, Result]]:
        if claim is None:
            return [heapq.heappop(self._heap) for _ in range(min(max_items, len(self._heap)))]
        ranked = [(claim(pending.item), pending) for pending in sorted(self._heap)]  # earliest deadline first
        own = [pending for verdict, pending in ranked if verdict is Claim.OWN]
        spare = [pending for verdict, pending in ranked if verdict is Claim.SPARE]
        batch = (own + spare)[:max_items]
        if batch:
            taken = {id(pending) for pending in batch}
            self._heap = [pending for pending in self._heap if id(pending) not in taken]
            heapq.heapify(self._heap)
        return batch

    def requeue(self, batch: Sequence[Pending[Item, Result]]) -> None:
        """Put taken requests back, past the bound if need be: they were admitted once already."""
        for pending in batch:
            self._push(pending)
        self._arrived.set()

    def _drop_dead(self) -> None:
        now = self.clock()
        live = []
        for pending in self._heap:
            if pending.future.done():  # expired, or the caller was cancelled
                continue
            if pending.deadline <= now:
                self._expire(pending)
                continue
            live.append(pending)
        if len(live) != len(self._heap):
            heapq.heapify(live)
            self._heap = live


class AIMDBatchSize:
    """Additive increase, multiplicative decrease of one replica's batch size against a latency objective.

    Args:
        objective_s: the batch latency to stay under, seconds.
        max_size: the largest batch ever formed.
        step: added after a full batch that met the objective.
        backoff: the fraction cut after a batch that missed it (Clipper uses 10%).
        fixed: keep the size at `max_size` and never adapt (the benchmark's fixed-size configuration).
    """

    def __init__(
        self, objective_s: float, max_size: int = 64, step: int = 1, backoff: float = 0.1, fixed: bool = False
    ) -> None:
        if objective_s <= 0 or max_size < 1 or step < 1 or not 0 < backoff < 1:
            raise ValueError("need objective_s > 0, max_size >= 1, step >= 1 and 0 < backoff < 1")
        self.objective_s, self.max_size, self.step, self.backoff = objective_s, max_size, step, backoff
        self.fixed = fixed
        self.size = max_size if fixed else 1

    def record(self, batch_len: int, latency_s: float) -> None:
        """Adapt to one finished batch of `batch_len` requests that took `latency_s`."""
        if self.fixed:
            return
        if latency_s > self.objective_s:
            self.size = max(1, int(self.size * (1 - self.backoff)))
        elif batch_len >= self.size:  # only a full batch shows the size itself was fast enough
            self.size = min(self.max_size, self.size + self.step)


async def run_batch(
    batch: Sequence[Pending[Item, Result]],
    predict: Callable[[list[Item], list[float]], Awaitable[list[Result]]],
    queue: DeadlineQueue[Item, Result],
) -> None:
    """Compute one batch and deliver each result, or the one exception, to every waiter.

    `predict` gets the items and their deadlines (an anytime model stops each request at its own);
    if it raises `Retry`, the batch goes back into `queue` for another worker.
    """
    try:
        results = await predict([p.item for p in batch], [p.deadline for p in batch])
        if len(results) != len(batch):
            raise RuntimeError(f"model returned {len(results)} results for a batch of {len(batch)}")
    except Retry:
        queue.requeue(batch)
        return
    except BaseException as error:  # a cancelled batch too: no waiter may hang
        delivered = error if isinstance(error, Exception) else RuntimeError("the batch was cancelled")
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(delivered)
        if not isinstance(error, Exception):
            raise
        return
    for pending, result in zip(batch, results, strict=True):
        if not pending.future.done():
            pending.future.set_result(result)


class Worker(Protocol):
    """What `feed_continuously` reads and sets of the replica it feeds."""

    alive: bool
    busy: bool  # no row free: its sessions' requests are spare for other replicas
    aimd: AIMDBatchSize


async def feed_continuously(
    queue: DeadlineQueue[Item, Result],
    worker: Worker,
    predict: Callable[[list[Item], list[float]], Awaitable[list[Result]]],
    record: Callable[[int, float], None],
    claimant: Claimant[Item] | None = None,
) -> None:
    """A worker's loop under continuous batching, while `worker.alive`: each request goes out as a batch of its own
    (`run_batch`) as soon as fewer than `worker.aimd.size` are in flight; `record(rows in flight when it left,
    seconds it took)` after each answer; `claimant` as in `DeadlineQueue.take`. Returns once the requests in flight
    are answered (cancelled too)."""
    clock = queue.clock

    def changed(rows: int) -> None:
        full = rows >= worker.aimd.size
        if full and not worker.busy and len(queue):
            queue.notify()  # its sessions' requests are spare for idle replicas now
        worker.busy = full

    async def one(pending: Pending[Item, Result], load: int) -> None:
        started = clock()
        await run_batch([pending], predict, queue)
        if worker.alive:
            record(load, clock() - started)

    rows = Rows(changed)
    try:
        while worker.alive:
            await rows.wait_below(worker.aimd.size)
            taken = await queue.take(max(1, worker.aimd.size - len(rows)), 0.0, claimant)
            if not worker.alive:
                queue.requeue(taken)
                return
            for pending in taken:
                rows.start(one(pending, len(rows) + 1))
    finally:
        await rows.drain()  # a worker stopped (its replica lost, or replaced by a reload) lets its rows finish


class Rows:
    """The requests a worker has in flight at once under continuous batching, each computed in a task of its own.

    Args:
        changed: called with the number in flight whenever it changes.
    """

    def __init__(self, changed: Callable[[int], None] = lambda n: None) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()
        self._changed = changed

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait_below(self, limit: int) -> None:
        """Until fewer than `limit` are in flight."""
        while len(self._tasks) >= limit:
            self._freed.clear()
            await self._freed.wait()

    def start(self, work: Awaitable[None]) -> None:
        """Compute one request (`work`, e.g. `run_batch` of a batch of one) in a task of its own."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        self._changed(len(self._tasks))

    async def drain(self) -> None:
        """Until every request in flight is answered (or has failed, its waiter told)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._freed.set()
        self._changed(len(self._tasks))
