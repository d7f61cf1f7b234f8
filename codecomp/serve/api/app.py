"""The HTTP API, compatible with Tabby's completion API so editor plugins built for it connect.

    POST /v1/completions  {language, segments: {prefix, suffix, filepath?}, user?}  (or {language, document, cursor})
    POST /v1/events       {type: view|select|dismiss, completion_id, choice_index}
    GET  /v1/health, GET /v1/models, GET /metrics (Prometheus); OpenAPI at /docs.

Bad input gets a 4xx with `{"error": ...}`, never a 5xx: malformed JSON, wrong types, an unknown
language, an oversized body, text that is not UTF-8, a cursor outside the document.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.exceptions import HTTPException as StarletteHTTPException

from codecomp.serve.api.server import LANGUAGE_ALIASES, Server
from codecomp.serve.service.completion import CompletionInput, Overloaded
from codecomp.serve.service.feedback import Event

log = logging.getLogger(__name__)
VERSION = "0.1.0"
GUARDED_PATHS = frozenset({"/v1/completions", "/v1/events", "/v1/models"})  # with a bearer token configured


class Segments(BaseModel):
    prefix: str = ""
    suffix: str = ""
    filepath: str | None = None


class CompletionBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Tabby clients send more (git_url, declarations, ...)

    language: str
    segments: Segments | None = None
    document: str | None = Field(None, description="instead of segments: the whole document ...")
    cursor: StrictInt | None = Field(None, description="... and the cursor, a UTF-8 byte offset into it")
    user: str | None = None
    deadline_ms: float | None = Field(None, gt=0, description="answer within this (at most the objective)")


class ChoiceOut(BaseModel):
    index: int
    text: str
    score: float  # natural-log probability under its model
    model: str


class CompletionOut(BaseModel):
    id: str
    choices: list[ChoiceOut]
    models: dict[str, str]
    cache: dict[str, str]
    degraded: bool
    light: bool
    latency_ms: float


class EventBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["view", "select", "dismiss"]
    completion_id: str
    choice_index: int = Field(ge=0)


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def create_app(server: Server, manage_lifecycle: bool = True) -> FastAPI:
    """The ASGI app over a `Server`; with `manage_lifecycle` the app starts and stops it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await server.start()
        yield
        if manage_lifecycle:
            await server.stop()

    app = FastAPI(title="codecomp", version=VERSION, lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=server.config.max_body_bytes)
    if server.config.token:  # added last, so it runs first: before the body is read, sized or parsed
        app.add_middleware(BearerToken, token=server.config.token, paths=GUARDED_PATHS)

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, error: BadRequest) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        message = (
            "the body is not valid JSON (or not UTF-8)" if "parsing the body" in str(error.detail) else error.detail
        )
        return JSONResponse({"error": message}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return JSONResponse({"error": "the body is not valid JSON (or not UTF-8)"}, status_code=400)
        detail = [{"field": ".".join(str(part) for part in p["loc"][1:]), "problem": p["msg"]} for p in problems]
        return JSONResponse({"error": "invalid request", "detail": detail}, status_code=422)

    @app.post("/v1/completions", response_model=CompletionOut)
    async def completions(body: CompletionBody) -> Any:
        try:
            output = await server.service.complete(_completion_input(body, server.languages))
        except Overloaded as error:
            return JSONResponse({"error": f"overloaded: {error}"}, status_code=503, headers={"Retry-After": "1"})
        choices = [
            ChoiceOut(index=i, text=c.text, score=c.log_prob, model=c.model) for i, c in enumerate(output.choices)
        ]
        return CompletionOut(
            id=output.id, choices=choices, models=output.models, cache=output.cache, degraded=output.degraded,
            light=output.light, latency_ms=output.latency_ms,
        )  # fmt: skip

    @app.post("/v1/events")
    async def events(body: EventBody) -> dict[str, Any]:
        served = server.service.recent.get(body.completion_id)
        if served is None:
            raise BadRequest(404, f"no recent completion {body.completion_id!r}")
        if body.choice_index >= len(served.choices):
            raise BadRequest(422, f"completion {body.completion_id} has {len(served.choices)} choices")
        choice = served.choices[body.choice_index]
        event = Event(body.type, body.completion_id, body.choice_index, served.user, served.language, choice.model,
                      choice.text)  # fmt: skip
        row = await asyncio.to_thread(server.store.add, event)  # a disk write: off the event loop
        return {"stored": row}

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        models = {
            name: {"family": e.family, "version": e.version, "replicas": e.live_replicas, "queue": len(e.queue)}
            for name, e in server.endpoints.items()
        }
        ok = all(e.live_replicas > 0 for e in server.endpoints.values())
        # Tabby's health fields first (its editor plugins read them on connect), then ours.
        return {
            "model": ",".join(models), "device": "cpu", "arch": platform.machine(), "cpu_info": platform.processor(),
            "cpu_count": os.cpu_count(), "cuda_devices": [], "version": {"git_describe": f"codecomp {VERSION}"},
            "status": "ok" if ok else "degraded", "models": models,
        }  # fmt: skip

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        described = []
        for (name, endpoint), model in zip(server.endpoints.items(), server.config.models.values(), strict=True):
            replicas = [{"id": r.identity.decode(errors="replace"), "pid": r.pid, "batch_size": r.aimd.size}
                        for r in endpoint.replicas.values()]  # fmt: skip
            described.append({"name": name, "family": endpoint.family, "version": endpoint.version,
                              "languages": list(model.languages), "replicas": replicas})  # fmt: skip
        return {"models": described, "caches": server.service.cache_stats()}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _completion_input(body: CompletionBody, languages: list[str]) -> CompletionInput:
    language = LANGUAGE_ALIASES.get(body.language.lower())
    if language not in languages:
        raise BadRequest(400, f"unsupported language {body.language!r}; served: {', '.join(languages)}")
    try:
        if body.segments is not None:
            prefix, suffix = body.segments.prefix.encode(), body.segments.suffix.encode()
        elif body.document is not None and body.cursor is not None:
            document = body.document.encode()
            if not 0 <= body.cursor <= len(document):
                raise BadRequest(422, f"cursor {body.cursor} outside the document (0..{len(document)} bytes)")
            prefix, suffix = document[: body.cursor], document[body.cursor :]
            prefix.decode()  # a cursor inside a multi-byte character splits it
        else:
            raise BadRequest(422, "give segments.prefix (and suffix), or document and cursor")
    except UnicodeError:
        raise BadRequest(
            400, "the text is not valid UTF-8 (a lone surrogate, or a cursor inside a character)"
        ) from None
    filepath = body.segments.filepath if body.segments is not None and body.segments.filepath else ""
    user = body.user or "anonymous"
    try:
        (user + filepath).encode()
    except UnicodeError:
        raise BadRequest(400, "user or filepath is not valid UTF-8 (a lone surrogate)") from None
    return CompletionInput(language, prefix, suffix, user, filepath, body.deadline_ms)


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class BodyLimit:
    """Refuses a body over `max_bytes` with 413, by its Content-Length or as it streams in.

    The body is read here, up to the bound, and handed on whole: a limit raised from inside the
    app's own read would come out as the framework's 400.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            await self._refuse(send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(send)
                return
            more = message.get("more_body", False)
        body = b"".join(chunks)
        delivered = False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                return await receive()  # after the body: the disconnect, when it comes
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        await _send_error(send, 413, "the body is too large (or its Content-Length is not a number)")


class BearerToken:
    """Refuses a request to one of `paths` without `Authorization: Bearer <token>` with 401, before its body
    is read: a caller without the token learns nothing about what the body should be."""

    def __init__(self, app: ASGIApp, token: str, paths: frozenset[str]) -> None:
        self.app, self.expected, self.paths = app, f"Bearer {token}".encode(), paths

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not secrets.compare_digest(given, self.expected):
                await _send_error(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
                return
        await self.app(scope, receive, send)


async def _send_error(send: Any, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A JSON `{"error": message}` response, sent from ASGI middleware."""
    body = json.dumps({"error": message}).encode()
    fields = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body})
