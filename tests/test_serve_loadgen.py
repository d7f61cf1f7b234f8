"""serve.loadgen: simulated editing traces, open-loop replay against fake servers, the keep-alive client against a
real local server, summaries and objectives."""

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from codecomp.data.shards import ShardFile, write_text_shard
from serve import loadgen
from serve.loadgen import (
    KeepAliveClient,
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


# ---------------------------------------------------------------------------------------------------- real server

COMPLETIONS_SEEN: list[dict] = []  # what the real server's /v1/completions received


def make_app() -> FastAPI:
    app = FastAPI()

    def port_of(request: HttpRequest) -> int:
        assert request.client is not None
        return request.client.port

    @app.post("/echo")
    @app.post("/base/echo")
    async def echo(request: HttpRequest) -> dict:
        return {
            "port": port_of(request),
            "path": request.url.path,
            "body": (await request.body()).decode(),
            "auth": request.headers.get("authorization"),
            "type": request.headers.get("content-type"),
        }

    @app.post("/slow")
    async def slow(request: HttpRequest) -> dict:
        await asyncio.sleep(0.1)
        return {"port": port_of(request)}

    @app.post("/busy")
    async def busy() -> PlainTextResponse:
        return PlainTextResponse("busy", status_code=503, headers={"Retry-After": "1"})

    @app.post("/chunked")
    async def chunked() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"part{i};".encode() * 1000
                await asyncio.sleep(0)

        return StreamingResponse(parts(), media_type="text/plain")

    @app.post("/close")
    async def close(request: HttpRequest) -> JSONResponse:
        return JSONResponse({"port": port_of(request)}, headers={"Connection": "close"})

    @app.post("/v1/completions")
    async def complete(request: HttpRequest) -> JSONResponse:
        body = await request.json()
        COMPLETIONS_SEEN.append({"port": port_of(request), "auth": request.headers.get("authorization"), **body})
        if body["user"] == "shed":
            return JSONResponse({"detail": "overloaded"}, status_code=503)
        if body["user"] == "slow":
            await asyncio.sleep(0.5)
        return JSONResponse(ok_body(cache={"m": "shared"}))

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A uvicorn server on a free local port, in a background thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uvicorn_server = uvicorn.Server(uvicorn.Config(make_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uvicorn_server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    uvicorn_server.should_exit = True
    thread.join(5)
    sock.close()


def test_keep_alive_client_posts_and_reuses_one_connection(server):
    async def run() -> tuple[list[tuple[int, bytes]], tuple[int, bytes], dict]:
        client = KeepAliveClient(server + "/")
        try:
            echoes = [await client.post("/echo", b'{"n": %d}' % i, {"Authorization": "Bearer t"}) for i in range(5)]
            busy = await client.post("/busy", b"{}", {})
            echoes.append(await client.post("/echo", b"{}", {}))
            based = json.loads((await KeepAliveClient(server + "/base").post("/echo", b"{}", {}))[1])
        finally:
            await client.aclose()
        return echoes, busy, based

    echoes, busy, based = asyncio.run(run())
    assert [status for status, _ in echoes] == [200] * 6
    bodies = [json.loads(body) for _, body in echoes]
    assert [b["body"] for b in bodies[:5]] == [f'{{"n": {i}}}' for i in range(5)]
    assert all(b["auth"] == "Bearer t" and b["type"] == "application/json" for b in bodies[:5])
    assert busy == (503, b"busy")
    # Sequential requests, the 503 included, share one connection: one client port.
    assert len({b["port"] for b in bodies}) == 1
    assert based["path"] == "/base/echo"


def test_keep_alive_client_opens_connections_for_concurrent_requests_and_pools_them(server):
    async def run() -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
        client = KeepAliveClient(server)
        try:
            first = await asyncio.gather(*(client.post("/slow", b"{}", {}) for _ in range(20)))
            second = await asyncio.gather(*(client.post("/slow", b"{}", {}) for _ in range(20)))
        finally:
            await client.aclose()
        return first, second

    started = time.monotonic()
    first, second = asyncio.run(run())
    assert time.monotonic() - started < 1.5  # two rounds of 0.1 s each, not 40 in a row
    assert all(status == 200 for status, _ in first + second)
    first_ports = {json.loads(body)["port"] for _, body in first}
    second_ports = {json.loads(body)["port"] for _, body in second}
    assert len(first_ports) == 20 and second_ports == first_ports


def test_keep_alive_client_reads_a_chunked_response(server):
    async def run() -> tuple[tuple[int, bytes], tuple[int, bytes], tuple[int, bytes]]:
        client = KeepAliveClient(server)
        try:
            before = await client.post("/echo", b"{}", {})
            chunked = await client.post("/chunked", b"{}", {})
            after = await client.post("/echo", b"{}", {})
        finally:
            await client.aclose()
        return before, chunked, after

    before, chunked, after = asyncio.run(run())
    assert chunked == (200, b"".join(f"part{i};".encode() * 1000 for i in range(5)))
    # The chunked body was consumed exactly: the connection was still usable afterwards.
    assert after[0] == 200 and json.loads(after[1])["port"] == json.loads(before[1])["port"]


def test_keep_alive_client_drops_a_connection_the_server_closes(server):
    async def run() -> list[int]:
        client = KeepAliveClient(server)
        try:
            ports = [json.loads((await client.post("/close", b"{}", {}))[1])["port"]]
            for _ in range(2):
                status, body = await client.post("/echo", b"{}", {})
                assert status == 200
                ports.append(json.loads(body)["port"])
        finally:
            await client.aclose()
        return ports

    closed, first, second = asyncio.run(run())
    assert first != closed and second == first


class FlakyServer:
    """A raw HTTP server that answers the first request on each connection, then, with `close_on_next`, reads the
    next one and closes without answering (as when a server's idle timeout races a new request); with
    `close_after`, closes right after the first answer; with `never`, closes every connection unanswered; with
    `announce_close`, answers everything with `Connection: close` but leaves the connection open."""

    def __init__(self, mode: str) -> None:
        self.mode, self.connections, self.requests = mode, 0, 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                self.requests += 1
                if self.mode == "never" or (answered and self.mode != "announce_close"):
                    return
                close = b"Connection: close\r\n" if self.mode == "announce_close" else b""
                writer.write(b"HTTP/1.1 200 OK\r\n" + close + b"Content-Length: 2\r\n\r\nok")
                await writer.drain()
                answered += 1
                if self.mode == "close_after":
                    return
        except asyncio.IncompleteReadError:
            return
        finally:
            writer.close()


@pytest.mark.parametrize("mode", ["close_on_next", "close_after", "announce_close"])
def test_keep_alive_client_retries_once_when_a_pooled_connection_was_closed(mode):
    async def run() -> tuple[FlakyServer, list[tuple[int, bytes]]]:
        flaky = FlakyServer(mode)
        async with await asyncio.start_server(flaky.handle, "127.0.0.1", 0) as tcp:
            client = KeepAliveClient(f"http://127.0.0.1:{tcp.sockets[0].getsockname()[1]}")
            try:
                responses = []
                for _ in range(3):
                    responses.append(await client.post("/", b"{}", {}))
                    await asyncio.sleep(0.02)  # lets the server's close arrive while the connection is idle
            finally:
                await client.aclose()
        return flaky, responses

    flaky, responses = asyncio.run(run())
    assert responses == [(200, b"ok")] * 3
    assert flaky.connections == 3
    # announce_close: the client believed the header and never reused a connection, though it stayed open.
    # close_on_next: each pooled connection took the next request and closed it unanswered, so it was sent again.
    assert flaky.requests == (5 if mode == "close_on_next" else 3)


def test_keep_alive_client_does_not_retry_a_fresh_connection():
    async def run() -> tuple[FlakyServer, BaseException | None]:
        flaky = FlakyServer("never")
        async with await asyncio.start_server(flaky.handle, "127.0.0.1", 0) as tcp:
            client = KeepAliveClient(f"http://127.0.0.1:{tcp.sockets[0].getsockname()[1]}")
            try:
                await client.post("/", b"{}", {})
            except OSError as exc:
                return flaky, exc
            finally:
                await client.aclose()
        return flaky, None

    flaky, error = asyncio.run(run())
    assert isinstance(error, ConnectionError) and flaky.connections == flaky.requests == 1


def test_keep_alive_client_rejects_other_schemes():
    for url in ["https://127.0.0.1:8000", "127.0.0.1:8000", "http://"]:
        with pytest.raises(ValueError, match="http://"):
            KeepAliveClient(url)
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
