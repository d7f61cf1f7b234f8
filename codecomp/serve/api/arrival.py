"""Stamps each HTTP request with its arrival time, as the first thing the app runs.

It is the earliest point Python sees a request (uvicorn has parsed it just before), so what the stamp
measures is the wait in front of the handler: the event loop's backlog. The completion service counts
the request's deadline from the stamp (`codecomp.serve.service.arrival`). Register it last, so that it
runs first.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from codecomp.serve.service.arrival import ARRIVED

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class ArrivalStamp:
    """ASGI middleware: sets `ARRIVED` to `time.monotonic()` for the rest of the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = ARRIVED.set(time.monotonic())
        try:
            await self.app(scope, receive, send)
        finally:
            ARRIVED.reset(token)  # a caller running many requests in one task (a test's client) starts afresh
