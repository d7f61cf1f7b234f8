"""Continuous batching in serving: the container core joins batches mid-decode and answers each as its last row
leaves; the frontend sends a line model requests while others decode (asyncio, in-process transport); and a real
container process does the same over ZeroMQ."""

import asyncio
import subprocess
import sys
import time
import types

import pytest
import torch
import zmq

from codecomp import checkpoint
from codecomp.data.char_vocab import EOF_ID
from codecomp.inference.char_lstm import CharLSTMCompleter
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig
from codecomp.serve import protocol
from codecomp.serve.container.core import ContainerCore
from codecomp.serve.container.runners import StepwiseRunner, runner_for
from codecomp.serve.dispatch.batching import AIMDBatchSize, DeadlineQueue, feed_continuously
from codecomp.serve.dispatch.dispatcher import BatchingConfig, Dispatcher, ModelEndpoint, Query
from codecomp.serve.dispatch.metrics import Metrics
from codecomp.serve.dispatch.transport import InProcessRouter
from codecomp.serve.protocol import Options, WireCandidate, WireRequest
from tests.test_checkpoint import CHAR_CONFIG

FAR = 60_000.0  # ms: a budget no test reaches


def endless_network() -> CharLSTM:
    """A tiny random Char-LSTM that never ends a line: every row decodes to its byte bound."""
    torch.manual_seed(0)
    network = CharLSTM(CharLSTMConfig(**CHAR_CONFIG))
    network.head.bias.data[[ord("\n"), EOF_ID]] = -1e9
    return network


def predict(batch, prefixes, options, budget_ms=FAR):
    requests = [WireRequest(prefix, b"", "javascript", "", budget_ms) for prefix in prefixes]
    return protocol.pack(protocol.Predict(batch=batch, requests=requests, options=options))


def test_the_container_joins_batches_mid_decode_and_answers_each_as_its_last_row_leaves():
    core = ContainerCore(runner_for(CharLSTMCompleter(endless_network()), "v1"), "char", "v1")
    assert isinstance(core.runner, StepwiseRunner)
    long, short = Options(k=1, beam=2, max_chars=20), Options(k=1, beam=2, max_chars=4)
    now = time.monotonic()
    assert core.receive(predict(1, [b"const a = "], long), now) is None and core.busy  # joined, not answered
    answered = {}
    for step in range(1, 40):
        if step == 4:  # three steps in, two more batches arrive: one under other options, one of two requests
            assert core.receive(predict(2, [b"let b = "], short), time.monotonic()) is None
            assert core.receive(predict(3, [b"var c = ", b"x = "], long), time.monotonic()) is None
        for reply in core.step():
            answered[protocol.unpack(reply).batch] = (step, protocol.unpack(reply))
        if not core.busy:
            break
    # Batch 2 left after its own 4 steps, batch 1 after 20, batch 3 after its 20: each at once, whatever the others.
    assert {batch: step for batch, (step, _) in answered.items()} == {2: 7, 1: 20, 3: 23}
    assert [len(c.text) for result in answered[3][1].results for c in result] == [20, 20]
    alone = ContainerCore(runner_for(CharLSTMCompleter(endless_network()), "v1"), "char", "v1")
    for batch, prefixes, options in ((1, [b"const a = "], long), (3, [b"var c = ", b"x = "], long)):
        by_itself = protocol.unpack(alone.handle(predict(batch, prefixes, options), time.monotonic()))
        assert answered[batch][1].results == by_itself.results  # joining mid-decode changed nothing
        assert answered[batch][1].cut_short == [False] * len(prefixes)  # the byte bound, not the deadline


class CountdownRunner:
    """A line model stand-in that decodes stepwise: a row needs one step per byte of its prefix, and its answer is
    its prefix reversed (cut at its deadline); a prefix b"boom" makes its decoding raise."""

    family, version = "fake", "v1"

    def predict(self, requests, deadlines, options):
        return [[WireCandidate(r.prefix[::-1], -1.0)] for r in requests]

    def decoding(self, options):
        return Countdown()


class Countdown:
    def __init__(self):
        self.rows, self.done, self.ids = {}, [], iter(range(1_000_000))

    @property
    def live(self):
        return len(self.rows)

    def add(self, requests, deadlines):
        ids = [next(self.ids) for _ in requests]
        for row, request, deadline in zip(ids, requests, deadlines, strict=True):
            self.rows[row] = [request.prefix, 0, deadline]
        return ids

    def step(self):
        if any(prefix == b"boom" for prefix, _, _ in self.rows.values()):
            raise RuntimeError("model exploded")
        now = time.monotonic()
        for row, entry in list(self.rows.items()):
            prefix, done, deadline = entry
            if deadline <= now or done + 1 == len(prefix):
                complete = deadline > now
                text = prefix[::-1][: done + complete]
                self.done.append((row, [WireCandidate(text, -1.0, complete)]))
                del self.rows[row]
            else:
                entry[1] += 1

    def pop_finished(self):
        done, self.done = self.done, []
        return done


def test_a_failing_decoding_fails_its_own_batches_and_the_container_goes_on():
    core = ContainerCore(CountdownRunner(), "m", "v1")
    core.receive(predict(1, [b"abcdef"], Options(k=1)), time.monotonic())
    core.receive(predict(2, [b"boom"], Options(k=2)), time.monotonic())  # its own decoding (other options)
    core.receive(predict(3, [b"xyz", b""], Options(k=2)), time.monotonic())  # joins the failing one
    replies = [protocol.unpack(r) for r in core.step()]
    assert sorted((type(r).__name__, r.batch) for r in replies) == [("Error", 2), ("Error", 3)]
    assert all("RuntimeError: model exploded" in r.message for r in replies)
    while core.busy:
        replies += [protocol.unpack(r) for r in core.step()]
    assert replies[-1].batch == 1 and replies[-1].results == [[WireCandidate(b"fedcba", -1.0)]]
    empty = protocol.unpack(core.handle(predict(4, [], Options()), time.monotonic()))
    assert isinstance(empty, protocol.Result) and empty.results == []


async def stepping_container(router, identity, runner, step_s=0.005):
    """A container's loop over an in-process dealer: frames join as they arrive, a step every `step_s`."""
    dealer = router.connect(identity)
    core = ContainerCore(runner, "m", "v1")
    await dealer.send(core.hello())

    async def receive():
        while True:
            reply = core.receive(await dealer.receive(), time.monotonic())
            if reply is not None:
                await dealer.send(reply)

    async def step():
        while True:
            await asyncio.sleep(step_s)
            for reply in core.step():
                await dealer.send(reply)
            await dealer.send(core.hello(protocol.Heartbeat))

    return [asyncio.ensure_future(receive()), asyncio.ensure_future(step())]


@pytest.mark.parametrize("continuous", [True, False])
def test_a_continuous_frontend_sends_a_request_while_another_decodes_and_gets_it_back_first(continuous):
    async def scenario():
        router, metrics = InProcessRouter(), Metrics()
        batching = BatchingConfig(objective_ms=1000, max_batch=8, fixed=True, continuous=continuous)
        endpoint = ModelEndpoint("m", batching, Options(), Options(k=1), metrics)
        dispatcher = Dispatcher(router, {"m": endpoint}, metrics)
        await dispatcher.start()
        tasks = await stepping_container(router, b"m-0", CountdownRunner())
        while not endpoint.live_replicas:
            await asyncio.sleep(0.005)
        order = []
        deadline = time.monotonic() + 5
        long = endpoint.submit(Query(b"x" * 40, b"", "javascript", "ada"), deadline)  # 40 steps: 200 ms
        long.add_done_callback(lambda _: order.append("long"))
        await asyncio.sleep(0.03)
        sent = time.monotonic()
        short = endpoint.submit(Query(b"abc", b"", "javascript", "bo"), deadline)  # 3 steps
        short.add_done_callback(lambda _: order.append("short"))
        answer = await short
        took = time.monotonic() - sent
        await long
        for task in tasks:
            task.cancel()
        await dispatcher.stop()
        return order, answer, took

    order, answer, took = asyncio.run(scenario())
    assert answer.candidates == [WireCandidate(b"cba", -1.0)] and not answer.cut_short
    if continuous:  # it joined at the next step and left after its own 3: no wait for the long one
        assert order == ["short", "long"] and took < 0.15
    else:  # batch at a time: it waited for the long batch to come back first
        assert order == ["long", "short"] and took > 0.1


def test_continuous_feeding_keeps_at_most_the_batch_size_in_flight_and_refills_a_row_as_it_frees():
    async def scenario():
        queue = DeadlineQueue(max_size=10)
        worker = types.SimpleNamespace(alive=True, busy=False, aimd=AIMDBatchSize(1.0, max_size=2, fixed=True))
        gates, in_flight, recorded = {}, [], []

        async def run(items, deadlines):
            [item] = items  # each request a batch of its own
            in_flight.append(item)
            gates[item] = asyncio.Event()
            await gates[item].wait()
            in_flight.remove(item)
            return [item.upper()]

        feeding = asyncio.ensure_future(feed_continuously(queue, worker, run, lambda n, s: recorded.append(n)))
        futures = {name: queue.put(name, time.monotonic() + 10) for name in "abc"}
        await asyncio.sleep(0.01)
        full = (sorted(in_flight), worker.busy, len(queue))
        gates["b"].set()
        await futures["b"]
        await asyncio.sleep(0.01)
        refilled = (sorted(in_flight), len(queue))
        gates["a"].set()
        gates["c"].set()
        answers = [await futures[name] for name in "abc"]
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
        return full, refilled, answers, recorded

    full, refilled, answers, recorded = asyncio.run(scenario())
    assert full == (["a", "b"], True, 1)  # two rows in flight (the bound), the third waits in the queue
    assert refilled == (["a", "c"], 0)  # sent as soon as b left, while a still runs
    assert answers == ["A", "B", "C"] and sorted(recorded) == [1, 2, 2]  # rows in flight as each left


def endless_checkpoint(path):
    """A checkpoint of `endless_network` (the format `codecomp.checkpoint.load` reads)."""
    saved = {"state_dict": {f"model.{k}": v for k, v in endless_network().state_dict().items()}}
    checkpoint.describe(saved, "char_lstm", CHAR_CONFIG, ["cpp", "javascript"], {"kind": "bytes", "size": 260})
    torch.save(saved, path)


def test_a_real_container_joins_a_request_mid_decode_and_answers_it_first(tmp_path):
    endless_checkpoint(tmp_path / "endless.ckpt")
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    command = [sys.executable, "-m", "codecomp.serve.container", "--frontend", f"tcp://127.0.0.1:{port}",
               "--checkpoint", str(tmp_path / "endless.ckpt"), "--model", "char", "--warmup-batch", "0"]  # fmt: skip
    process = subprocess.Popen(command)

    def next_message(timeout_s=60.0):
        """The next message from the container other than a heartbeat, and when it came."""
        give_up = time.monotonic() + timeout_s
        while router.poll(max(1, int((give_up - time.monotonic()) * 1000))):
            peer, frame = router.recv_multipart()
            message = protocol.unpack(frame)
            if not isinstance(message, protocol.Heartbeat):
                return peer, message, time.monotonic()
        raise TimeoutError("the container said nothing")

    try:
        peer, hello, _ = next_message()
        assert isinstance(hello, protocol.Hello) and hello.family == "char_lstm"
        long, short = Options(k=1, beam=2, max_chars=3000), Options(k=1, beam=2, max_chars=3)
        router.send_multipart([peer, predict(1, [b"const total = "], long)])
        assert not router.poll(100)  # still decoding 3000 bytes a tenth of a second later (no answer yet)
        router.send_multipart([peer, predict(2, [b"let b = "], short)])
        _, first, first_at = next_message()
        _, second, second_at = next_message()
        assert (first.batch, second.batch) == (2, 1)  # joined the long one mid-decode, and left first
        assert [len(c.text) for c in first.results[0]] == [3] and [len(c.text) for c in second.results[0]] == [3000]
        assert second_at - first_at > 0.01 and first.compute_ms < second.compute_ms
        router.send_multipart([peer, protocol.pack(protocol.Shutdown())])
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        router.close()
        context.term()
