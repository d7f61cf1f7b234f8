"""benchmarks.loadgen.replay against several frontends: each editor's session always goes to the same one."""

import asyncio
import collections

from fastapi import FastAPI

from benchmarks.loadgen.replay import replay, route
from tests.loadgen_http import ok_body, serving
from tests.test_loadgen_replay import request_at


def test_route_splits_numbered_editors_evenly_and_others_stably():
    assert [route(f"editor-{i}", 2) for i in range(6)] == [0, 1, 0, 1, 0, 1]
    assert [route(f"editor-{i}", 3) for i in range(6)] == [0, 1, 2, 0, 1, 2]
    assert all(route(f"editor-{i}", 1) == 0 for i in range(6))
    # Any other name: the same frontend every time, within range, and not all names on one frontend.
    names = [f"user{i}" for i in range(40)]
    assert [route(n, 3) for n in names] == [route(n, 3) for n in names]
    assert set(route(n, 3) for n in names) == {0, 1, 2}


def frontend(name: str, seen: collections.Counter) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/completions")
    async def complete(body: dict) -> dict:
        seen[(name, body["user"])] += 1
        return ok_body()

    return app


def test_replay_sends_each_editor_to_one_of_two_real_frontends():
    seen: collections.Counter = collections.Counter()
    trace = [request_at(0.01 * i, f"editor-{i % 4}") for i in range(16)]
    with serving(frontend("a", seen)) as a, serving(frontend("b", seen)) as b:
        outcomes = asyncio.run(replay([a, b], trace, timeout_s=2.0))
    assert all(o.answered for o in outcomes)
    assert [o.frontend for o in outcomes] == [i % 2 for i in range(4)] * 4
    # editor-0 and editor-2 only ever reached a; editor-1 and editor-3 only b.
    assert seen == {("a", "editor-0"): 4, ("a", "editor-2"): 4, ("b", "editor-1"): 4, ("b", "editor-3"): 4}
