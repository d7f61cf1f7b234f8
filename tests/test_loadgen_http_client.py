"""benchmarks.loadgen.http_client: the load generator's keep-alive HTTP client against real local servers."""

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from benchmarks.loadgen.http_client import KeepAliveClient
from tests.loadgen_http import make_app, serving


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serving(make_app()) as url:
        yield url


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
