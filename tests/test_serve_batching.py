"""Adaptive batching on its own: asyncio and a stepped clock, no sockets."""

import asyncio

import pytest

from codecomp.serve.dispatch.batching import (
    AIMDBatchSize,
    Claim,
    DeadlineExpired,
    DeadlineQueue,
    QueueFull,
    Retry,
    run_batch,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_batches_come_earliest_deadline_first_and_bounded_in_size():
    async def scenario():
        queue = DeadlineQueue(max_size=10, clock=Clock())
        for name, deadline in [("c", 103.0), ("a", 101.0), ("d", 104.0), ("b", 102.0)]:
            queue.put(name, deadline)
        first = await queue.take(3)
        second = await queue.take(3)
        return [p.item for p in first], [p.item for p in second], len(queue)

    assert asyncio.run(scenario()) == (["a", "b", "c"], ["d"], 0)


def test_a_full_queue_refuses_at_once():
    async def scenario():
        queue = DeadlineQueue(max_size=2, clock=Clock())
        queue.put(1, 200.0)
        queue.put(2, 200.0)
        with pytest.raises(QueueFull):
            queue.put(3, 200.0)
        return len(queue)

    assert asyncio.run(scenario()) == 2


def test_expired_requests_are_dropped_before_a_batch_forms():
    async def scenario():
        clock = Clock()
        queue = DeadlineQueue(max_size=10, clock=clock)
        stale = queue.put("stale", 100.5)
        live = queue.put("live", 105.0)
        clock.now = 101.0
        batch = await queue.take(10)
        with pytest.raises(DeadlineExpired):
            await stale
        return [p.item for p in batch], live.done(), queue.expired

    assert asyncio.run(scenario()) == (["live"], False, 1)


def test_cancelled_callers_are_skipped():
    async def scenario():
        queue = DeadlineQueue(max_size=10, clock=Clock())
        gone = queue.put("gone", 101.0)
        queue.put("kept", 102.0)
        gone.cancel()
        return [p.item for p in await queue.take(10)]

    assert asyncio.run(scenario()) == ["kept"]


def test_a_claiming_worker_takes_its_own_first_then_spares_and_leaves_the_rest():
    async def scenario():
        queue = DeadlineQueue(max_size=10, clock=Clock())
        for name, deadline in [("own-late", 104.0), ("spare-early", 101.0), ("theirs", 100.5), ("own-early", 102.0),
                               ("spare-late", 105.0)]:  # fmt: skip
            queue.put(name, deadline)
        verdicts = {"own": Claim.OWN, "spare": Claim.SPARE, "theirs": Claim.NOT_OURS}
        claim = lambda name: verdicts[name.split("-")[0]]  # noqa: E731
        first = await queue.take(3, claimant=lambda: claim)
        second = await queue.take(3, claimant=lambda: claim)
        waiting = asyncio.ensure_future(queue.take(3, claimant=lambda: claim))
        await asyncio.sleep(0.01)
        assert not waiting.done()  # only another worker's request is left: it waits
        verdicts["theirs"] = Claim.SPARE  # that worker got busy
        queue.notify()
        third = await asyncio.wait_for(waiting, 1.0)
        return [[p.item for p in batch] for batch in (first, second, third)]

    assert asyncio.run(scenario()) == [["own-early", "own-late", "spare-early"], ["spare-late"], ["theirs"]]


def test_a_take_asks_for_the_claim_at_each_look_as_replicas_come_and_go():
    async def scenario():
        queue = DeadlineQueue(max_size=10, clock=Clock())
        queue.put("homed elsewhere", 101.0)
        claims = {"now": lambda name: Claim.NOT_OURS}  # another replica holds its session
        waiting = asyncio.ensure_future(queue.take(3, claimant=lambda: claims["now"]))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        claims["now"] = None  # that replica is gone: this one is the only one, every request its own
        queue.notify()
        return [p.item for p in await asyncio.wait_for(waiting, 1.0)]

    assert asyncio.run(scenario()) == ["homed elsewhere"]


def test_take_waits_for_work_and_then_for_the_batch_to_fill():
    async def scenario():
        queue = DeadlineQueue(max_size=10)
        loop = asyncio.get_running_loop()
        taker = asyncio.ensure_future(queue.take(3, wait_s=0.5))
        await asyncio.sleep(0.01)
        assert not taker.done()  # nothing queued: it waits
        deadline = loop.time() + 60
        queue.put(1, deadline)
        await asyncio.sleep(0.01)
        assert not taker.done()  # one of three: it waits for more, up to wait_s
        queue.put(2, deadline)
        queue.put(3, deadline)  # full: returns at once, well before wait_s
        batch = await asyncio.wait_for(taker, 0.2)
        return [p.item for p in batch]

    assert asyncio.run(scenario()) == [1, 2, 3]


def test_take_returns_a_partial_batch_when_the_wait_runs_out():
    async def scenario():
        queue = DeadlineQueue(max_size=10)
        queue.put(1, asyncio.get_running_loop().time() + 60)
        batch = await asyncio.wait_for(queue.take(8, wait_s=0.02), 1.0)
        return [p.item for p in batch]

    assert asyncio.run(scenario()) == [1]


def test_aimd_grows_additively_and_backs_off_by_a_tenth():
    aimd = AIMDBatchSize(objective_s=0.02, max_size=8)
    assert aimd.size == 1
    for _ in range(5):
        aimd.record(aimd.size, 0.01)  # full batches under the objective
    assert aimd.size == 6
    aimd.record(2, 0.01)  # a batch that was not full shows nothing about the size
    assert aimd.size == 6
    aimd.record(6, 0.03)  # over the objective
    assert aimd.size == 5  # int(6 * 0.9)
    for _ in range(10):
        aimd.record(aimd.size, 0.01)
    assert aimd.size == 8  # capped
    fixed = AIMDBatchSize(objective_s=0.02, max_size=4, fixed=True)
    fixed.record(4, 1.0)
    assert fixed.size == 4
    with pytest.raises(ValueError):
        AIMDBatchSize(objective_s=0.02, backoff=1.5)


def test_run_batch_delivers_each_result_and_checks_the_count():
    async def scenario():
        queue = DeadlineQueue(max_size=10)
        deadline = asyncio.get_running_loop().time() + 60
        futures = [queue.put(i, deadline + i) for i in range(3)]
        seen_deadlines = []

        async def double(items, deadlines):
            seen_deadlines.append(deadlines)
            return [2 * i for i in items]

        await run_batch(await queue.take(3), double, queue)
        results = [f.result() for f in futures]

        bad = [queue.put(i, deadline) for i in range(2)]

        async def short(items, deadlines):
            return items[:1]

        await run_batch(await queue.take(2), short, queue)
        errors = [f.exception() for f in bad]
        return results, seen_deadlines == [[deadline, deadline + 1, deadline + 2]], errors

    results, each_own_deadline, errors = asyncio.run(scenario())
    assert results == [0, 2, 4] and each_own_deadline
    assert all(isinstance(e, RuntimeError) and "1 results for a batch of 2" in str(e) for e in errors)


def test_an_exception_reaches_every_waiter_and_retry_requeues():
    async def scenario():
        queue = DeadlineQueue(max_size=10)
        deadline = asyncio.get_running_loop().time() + 60
        futures = [queue.put(i, deadline) for i in range(2)]

        async def broken(items, deadlines):
            raise ValueError("model failed")

        await run_batch(await queue.take(2), broken, queue)
        failures = [type(f.exception()) for f in futures]

        again = [queue.put(i, deadline) for i in range(2)]

        async def replica_died(items, deadlines):
            raise Retry("replica lost")

        await run_batch(await queue.take(2), replica_died, queue)
        requeued = len(queue), [f.done() for f in again]

        async def works(items, deadlines):
            return items

        await run_batch(await queue.take(2), works, queue)
        return failures, requeued, [f.result() for f in again]

    failures, requeued, results = asyncio.run(scenario())
    assert failures == [ValueError, ValueError]
    assert requeued == (2, [False, False])  # back in the queue, callers still waiting
    assert results == [0, 1]


def test_a_cancelled_batch_leaves_no_waiter_hanging():
    async def scenario():
        queue = DeadlineQueue(max_size=10)
        future = queue.put("x", asyncio.get_running_loop().time() + 60)
        batch = await queue.take(1)

        async def forever(items, deadlines):
            await asyncio.sleep(60)
            return items

        worker = asyncio.ensure_future(run_batch(batch, forever, queue))
        await asyncio.sleep(0.01)
        worker.cancel()
        with pytest.raises(RuntimeError, match="cancelled"):
            await asyncio.wait_for(future, 1.0)

    asyncio.run(scenario())
