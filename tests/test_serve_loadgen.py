"""serve.loadgen: simulated editing traces, open-loop replay against fake servers, summaries and objectives."""

import asyncio
import itertools
import json
import time

import httpx
import pytest
from fastapi import FastAPI

from codecomp.data.shards import ShardFile, write_text_shard
from serve import loadgen
from serve.loadgen import (
    Outcome,
    Request,
    TraceConfig,
    build_trace,
    documents_from_corpus,
    meets_objective,
    replay,
    scale_trace,
    summarize,
)

JS = b"function add(a, b) {\n  return a + b;\n}\n\nconst total = add(1, 2);\nconsole.log(total);\n" * 8
CPP = 'int main() {\n  std::string s = "h\u00e9llo";\n  return s.size();\n}\n'.encode() * 8
DOCUMENTS = [("javascript", JS), ("cpp", CPP)]


def ok_body(**extra) -> dict:
    return {"id": "x", "choices": [{"index": 0, "text": "a"}], "degraded": False, "cache": {"m": "miss"}, **extra}


def request_at(t: float, user: str = "editor-0") -> Request:
    return Request(t=t, user=user, language="javascript", document=0, position=10, text=JS.decode())


# ---------------------------------------------------------------------------------------------------- traces


def test_trace_is_deterministic_for_a_seed_and_sorted():
    config = TraceConfig(editors=4, duration_s=5.0, seed=3)
    first, second = build_trace(DOCUMENTS, config), build_trace(DOCUMENTS, config)
    assert first and first == second
    assert build_trace(DOCUMENTS, TraceConfig(editors=4, duration_s=5.0, seed=4)) != first
    times = [r.t for r in first]
    assert times == sorted(times) and times[0] >= 0 and times[-1] < 5.0
    assert {r.user for r in first} == {f"editor-{i}" for i in range(4)}


def test_prefix_and_suffix_frame_the_line_being_typed():
    texts = [text.decode() for _, text in DOCUMENTS]
    for request in build_trace(DOCUMENTS, TraceConfig(editors=6, duration_s=5.0)):
        text = texts[request.document]
        assert request.language == DOCUMENTS[request.document][0]
        assert text.startswith(request.prefix) and len(request.prefix) == request.position
        line_end = text.find("\n", request.position)
        rest_of_line = text[request.position : line_end]
        assert request.suffix.startswith("\n") and request.prefix + rest_of_line + request.suffix == text
        body = request.payload()
        assert body == {
            "language": request.language,
            "segments": {"prefix": request.prefix, "suffix": request.suffix},
            "user": request.user,
        }


def test_request_rate_grows_with_editors_and_scale_factor():
    few = build_trace(DOCUMENTS, TraceConfig(editors=4, duration_s=20.0))
    many = build_trace(DOCUMENTS, TraceConfig(editors=16, duration_s=20.0))
    assert 3.2 < len(many) / len(few) < 4.8
    faster = scale_trace(many, 2.0)
    assert len(faster) == len(many) and [r.position for r in faster] == [r.position for r in many]
    assert max(r.t for r in faster) == pytest.approx(max(r.t for r in many) / 2)
    with pytest.raises(ValueError):
        scale_trace(many, 0.0)


def test_typing_speed_matches_chars_per_second():
    # With no debounce every keystroke sends a request, so requests count keystrokes.
    trace = build_trace(DOCUMENTS, TraceConfig(editors=8, chars_per_second=5.0, debounce_s=0.0, duration_s=20.0))
    assert len(trace) == pytest.approx(8 * 5.0 * 20.0, rel=0.1)


def test_only_pauses_longer_than_the_debounce_send_requests():
    assert build_trace(DOCUMENTS, TraceConfig(editors=4, debounce_s=1e9, duration_s=10.0)) == []
    debounce = 0.2
    trace = build_trace(DOCUMENTS, TraceConfig(editors=4, debounce_s=debounce, duration_s=10.0))
    by_user: dict[str, list[float]] = {}
    for request in trace:
        by_user.setdefault(request.user, []).append(request.t)
    # A request follows its keystroke by the debounce and the next keystroke comes after the pause, so one
    # editor's requests are more than a debounce apart.
    assert all(b - a > debounce for times in by_user.values() for a, b in itertools.pairwise(times))


def test_pauses_are_likelier_after_line_ends():
    trace = build_trace([("javascript", JS)], TraceConfig(editors=8, duration_s=20.0))
    after_newline = sum(r.prefix.endswith("\n") for r in trace) / len(trace)
    assert after_newline > 2 * JS.count(b"\n") / len(JS)


def test_long_documents_are_cut_at_a_line_end():
    trace = build_trace([("javascript", JS)], TraceConfig(editors=4, duration_s=5.0, max_document_bytes=100))
    cut = JS[: JS.rfind(b"\n", 0, 100) + 1].decode()
    assert trace and all(r.text == cut for r in trace)


def test_documents_from_corpus_skip_short_and_non_utf8_files(tmp_path):
    write_text_shard(
        tmp_path / "test" / "javascript",
        [ShardFile("a.js", "p", JS), ShardFile("b.js", "p", b"x"), ShardFile("c.js", "p", b"\xff\xfe" * 200)],
    )
    write_text_shard(tmp_path / "test" / "cpp", [ShardFile("a.cc", "p", CPP)])
    assert documents_from_corpus(tmp_path) == [("javascript", JS), ("cpp", CPP)]
    assert documents_from_corpus(tmp_path, languages=("cpp", "python")) == [("cpp", CPP)]


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
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await replay("http://test/", trace, token="secret", client=client)

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
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
            return await replay("http://test", trace, client=client)

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
        return httpx.Response(200, json=ok_body())

    users = ["ok", "ok", "shed", "shed", "bad", "down", "slow", "ok"]
    trace = [request_at(0.0, user) for user in users]

    async def run() -> list[Outcome]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await replay("http://test", trace, timeout_s=0.1, client=client)

    results = asyncio.run(run())
    outcomes = {o.user: o for o in results}
    assert outcomes["shed"].shed and outcomes["bad"].status == 422 and outcomes["bad"].error == "bad language"
    assert outcomes["down"].status == 0 and "ConnectError" in (outcomes["down"].error or "")
    assert outcomes["slow"].status == 0 and 0.1 <= outcomes["slow"].latency_s < 0.5
    summary = summarize(results)
    assert (summary["answered"], summary["shed"], summary["errors"]) == (3, 2, 3)
    assert summary["shed_share"] == 2 / 8 and summary["error_share"] == 3 / 8


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


def test_main_replays_the_test_split(tmp_path, monkeypatch, capsys):
    write_text_shard(tmp_path / "test" / "javascript", [ShardFile("a.js", "p", JS)])
    write_text_shard(tmp_path / "test" / "cpp", [ShardFile("a.cc", "p", CPP)])
    real_client = httpx.AsyncClient
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=ok_body(cache={"m": "shared"})))
    monkeypatch.setattr(httpx, "AsyncClient", lambda **kwargs: real_client(transport=transport, **kwargs))
    argv = ["--corpus", str(tmp_path), "--editors", "2", "--duration", "2", "--rate-factor", "10", "--json"]
    loadgen.main(argv)
    summary = json.loads(capsys.readouterr().out)
    assert summary["count"] > 0 and summary["answered"] == summary["count"]
    assert summary["cache_hit_share"] == 1.0 and summary["meets_objective"] is True
