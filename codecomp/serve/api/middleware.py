"""ASGI middleware in front of the app: the bearer token (checked first) and the body's size and arrival time.

Both answer from here, before FastAPI sees the request, with the API's error body `{"error": ...}`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuses a body over `max_bytes` with 413, by its Content-Length or as it streams in, and one that has not
    arrived whole within `timeout_s` with 408 (closing the connection): a client that declares a length and
    stops sending would otherwise hold a connection, and a request slot, for ever.

    The body is read here, up to the bound, and handed on whole: a limit raised from inside the
    app's own read would come out as the framework's 400.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            await self._refuse(send)
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._read(receive)
        except TimeoutError:
            message = f"the body did not arrive within {self.timeout_s:g} s"
            await send_error(send, 408, message, [(b"connection", b"close")])
            return
        if body is None:  # the client went away
            return
        if len(body) > self.max_bytes:
            await self._refuse(send)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: the disconnect, when it comes
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The whole body, or as much as shows it is over the bound; None if the client disconnected."""
        chunks, size, more = [], 0, True
        while more and size <= self.max_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _refuse(self, send: Send) -> None:
        await send_error(send, 413, "the body is too large (or its Content-Length is not a number)")


class BearerToken:
    """Refuses a request to a path under one of `prefixes` without `Authorization: Bearer <token>` with 401,
    before its body is read: a caller without the token learns nothing about what the body should be.

    The scheme's name is case-insensitive (RFC 7235 section 2.1: `bearer`, `BEARER`); the token is not.
    """

    def __init__(self, app: ASGIApp, token: str, prefixes: tuple[str, ...]) -> None:
        self.app, self.expected, self.prefixes = app, token.encode(), prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefixes):
            scheme, _, credentials = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
            # compare_digest takes as long whatever the token given, so its time tells nothing of ours
            if not (scheme.lower() == b"bearer" and secrets.compare_digest(credentials.strip(b" "), self.expected)):
                await send_error(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)


async def send_error(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A JSON `{"error": message}` response, sent from ASGI middleware."""
    body = json.dumps({"error": message}).encode()
    fields = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body})
