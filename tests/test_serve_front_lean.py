"""The lean front: the completion fast path answers as the FastAPI route does, the approximate caches' sketch
is made once and reused, and state writes in flight are coalesced."""

import asyncio
import json

import pytest

from codecomp.serve.api import app as app_module
from codecomp.serve.api import completions
from codecomp.serve.service.approx_cache import ContextSketcher
from codecomp.serve.service.writes import StateWriter
from tests.serve_fakes import body, config, running

VOLATILE = ("id", "latency_ms")


def _stable(response):
    answer = response.json()
    return {key: value for key, value in answer.items() if key not in VOLATILE}


def test_the_fast_path_answers_what_the_route_answers(tmp_path, monkeypatch):
    """The same bodies through the fast path (application/json) and through FastAPI's route (a +json type the fast
    path leaves to it), caches off so that both compute: the same answers."""
    seen = []
    real_reply = completions.reply

    async def counting(server, parsed, client):
        seen.append(type(parsed).__name__)
        return await real_reply(server, parsed, client)

    monkeypatch.setattr(completions, "reply", counting)  # the fast path's
    monkeypatch.setattr(app_module, "reply", counting)  # the route's
    cases = [
        body(),
        body(prefix="foo(", suffix="x);\n", user=""),  # no user: the client's address and agent name it
        {"document": "let é = 1;\nlet b = ", "cursor": 20, "language": "js", "deadline_ms": 150},
        {"segments": {"prefix": "int main() {", "filepath": "src/a.cc", "declarations": []}},  # by extension
        {"language": "cobol", "segments": {"prefix": "x"}},  # no model: 200 and the reason
    ]

    async def scenario():
        answers = []
        async with running(config(tmp_path, cache_bytes=0, approx_entries=0, typed_sessions=0)) as run:
            for case in cases:
                raw = json.dumps(case)
                fast = await run.client.post(
                    "/v1/completions", content=raw, headers={"content-type": "application/json; charset=utf-8"}
                )
                slow = await run.client.post("/v1/completions", content=raw,
                                             headers={"content-type": "application/vnd.codecomp+json"})  # fmt: skip
                answers.append((fast, slow))
        return answers

    for case, (fast, slow) in zip(cases, asyncio.run(scenario()), strict=True):
        assert fast.status_code == slow.status_code == 200, (case, fast.text, slow.text)
        assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
        assert _stable(fast) == _stable(slow), case
    assert seen == ["FastBody", "CompletionBody"] * len(cases)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b'{"segments": {"prefix": "a\\ud800"}, "language": "js"}', 400),  # a lone surrogate: msgspec refuses
        (b'{"document": "abc", "cursor": 9, "language": "js"}', 422),  # decoded, then refused by the checks
        (b'{"cursor": 1.0, "document": "abc"}', 422),  # a float for an integer
        (b'{"segments": {"prefix": "x"}, "deadline_ms": 0}', 422),
        (b"[1, 2]", 422),
        (b"{nope", 400),
    ],
)
def test_bodies_the_fast_path_does_not_take_get_the_routes_errors(tmp_path, raw, status):
    async def scenario():
        async with running(config(tmp_path)) as run:
            return await run.client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})

    response = asyncio.run(scenario())
    assert response.status_code == status and "error" in response.json()


def test_a_sketch_is_reused_for_the_same_context_before_the_line_and_is_the_same_as_a_fresh_one():
    before = b"".join(b"let v%d = f(v%d);\n" % (i, i) for i in range(30))
    sparse = b"x" + b" " * 3000 + b"".join(b"a%d \n" % i for i in range(40))  # few tokens in the last 512 bytes
    reused = ContextSketcher()
    for context in (before, sparse):
        first = reused.sketch("javascript", context + b"  return v")
        again = reused.sketch("javascript", context + b"  return v1")  # same context, the line typed on
        fresh = ContextSketcher(remembered=0).sketch("javascript", context + b"  return v1")
        assert again.shingles is first.shingles and again == fresh
        assert again.bucket != first.bucket  # the current line keys the bucket
    long_tail = ContextSketcher()
    long_tail._short_tail = long_tail._tail_bytes  # tokenises the long tail only
    for context in (before, sparse, b"tiny\n"):
        assert long_tail.sketch("cpp", context + b"x") == ContextSketcher().sketch("cpp", context + b"x")


class SlowStore:
    """A store whose writes take a while; it records what each write was given."""

    def __init__(self, deferred=False):
        self.learner_deferred, self.writes = deferred, []

    async def _write(self, keys, lessons):
        await asyncio.sleep(0.02)
        self.writes.append((keys, lessons))
        return 0

    def record(self, event, keys, lessons):
        return self._write(list(keys), list(lessons))


def test_state_writes_in_flight_are_coalesced_and_drained():
    async def scenario(store):
        writer = StateWriter(store)
        writer.submit([("exp4", "ada", "js")], [])
        for user in ("bob", "cy", "bob"):  # while the first write is in flight
            writer.submit([("exp4", user, "js")], [])
        writer.submit([], [])  # nothing to write
        await writer.drain()
        return store.writes

    writes = asyncio.run(scenario(SlowStore()))
    assert writes == [([("exp4", "ada", "js")], []), ([("exp4", "bob", "js"), ("exp4", "cy", "js")], [])]
    # A store that records lessons in order gets every submission as it comes.
    assert len(asyncio.run(scenario(SlowStore(deferred=True)))) == 4
