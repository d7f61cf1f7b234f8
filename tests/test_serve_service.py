"""Serving behaviour behind the API, with in-process containers: caches, batching, deadlines, replica loss,
bad container messages and overload."""

import asyncio
import functools
import json
import time

import msgpack

from codecomp.serve import protocol
from codecomp.serve.api.config import ModelConfig
from tests.serve_fakes import EchoRunner, FakeContainer, body, config, running


def test_exact_cache_and_in_flight_sharing(tmp_path):
    async def scenario():
        async with running(config(tmp_path, approx_entries=0), containers=[("echo", "echo-0", 0.05)]) as run:
            together = await asyncio.gather(*(run.client.post("/v1/completions", json=body()) for _ in range(3)))
            again = await run.client.post("/v1/completions", json=body())
            return (
                [r.json()["cache"]["echo"] for r in together],
                again.json()["cache"]["echo"],
                run.fakes[0].core.runner,
            )

    concurrent, later, runner = asyncio.run(scenario())
    assert sorted(concurrent) == ["miss", "shared", "shared"]  # one computation for three identical requests
    assert later == "hit" and sum(runner.batches) == 1


def test_approximate_cache_answers_a_near_identical_context(tmp_path):
    far_back = "".join(f"let v{i} = {i};\n" for i in range(40))

    async def scenario():
        async with running(config(tmp_path, approx_threshold=0.8)) as run:
            first = await run.client.post("/v1/completions", json=body(prefix=far_back + "const total = compute"))
            near = far_back.replace("v3 = 3", "v3 = 4")  # one token differs far before the cursor
            second = await run.client.post("/v1/completions", json=body(prefix=near + "const total = compute"))
            other = await run.client.post("/v1/completions", json=body(prefix=far_back + "const other = compute"))
            return first.json(), second.json(), other.json()

    first, second, other = asyncio.run(scenario())
    assert first["cache"]["echo"] == "miss" and second["cache"]["echo"] == "approx"
    assert second["choices"] == first["choices"]
    assert other["cache"]["echo"] == "miss"  # another current line is never approximated


def test_typing_through_a_candidate_is_answered_from_the_last_answer(tmp_path):
    async def scenario():
        async with running(config(tmp_path, approx_entries=0)) as run:
            first = (await run.client.post("/v1/completions", json=body(prefix="x = compute"))).json()
            typed = (await run.client.post("/v1/completions", json=body(prefix="x = computeet"))).json()
            other_user = (await run.client.post("/v1/completions", json=body(prefix="x = computeet", user="bo"))).json()
            missed = (await run.client.post("/v1/completions", json=body(prefix="x = computeetX"))).json()
            return first, typed, other_user, missed, run.fakes[0].core.runner.batches

    first, typed, other_user, missed, batches = asyncio.run(scenario())
    assert [c["text"] for c in first["choices"]] == ["etupmoc!", "second"]
    assert typed["cache"] == {"echo": "typed"} and [c["text"] for c in typed["choices"]] == ["upmoc!"]
    assert other_user["cache"] == {"echo": "miss"}  # another session, another editor
    assert missed["cache"] == {"echo": "miss"}  # typed what no candidate said
    assert len(batches) == 3


def test_requests_are_batched_under_concurrency(tmp_path):
    async def scenario():
        async with running(config(tmp_path, cache_bytes=0, approx_entries=0), containers=[("echo", "e0", 0.01)]) as run:
            for _ in range(4):  # let AIMD grow the batch size with full batches under the objective
                await asyncio.gather(*(run.client.post("/v1/completions", json=body(prefix=f"x{i}")) for i in range(8)))
            return run.fakes[0].core.runner.batches

    batches = asyncio.run(scenario())
    assert sum(batches) == 32 and max(batches) > 1


def test_a_slow_model_is_answered_without_by_the_deadline(tmp_path):
    async def scenario():
        cfg = config(tmp_path, models=("echo", "slow"), objective_ms=100.0, margin_ms=10.0)
        async with running(cfg, containers=[("echo", "echo-0", 0.0), ("slow", "slow-0", 0.5)]) as run:
            started = time.monotonic()
            response = await run.client.post("/v1/completions", json=body())
            return response.json(), time.monotonic() - started

    answer, elapsed = asyncio.run(scenario())
    assert elapsed < 0.2  # the objective (100 ms) plus test overhead, not the slow model's 500 ms
    assert answer["models"] == {"echo": "ok", "slow": "late"} and answer["degraded"] is True
    assert answer["choices"] and {c["model"] for c in answer["choices"]} == {"echo"}


def test_a_request_may_ask_for_a_shorter_deadline(tmp_path):
    async def scenario():
        async with running(config(tmp_path), containers=[("echo", "echo-0", 0.1)]) as run:
            started = time.monotonic()
            response = await run.client.post("/v1/completions", json={**body(), "deadline_ms": 30})
            return response, time.monotonic() - started

    response, elapsed = asyncio.run(scenario())
    assert response.status_code == 200 and response.json()["models"] == {"echo": "late"}
    assert elapsed < 0.09


def test_a_hung_replica_is_dropped_and_its_batch_goes_to_another(tmp_path):
    async def scenario():
        cfg = config(tmp_path, cache_bytes=0, approx_entries=0, objective_ms=1000.0)
        async with running(cfg, containers=[("echo", "a", 0.0), ("echo", "b", 0.0)]) as run:
            run.fakes[0].silent = True  # replica a swallows its batch and stops beating
            responses = await asyncio.gather(
                *(run.client.post("/v1/completions", json=body(prefix=f"p{i}")) for i in range(6))
            )
            return [r.json()["models"]["echo"] for r in responses], sorted(run.server.dispatcher.replicas)

    statuses, replicas = asyncio.run(scenario())
    assert statuses == ["ok"] * 6  # what went to the hung replica was retried on the live one in time
    assert replicas == [b"b"]


def test_a_token_model_is_asked_only_where_a_token_is_typed(tmp_path):
    async def scenario():
        cfg = config(tmp_path, models=("echo", "token"))
        cfg.models["token"] = ModelConfig(checkpoint="unused", trigger="token")
        async with running(cfg, containers=[("echo", "e", 0.0), ("token", "t", 0.0)]) as run:
            asked = {}
            for prefix in ("let x = fo", "obj.", "ptr->", "std::", "let x = ", "call(", "x;\n"):
                asked[prefix] = (await run.client.post("/v1/completions", json=body(prefix=prefix))).json()["models"]
            return asked

    asked = asyncio.run(scenario())
    assert [p for p, models in asked.items() if "token" in models] == ["let x = fo", "obj.", "ptr->", "std::"]
    assert all(models["echo"] == "ok" for models in asked.values())


def test_a_failing_model_is_reported_not_raised(tmp_path):
    async def scenario():
        async with running(config(tmp_path, models=("echo", "broken")),
                           containers=[("echo", "e", 0.0), ("broken", "b", 0.0)]) as run:  # fmt: skip
            run.fakes[1].core.runner.broken = True
            return (await run.client.post("/v1/completions", json=body())).json()

    answer = asyncio.run(scenario())
    assert answer["models"] == {"echo": "ok", "broken": "error"} and answer["degraded"] is True


def test_overload_sheds_with_503_and_retry_after(tmp_path):
    async def scenario():
        cfg = config(tmp_path, cache_bytes=0, approx_entries=0, max_queue=2, objective_ms=300.0)
        async with running(cfg, containers=[("echo", "e", 0.1)]) as run:
            responses = await asyncio.gather(
                *(run.client.post("/v1/completions", json=body(prefix=f"q{i}")) for i in range(12))
            )
            return responses

    responses = asyncio.run(scenario())
    codes = [r.status_code for r in responses]
    assert 503 in codes and 200 in codes
    shed = next(r for r in responses if r.status_code == 503)
    assert shed.headers["retry-after"] == "1" and "overloaded" in shed.json()["error"]


def test_requests_beyond_the_in_flight_bound_are_shed_at_once(tmp_path):
    async def scenario():
        cfg = config(tmp_path, cache_bytes=0, approx_entries=0, max_in_flight=2, objective_ms=300.0)
        async with running(cfg, containers=[("echo", "e", 0.1)]) as run:
            return await asyncio.gather(
                *(run.client.post("/v1/completions", json=body(prefix=f"i{i}")) for i in range(6))
            )

    responses = asyncio.run(scenario())
    assert sorted(r.status_code for r in responses) == [200, 200, 503, 503, 503, 503]
    assert all("in progress" in r.json()["error"] for r in responses if r.status_code == 503)


def test_a_request_that_waited_past_its_deadline_before_the_handler_is_shed_at_once(tmp_path):
    async def slow_body(payload, delay_s):  # the handler runs only once the whole body is in
        await asyncio.sleep(delay_s)
        yield json.dumps(payload).encode()

    async def scenario():
        async with running(config(tmp_path, cache_bytes=0, approx_entries=0, objective_ms=200.0)) as run:
            post = functools.partial(run.client.post, "/v1/completions", headers={"content-type": "application/json"})
            in_time = await post(content=slow_body(body(prefix="a"), 0.05))
            started = time.monotonic()
            late = await post(content=slow_body(body(prefix="b"), 0.25))  # past the 180 ms the models had
            return in_time, late, time.monotonic() - started, run.fakes[0].core.runner.batches

    in_time, late, elapsed, batches = asyncio.run(scenario())
    assert in_time.status_code == 200 and in_time.json()["models"] == {"echo": "ok"}
    assert in_time.json()["latency_ms"] >= 50  # counted from the arrival, not from the handler
    assert late.status_code == 503 and "waited" in late.json()["error"] and late.headers["retry-after"] == "1"
    assert elapsed < 0.35 and batches == [1]  # refused at once, never computed


def test_a_stalled_event_loop_sheds_nothing_when_no_request_waited(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as run:
            for _ in range(4):  # the loop held up again and again (a start-up, collections), with nothing queued
                time.sleep(0.05)
                await asyncio.sleep(0.002)
            return await run.client.post("/v1/completions", json=body())

    response = asyncio.run(scenario())
    assert response.status_code == 200 and response.json()["models"] == {"echo": "ok"}


def test_requests_that_could_not_be_served_in_time_are_refused_up_front(tmp_path):
    async def scenario():
        cfg = config(tmp_path, cache_bytes=0, approx_entries=0, max_queue=64, objective_ms=300.0)
        async with running(cfg, containers=[("echo", "e", 0.1)]) as run:
            run.server.dispatcher.replicas[b"e"].batch_latency_s = 0.1  # as measured: 10 requests a second
            run.server.dispatcher.replicas[b"e"].aimd.fixed = True  # one at a time
            started = time.monotonic()
            responses = await asyncio.gather(
                *(run.client.post("/v1/completions", json=body(prefix=f"r{i}")) for i in range(10))
            )
            return responses, time.monotonic() - started

    responses, elapsed = asyncio.run(scenario())
    ok = [r for r in responses if r.status_code == 200 and r.json()["models"]["echo"] == "ok"]
    shed = [r for r in responses if r.status_code == 503]
    # About 280 ms of work fits in the deadline: a few are answered, most are refused at once.
    assert 1 <= len(ok) <= 3 and len(shed) >= 5 and {r.status_code for r in responses} == {200, 503}
    assert all("no model could take" in r.json()["error"] for r in shed)
    assert elapsed < 0.6


def test_bad_container_messages_are_dropped_and_the_frontend_keeps_serving(tmp_path):
    async def scenario():
        async with running(config(tmp_path)) as run:
            rogue = run.server.transport.connect(b"rogue")
            await rogue.send(msgpack.packb({"v": 1, "type": "hello", "model": "echo"}))  # no family, no version
            await rogue.send(msgpack.packb({"v": 1, "type": "hello", "model": ["echo"], "family": "f", "version": "v1",
                                            "pid": 1, "host": "h"}))  # fmt: skip
            hello = protocol.Hello(model="echo", family="fake", version="v2", pid=1, host="h")  # another version
            await rogue.send(protocol.pack(hello))
            await rogue.send(protocol.pack(protocol.Hello(model="nope", family="fake", version="v1", pid=1, host="h")))
            await rogue.send(msgpack.packb({"v": 1, "type": "result", "batch": [1], "results": []}))
            await rogue.send(b"\xc1 not msgpack")
            await asyncio.sleep(0.05)
            answer = (await run.client.post("/v1/completions", json=body())).json()
            late_joiner = FakeContainer(run.server.transport, b"echo-1", "echo", EchoRunner())
            await late_joiner.start()
            await asyncio.sleep(0.05)
            replicas = sorted(run.server.dispatcher.replicas)
            late_joiner.stop()
            return answer, replicas

    answer, replicas = asyncio.run(scenario())
    assert answer["models"] == {"echo": "ok"}
    assert replicas == [b"echo-0", b"echo-1"]  # the rogue never joined; a proper container still can


def test_a_request_no_model_applies_to_gets_an_empty_answer(tmp_path):
    async def scenario():
        cfg = config(tmp_path, models=("token",))
        cfg.models["token"] = ModelConfig(checkpoint="unused", trigger="token")
        async with running(cfg, containers=[("token", "t", 0.0)]) as run:
            return await run.client.post("/v1/completions", json=body(prefix="let x = "))

    response = asyncio.run(scenario())
    assert response.status_code == 200
    assert response.json()["choices"] == [] and response.json()["models"] == {} and not response.json()["degraded"]


def test_requests_expire_in_the_queue_while_the_only_replica_is_busy(tmp_path):
    async def scenario():
        cfg = config(tmp_path, cache_bytes=0, approx_entries=0, objective_ms=200.0)
        async with running(cfg, containers=[("echo", "e", 0.35)]) as run:
            first = asyncio.ensure_future(run.client.post("/v1/completions", json=body(prefix="one")))
            await asyncio.sleep(0.02)
            started = time.monotonic()
            second = await run.client.post("/v1/completions", json=body(prefix="two"))
            return (await first).json(), second, time.monotonic() - started

    first, second, elapsed = asyncio.run(scenario())
    assert first["models"] == {"echo": "late"}  # computing at its deadline
    assert second.status_code == 503 and elapsed < 0.3  # expired in the queue at its deadline: shed


def test_with_no_live_replica_requests_are_shed_at_once(tmp_path):
    async def scenario():
        async with running(config(tmp_path), containers=[]) as run:
            started = time.monotonic()
            response = await run.client.post("/v1/completions", json=body())
            return response, time.monotonic() - started

    response, elapsed = asyncio.run(scenario())
    assert response.status_code == 503 and elapsed < 0.1


def _served_by(fakes):
    """Which replica computed each user's requests: user -> set of replica identities."""
    where = {}
    for fake in fakes:
        for session in fake.core.runner.sessions:
            where.setdefault(session.split("\0")[0], set()).add(fake.dealer.identity)
    return where


def test_a_session_goes_to_the_replica_holding_its_state_and_moves_only_when_that_one_dies(tmp_path):
    users = [f"user{i}" for i in range(8)]

    async def type_a_little(run, keystrokes):  # each user types, one request per keystroke, no load
        for user in users:
            for n in range(keystrokes):
                response = await run.client.post("/v1/completions", json=body(prefix="x = comp" + "u" * n, user=user))
                assert response.json()["models"] == {"echo": "ok"}

    async def scenario():
        cfg = config(tmp_path, cache_bytes=0, approx_entries=0, typed_sessions=0, objective_ms=1000.0)
        async with running(cfg, containers=[("echo", "a", 0.0), ("echo", "b", 0.0)]) as run:
            await type_a_little(run, 4)
            before = _served_by(run.fakes)
            run.fakes[0].silent = True  # replica a hangs and is dropped
            while b"a" in run.server.dispatcher.replicas:
                await asyncio.sleep(0.02)
            for fake in run.fakes:
                fake.core.runner.sessions.clear()
            await type_a_little(run, 2)
            after_loss = _served_by(run.fakes)
            newcomer = FakeContainer(run.server.transport, b"c", "echo", EchoRunner())
            await newcomer.start()
            while b"c" not in run.server.dispatcher.replicas:
                await asyncio.sleep(0.01)
            run.fakes.append(newcomer)
            for fake in run.fakes:
                fake.core.runner.sessions.clear()
            await type_a_little(run, 2)
            return before, after_loss, _served_by(run.fakes)

    before, after_loss, after_join = asyncio.run(scenario())
    assert all(len(replicas) == 1 for replicas in before.values())  # every keystroke of a session: one replica
    assert set().union(*before.values()) == {b"a", b"b"}  # sessions spread over both
    assert all(replicas == {b"b"} for replicas in after_loss.values())  # a's sessions re-homed on b
    assert all(len(replicas) == 1 for replicas in after_join.values())
    moved = {user for user, replicas in after_join.items() if replicas != after_loss[user]}
    assert moved and all(after_join[user] == {b"c"} for user in moved)  # the newcomer takes a share; none else moves


def test_an_idle_replica_takes_requests_whose_home_is_busy(tmp_path):
    async def scenario():
        cfg = config(tmp_path, cache_bytes=0, approx_entries=0, typed_sessions=0, objective_ms=1000.0)
        async with running(cfg, containers=[("echo", "a", 0.15), ("echo", "b", 0.15)]) as run:
            for i in range(16):  # find users whose sessions live on replica a
                await run.client.post("/v1/completions", json=body(user=f"u{i}"))
            homed_at_a = [user for user, replicas in _served_by(run.fakes).items() if replicas == {b"a"}][:3]
            for fake in run.fakes:
                fake.core.runner.sessions.clear()
            started = time.monotonic()
            requests = [body(prefix=f"y{i}", user=user) for i, user in enumerate(homed_at_a)]
            responses = await asyncio.gather(*(run.client.post("/v1/completions", json=r) for r in requests))
            return responses, time.monotonic() - started, _served_by(run.fakes)

    responses, elapsed, served = asyncio.run(scenario())
    assert all(r.json()["models"] == {"echo": "ok"} for r in responses)
    assert any(b"b" in replicas for replicas in served.values())  # b filled in while a was busy
    assert elapsed < 0.4  # not three batches one after another on a (0.45 s)
