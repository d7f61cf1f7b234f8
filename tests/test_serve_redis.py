"""Selection state shared through Redis: a real `redis-server` on a free loopback port (skipped where it is not
installed), the store alone, then `codecomp-serve` frontends as real processes sharing it."""

import asyncio
import os
import signal
import time

import httpx
import pytest

from benchmarks.loadgen.launch import ServerProcess
from benchmarks.loadgen.redis_process import NOT_INSTALLED, RedisProcess, installed
from codecomp.serve.protocol import WireCandidate
from codecomp.serve.service.correction import Correction, features
from codecomp.serve.service.feedback import Event
from codecomp.serve.service.learning import FeedbackLearner, Shown
from codecomp.serve.service.redis_store import LocalBuffer, RedisStateStore, shown_from_json, shown_to_json
from codecomp.serve.service.selection import GLOBAL, Exp4
from codecomp.serve.service.state_store import StoreConfig, StoreUnavailable
from tests.test_serve_processes import overrides


@pytest.fixture
def redis_server(tmp_path):
    if not installed():
        pytest.skip(NOT_INSTALLED)
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    if server.running():
        server.kill()


ADA = ("ada", "javascript")


def cands(*pairs):
    return [WireCandidate(text.encode(), lp) for text, lp in pairs]


def learner() -> FeedbackLearner:
    return FeedbackLearner(Exp4(), Correction(), kept=100, deferred=True)


def shown(policy) -> Shown:
    ranking = policy.rank(ADA, ["char", "tree"], {"char": cands(("a", 0.0)), "tree": cands(("b", 0.0))})
    return Shown("ada", "javascript", "s", ranking, features(ranking, {}, b"", b""))


def store(url: str, path, **settings) -> RedisStateStore:
    return RedisStateStore(StoreConfig(backend="redis", redis_url=url, **settings), str(path))


async def until(condition, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.02)


def test_a_completion_round_trips_through_json():
    original = shown(Exp4())
    again = shown_from_json(shown_to_json(original))
    assert again.ranking == original.ranking and again.features == original.features and again.user == "ada"


def test_two_frontends_share_lessons_and_a_completion_teaches_once(redis_server, tmp_path):
    async def scenario():
        a, b = store(redis_server.url, tmp_path / "a.sqlite"), store(redis_server.url, tmp_path / "b.sqlite")
        learn_a, learn_b = learner(), learner()
        a.load(learn_a)
        b.load(learn_b)
        await a.start()
        await b.start()
        first = shown(learn_a.policy)
        learn_a.shown("c1", first)
        a.remember("c1", first)
        await asyncio.sleep(0.2)  # remembering is not waited on
        # The select reaches frontend b, which never served c1.
        recalled = await b.recall("c1")
        assert recalled is not None and recalled.ranking == first.ranking
        learn_b.adopt("c1", recalled)
        _, changed = learn_b.event("select", "c1", 1)
        assert await b.record(Event("select", "c1", 1, "ada", "javascript"), changed, learn_b.take_pending()) == 1
        await until(lambda: learn_a.updates == 1 and learn_b.updates == 1)
        # A dismiss of the same completion through a: stored, not taught again.
        learn_a.event("dismiss", "c1", None)
        assert await a.record(Event("dismiss", "c1", None, "ada", "javascript"), [], learn_a.take_pending()) == 2
        await asyncio.sleep(0.3)
        assert learn_a.updates == learn_b.updates == 1
        assert learn_a.policy.weights(ADA) == learn_b.policy.weights(ADA)
        assert learn_a.correction is not None and learn_b.correction is not None
        assert learn_a.correction.table[ADA] == learn_b.correction.table[ADA]
        assert [e.type for e in await a.events()] == ["select", "dismiss"]
        await a.close()
        await b.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))  # a hang fails, it does not stall the suite


def test_concurrent_updates_from_two_frontends_lose_nothing(redis_server, tmp_path):
    async def scenario():
        stores = [store(redis_server.url, tmp_path / f"{i}.sqlite") for i in range(2)]
        learners = [learner(), learner()]
        for s, one in zip(stores, learners, strict=True):
            s.load(one)
            await s.start()

        async def teach(s, one, tag):
            for i in range(40):
                one.shown(f"{tag}{i}", shown(one.policy))
                _, changed = one.event("select" if i % 3 else "dismiss", f"{tag}{i}", 0 if i % 3 else None)
                await s.record(Event("select", f"{tag}{i}", 0), changed, one.take_pending())

        await asyncio.gather(teach(stores[0], learners[0], "a"), teach(stores[1], learners[1], "b"))
        await until(lambda: all(one.updates == 80 for one in learners))
        # Same lessons in the same order: the same weights in both, and a fresh frontend catches up to them.
        late = learner()
        fresh = store(redis_server.url, tmp_path / "late.sqlite")
        fresh.load(late)
        await fresh.start()
        assert late.updates == 80
        for one in (learners[1], late):
            assert one.policy.state == learners[0].policy.state
            assert one.correction is not None and learners[0].correction is not None
            assert one.correction.table == learners[0].correction.table
        assert learners[0].policy.weights((GLOBAL, "javascript")) != {"char": 0.5, "tree": 0.5}
        for s in (*stores, fresh):
            await s.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))  # a hang fails, it does not stall the suite


def test_snapshots_bound_the_stream_and_late_frontends_start_from_them(redis_server, tmp_path):
    async def scenario():
        a = store(redis_server.url, tmp_path / "a.sqlite", snapshot_every=5)
        one = learner()
        a.load(one)
        await a.start()
        for i in range(12):
            one.shown(f"c{i}", shown(one.policy))
            _, changed = one.event("select" if i % 2 else "dismiss", f"c{i}", 0 if i % 2 else None)
            await a.record(None, changed, one.take_pending())
        await until(lambda: one.updates == 12)
        client = redis_server.client()
        assert int(client.hget("codecomp:snapshot", "updates")) == 10
        assert client.xlen("codecomp:lessons") < 12  # those before the snapshot at 5 were dropped
        late = learner()
        b = store(redis_server.url, tmp_path / "b.sqlite", snapshot_every=5)
        b.load(late)
        await b.start()  # from the snapshot at 10, then the 2 lessons after it
        assert late.updates == 12 and late.policy.state == one.policy.state
        # A frontend that fell behind what was dropped reloads the snapshot rather than skip lessons.
        late.policy.state.clear()
        late.updates, b.seq, b.last_id = 0, 0, "1-0"
        while await b._read(block_ms=None):
            pass
        assert late.updates == 12 and late.policy.state == one.policy.state
        await a.close()
        await b.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))  # a hang fails, it does not stall the suite


def test_while_redis_is_down_events_wait_in_a_durable_bounded_buffer(redis_server, tmp_path):
    async def scenario():
        s = store(redis_server.url, tmp_path / "a.sqlite", buffer=3)
        one = learner()
        s.load(one)
        await s.start()
        assert s.health() == (False, 0)
        redis_server.kill()
        for i in range(3):
            one.shown(f"c{i}", shown(one.policy))
            _, changed = one.event("select", f"c{i}", 0)
            assert await s.record(Event("select", f"c{i}", 0), changed, one.take_pending()) == 0  # buffered
        assert s.health() == (True, 3)
        with pytest.raises(StoreUnavailable):  # bounded: refused (503), never acknowledged and dropped
            await s.record(Event("view", "c9", None), [], [])
        assert LocalBuffer(tmp_path / "a.sqlite", 3).size == 3  # on disk: a killed frontend keeps them
        redis_server.start()  # the same port and append-only file
        await until(lambda: s.health() == (False, 0) and one.updates == 3, timeout_s=10)
        assert [e.completion_id for e in await s.events()] == ["c0", "c1", "c2"]
        await s.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))  # a hang fails, it does not stall the suite


# Real processes: frontends with their own containers, sharing one Redis.


def frontend(tmp_path, name, checkpoints, redis_url):
    folder = tmp_path / name
    folder.mkdir()
    # Without learning from typing, so that the events (what these tests share and count) teach the policy.
    return ServerProcess([*overrides(folder, *checkpoints), "models.char.replicas=1", "store.backend=redis",
                          f"store.redis_url={redis_url}", "service.selection.policy=exp4",
                          "service.selection.learn_from_typing=false"])  # fmt: skip


def teach_tree(client, url, times=12, user="ada"):
    """Take the tree model's choice whenever there is one; returns the completions taught."""
    taught = []
    for i in range(times):
        prefix = f"var total{i} = add(1, 2);\nconsole.log(tot"
        answer = client.post(
            f"{url}/v1/completions",
            json={"language": "javascript", "user": user, "segments": {"prefix": prefix, "suffix": ");\n"}},
        ).json()
        tree = [c["index"] for c in answer["choices"] if c["model"] == "tree"]
        if tree:
            event = {"type": "select", "completion_id": answer["id"], "choice_index": tree[0]}
            assert client.post(f"{url}/v1/events", json=event).status_code == 200
            taught.append(answer["id"])
    return taught


def selection(client, url):
    return client.get(f"{url}/v1/models").json()["selection"]


def wait_for(condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)


def test_two_frontends_share_what_they_learn_and_a_killed_one_loses_nothing(tmp_path, redis_server, checkpoints):
    with (
        frontend(tmp_path, "a", checkpoints, redis_server.url) as a,
        frontend(tmp_path, "b", checkpoints, redis_server.url) as b,
        httpx.Client(timeout=5) as client,
    ):
        assert client.get(f"{b.url}/v1/health").json()["store"] == {"backend": "redis", "status": "ok", "buffered": 0}
        taught = teach_tree(client, a.url)
        assert len(taught) >= 3
        started = time.monotonic()
        wait_for(lambda: selection(client, b.url)["updates"] == len(taught))
        assert time.monotonic() - started < 1.5  # b ranks with a's feedback within about a second
        weights = selection(client, b.url)["population_weights"]["javascript"]
        assert weights["tree"] > weights["char"]
        # A completion a served, its event sent to b: known there.
        segments = {"prefix": "var t = add(1, 2);\nconsole.log(t", "suffix": ");\n"}
        answer = client.post(
            f"{a.url}/v1/completions", json={"language": "javascript", "user": "grace", "segments": segments}
        ).json()
        time.sleep(0.2)
        dismissed = client.post(f"{b.url}/v1/events", json={"type": "dismiss", "completion_id": answer["id"]})
        assert dismissed.json()["known"] is True
        expected = len(taught) + bool(answer["choices"])
        wait_for(lambda: selection(client, a.url)["updates"] == expected)
        os.kill(a.process.pid, signal.SIGKILL)  # what a acknowledged is in Redis already
        a.process.wait(10)
        assert redis_server.client().xlen("codecomp:events") == len(taught) + 1
        final = selection(client, b.url)["population_weights"]["javascript"]
    with frontend(tmp_path, "c", checkpoints, redis_server.url) as c, httpx.Client(timeout=5) as client:
        assert selection(client, c.url)["population_weights"]["javascript"] == pytest.approx(final)


def test_redis_killed_and_restarted_while_serving(tmp_path, redis_server, checkpoints):
    with frontend(tmp_path, "a", checkpoints, redis_server.url) as a, httpx.Client(timeout=5) as client:
        before = teach_tree(client, a.url, times=4)
        redis_server.kill()
        during = teach_tree(client, a.url, times=8)  # completions go on; events acknowledged, buffered
        assert during
        health = client.get(f"{a.url}/v1/health").json()["store"]
        assert health == {"backend": "redis", "status": "degraded", "buffered": len(during)}
        assert "codecomp_store_degraded 1.0" in client.get(f"{a.url}/metrics").text
        redis_server.start()
        wait_for(lambda: client.get(f"{a.url}/v1/health").json()["store"]["status"] == "ok")
        wait_for(lambda: selection(client, a.url)["updates"] == len(before) + len(during))
        assert redis_server.client().xlen("codecomp:events") == len(before) + len(during)
        assert "codecomp_store_degraded 0.0" in client.get(f"{a.url}/metrics").text
