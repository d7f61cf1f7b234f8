"""A lean keep-alive HTTP/1.1 client for the load generator's JSON POSTs."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Mapping
from typing import Protocol


class PostClient(Protocol):
    """What `replay` sends with: POSTs to one server.

    `post` returns the status and the raw body, and raises `OSError` (e.g. `ConnectionError`) when no response came.
    """

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]: ...

    async def aclose(self) -> None: ...


class _ClosedBeforeResponse(ConnectionResetError):
    """The connection closed before the first byte of the response."""


class KeepAliveClient:
    """A minimal keep-alive HTTP/1.1 client for JSON POSTs over `asyncio.open_connection`.

    Why not httpx: it costs about 2 ms of CPU per request, and the benchmark runs the load generator on the same
    2-core machine as the server, so at 200 requests/s the client alone took a third of the machine and fell
    behind its schedule. This writes each request in one piece and parses the response by hand, at a fraction
    of that. It keeps a pool of idle connections (as many as were ever in flight at once), reads bodies by
    `Content-Length`, chunked, or to the end, and honours `Connection: close`. A pooled connection that the server
    closed while it was idle is retried once on a fresh one. Plain `http://` only.
    """

    def __init__(self, base_url: str) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"KeepAliveClient speaks plain http:// only, got {base_url!r}")
        self._address = (url.hostname, url.port or 80)
        self._host = url.netloc.rpartition("@")[2]
        self._prefix = url.path.rstrip("/")
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._open: set[asyncio.StreamWriter] = set()

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """POST `body` (JSON) to `path` under the base URL; returns the status and the response body."""
        fields = {"Host": self._host, "Content-Type": "application/json", "Content-Length": len(body), **headers}
        head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        request = f"POST {self._prefix}{path} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body
        while self._idle:
            reader, writer = self._idle.pop()  # the most recently used: the least likely to have timed out
            if reader.at_eof():  # the server already said it closed this one
                self._close(writer)
                continue
            try:
                return await self._exchange(reader, writer, request)
            except _ClosedBeforeResponse:
                break  # closed by the server while idle, and we did not see it yet: once more, on a fresh one
        reader, writer = await asyncio.open_connection(*self._address)
        self._open.add(writer)
        return await self._exchange(reader, writer, request)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[int, bytes]:
        try:
            try:
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
                if getattr(exc, "partial", b""):
                    raise
                raise _ClosedBeforeResponse("connection closed before the response") from exc
            status_line, *lines = head.decode("latin-1").split("\r\n")
            version, status = status_line.split(" ", 2)[:2]
            fields = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in lines if h)}
            connection = fields.get("connection", "").lower()
            keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
            if status in ("204", "304"):
                body = b""
            elif "chunked" in fields.get("transfer-encoding", "").lower():
                body = await _read_chunked(reader)
            elif "content-length" in fields:
                body = await reader.readexactly(int(fields["content-length"]))
            else:  # delimited by the end of the connection
                body, keep_alive = await reader.read(), False
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self._close(writer)
            raise ConnectionError(f"bad HTTP response: {exc!r}") from exc
        except BaseException:  # including cancellation mid-response: the connection is in an unknown state
            self._close(writer)
            raise
        if keep_alive:
            self._idle.append((reader, writer))
        else:
            self._close(writer)
        return int(status), body

    def _close(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        self._open.discard(writer)

    async def aclose(self) -> None:
        """Close every connection, idle or not."""
        writers, self._open, self._idle = list(self._open), set(), []
        for writer in writers:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for writer in writers), return_exceptions=True)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        chunks.append((await reader.readexactly(size + 2))[:-2])
    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields, if any, up to the empty line
        pass
    return b"".join(chunks)
