"""benchmarks.loadgen.replay: open-loop replay against fake and real local servers, summaries and objectives."""

import asyncio
import json
import socket
import time
from collections.abc import Iterator, Mapping

import httpx
import pytest
from fastapi import FastAPI

from benchmarks.loadgen import replay as loadgen
from benchmarks.loadgen.editors import Request
from benchmarks.loadgen.replay import Outcome, meets_objective, replay, summarize
from codecomp.data.shards import ShardFile, write_text_shard
from tests.loadgen_http import COMPLETIONS_SEEN, make_app, ok_body, serving

JS = b"function add(a, b) {\n  return a + b;\n}\n\nconst total = add(1, 2);\nconsole.log(total);\n" * 8
CPP = 'int main() {\n  std::string s = "h\u00e9llo";\n  return s.size();\n}\n'.encode() * 8
DOCUMENTS = [("javascript", JS), ("cpp", CPP)]


def request_at(t: float, user: str = "editor-0") -> Request:
    return Request(t=t, user=user, language="javascript", document=0, position=10, text=JS.decode())


class HttpxPostClient:
    """`replay`'s client interface over an httpx client, so replay's logic runs against mock and ASGI transports."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.client = httpx.AsyncClient(base_url="http://test", transport=transport)

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json", **headers}
        try:
            response = await self.client.post(path, content=body, headers=headers)
        except httpx.TransportError as exc:  # the interface reports transport failures as OSError
            raise ConnectionError(repr(exc)) from exc
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self.client.aclose()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serving(make_app()) as url:
        yield url


# ---------------------------------------------------------------------------------------------------- replay


def test_replay_is_open_loop_and_measures_latency():
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if json.loads(request.content)["user"] == "slow":
            await asyncio.sleep(0.3)
        return httpx.Response(200, json=ok_body(models={"ngram": "ok"}))

    trace = [request_at(0.0, "slow"), *(request_at(0.02 * i) for i in range(1, 6))]

    async def run() -> list[Outcome]:
        client = HttpxPostClient(httpx.MockTransport(handler))
        try:
            return await replay("http://test/", trace, token="secret", client=client)
        finally:
            await client.aclose()

    started = time.monotonic()
    outcomes = asyncio.run(run())
    assert time.monotonic() - started < 0.6
    assert [o.user for o in outcomes] == [r.user for r in trace]
    assert outcomes[0].latency_s >= 0.3 and all(o.latency_s < 0.1 for o in outcomes[1:])
    # The later requests left on schedule while the slow one was still outstanding.
    assert all(abs(o.sent_s - o.scheduled_s) < 0.05 for o in outcomes)
    assert outcomes[-1].sent_s < outcomes[0].sent_s + outcomes[0].latency_s
    assert all(o.answered and o.choices == 1 and o.models == {"ngram": "ok"} for o in outcomes)
    assert seen[0].url.path == "/v1/completions" and seen[0].headers["authorization"] == "Bearer secret"
    assert json.loads(seen[0].content)["segments"]["prefix"] == JS.decode()[:10]


def test_replay_against_an_asgi_app():
    app = FastAPI()

    @app.post("/v1/completions")
    async def complete(body: dict) -> dict:
        await asyncio.sleep(0.05)
        return ok_body(
            degraded=body["user"] == "editor-1", cache={"m": "hit" if body["user"] == "editor-2" else "miss"}
        )

    trace = [request_at(0.01 * i, f"editor-{i % 4}") for i in range(8)]

    async def run() -> list[Outcome]:
        client = HttpxPostClient(httpx.ASGITransport(app=app))
        try:
            return await replay("http://test", trace, client=client)
        finally:
            await client.aclose()

    outcomes = asyncio.run(run())
    assert all(o.status == 200 and o.latency_s >= 0.05 for o in outcomes)
    summary = summarize(outcomes)
    assert summary["degraded_share"] == 0.25 and summary["cache_hit_share"] == 0.25
    assert summary["p50_ms"] >= 50


def test_shed_errors_and_timeouts_are_counted_apart():
    async def handler(request: httpx.Request) -> httpx.Response:
        user = json.loads(request.content)["user"]
        if user == "shed":
            return httpx.Response(503, headers={"Retry-After": "1"}, text="busy")
        if user == "bad":
            return httpx.Response(422, text="bad language")
        if user == "down":
            raise httpx.ConnectError("refused", request=request)
        if user == "slow":
            await asyncio.sleep(1.0)
        if user == "list":
            return httpx.Response(200, json=[ok_body()])
        if user == "junk":
            return httpx.Response(200, text="<html>")
        return httpx.Response(200, json=ok_body())

    users = ["ok", "ok", "shed", "shed", "bad", "down", "slow", "ok", "list", "junk"]
    trace = [request_at(0.0, user) for user in users]

    async def run() -> list[Outcome]:
        client = HttpxPostClient(httpx.MockTransport(handler))
        try:
            return await replay("http://test", trace, timeout_s=0.1, client=client)
        finally:
            await client.aclose()

    results = asyncio.run(run())
    outcomes = {o.user: o for o in results}
    assert outcomes["shed"].shed and outcomes["bad"].status == 422 and outcomes["bad"].error == "bad language"
    assert outcomes["down"].status == 0 and "ConnectError" in (outcomes["down"].error or "")
    assert outcomes["slow"].status == 0 and 0.1 <= outcomes["slow"].latency_s < 0.5
    assert "TimeoutError" in (outcomes["slow"].error or "")
    # A 200 whose body is not a JSON object is an error, not an answer.
    assert outcomes["list"].status == 200 and "expected a JSON object" in (outcomes["list"].error or "")
    assert outcomes["junk"].status == 200 and (outcomes["junk"].error or "").startswith("bad response body")
    summary = summarize(results)
    assert (summary["answered"], summary["shed"], summary["errors"]) == (3, 2, 5)
    assert summary["shed_share"] == 2 / 10 and summary["error_share"] == 5 / 10


def test_replay_refuses_other_schemes():
    with pytest.raises(ValueError):
        asyncio.run(replay("https://example.com", [request_at(0.0)]))


def test_replay_against_a_real_server(server):
    COMPLETIONS_SEEN.clear()
    users = ["editor-0", "editor-1", "shed", "slow", *(f"editor-{i}" for i in range(2, 8))]
    trace = [request_at(0.03 * i, user) for i, user in enumerate(users)]
    outcomes = asyncio.run(replay(server, trace, timeout_s=0.3, token="secret"))
    by_user = {o.user: o for o in outcomes}
    assert [o.user for o in outcomes] == users
    assert by_user["shed"].shed and by_user["shed"].error == '{"detail":"overloaded"}'
    assert by_user["slow"].status == 0 and "TimeoutError" in (by_user["slow"].error or "")
    answered = [o for o in outcomes if o.answered]
    assert len(answered) == 8 and all(o.choices == 1 and o.cache == {"m": "shared"} for o in answered)
    assert len(COMPLETIONS_SEEN) == 10 and all(seen["auth"] == "Bearer secret" for seen in COMPLETIONS_SEEN)
    assert COMPLETIONS_SEEN[0]["segments"] == {"prefix": trace[0].prefix, "suffix": trace[0].suffix}
    # Requests 30 ms apart mostly reuse a pooled connection.
    assert len({seen["port"] for seen in COMPLETIONS_SEEN}) < len(trace) / 2
    # Nothing listens on a port just freed: a connection error, status 0.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    [refused] = asyncio.run(replay(f"http://127.0.0.1:{free_port}", [request_at(0.0)], timeout_s=1.0))
    assert refused.status == 0 and "ConnectionRefusedError" in (refused.error or "")


# ---------------------------------------------------------------------------------------------------- summary


def outcome(latency_ms: float, status: int = 200, **fields) -> Outcome:
    return Outcome(scheduled_s=0.0, sent_s=0.0, latency_s=latency_ms / 1000, status=status, **fields)


def test_summarize_known_numbers():
    answered = [
        outcome(ms, degraded=ms > 90, cache={"m": "approx" if ms <= 20 else "miss"}, choices=2) for ms in range(1, 101)
    ]
    failed = [outcome(1000, status=503), outcome(1000, status=0, error="timeout")]
    summary = summarize(answered + failed, duration_s=10.0)
    assert summary["count"] == 102 and summary["answered"] == 100
    assert summary["throughput"] == 10.0
    assert summary["p50_ms"] == pytest.approx(50.5)
    assert summary["p95_ms"] == pytest.approx(95.05)
    assert summary["p99_ms"] == pytest.approx(99.01)
    assert summary["degraded_share"] == pytest.approx(0.10) and summary["cache_hit_share"] == pytest.approx(0.20)
    assert summary["shed_share"] == pytest.approx(1 / 102) and summary["error_share"] == pytest.approx(1 / 102)
    assert summary["mean_choices"] == 2.0
    empty = summarize([])
    assert empty["count"] == 0 and empty["p99_ms"] is None and not meets_objective(empty)


def test_meets_objective_counts_shed_and_errors_as_degraded():
    fast = [outcome(10) for _ in range(100)]
    assert meets_objective(summarize(fast))
    assert not meets_objective(summarize(fast), p99_ms=5.0)
    slow_tail = [*fast[:98], outcome(80), outcome(90)]
    assert not meets_objective(summarize(slow_tail))
    # 4% degraded answers plus 2% shed: each under 5%, together over it.
    mixed = fast[:94] + [outcome(10, degraded=True)] * 4 + [outcome(1, status=503)] * 2
    assert summarize(mixed)["degraded_share"] < 0.05
    assert not meets_objective(summarize(mixed)) and meets_objective(summarize(mixed), max_degraded=0.06)


def test_main_replays_the_test_split(tmp_path, capsys, server):
    write_text_shard(tmp_path / "test" / "javascript", [ShardFile("a.js", "p", JS)])
    write_text_shard(tmp_path / "test" / "cpp", [ShardFile("a.cc", "p", CPP)])
    argv = ["--url", server, "--corpus", str(tmp_path), "--editors", "2", "--duration", "2", "--rate-factor", "10"]
    loadgen.main([*argv, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["count"] > 0 and summary["answered"] == summary["count"]
    assert summary["cache_hit_share"] == 1.0 and summary["meets_objective"] is True
