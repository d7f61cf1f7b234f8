"""`POST /v1/completions`: one answer for the FastAPI route and for its fast path, which skips FastAPI for valid bodies.

The route (`app.py`) is the API's contract: OpenAPI, validation by the pydantic models of `schemas.py`, and every
error body. Most requests are valid, though, and FastAPI's request handling (dependencies, validation, response
model, serialisation) cost about as much CPU as everything behind it. `FastCompletions`, an ASGI middleware just
in front of FastAPI's router, decodes a JSON body with msgspec into a struct of the same fields and constraints,
and answers it here with `reply`, as the route would; any body that does not fit, or that `completion_input`
refuses, goes on to the route unchanged (which then answers with its usual error). msgspec accepts a subset of
what the route accepts (no NaN, no other encodings, no floats for integers), so the fast path never answers a
body the route would refuse.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any, Protocol

import msgspec

from codecomp.serve.api import languages
from codecomp.serve.api.server import Server
from codecomp.serve.service.completion import CompletionInput, Overloaded

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
PATH = "/v1/completions"


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class SegmentsLike(Protocol):
    @property
    def prefix(self) -> str: ...
    @property
    def suffix(self) -> str | None: ...
    @property
    def filepath(self) -> str | None: ...
    @property
    def git_url(self) -> str | None: ...


class BodyLike(Protocol):
    """A completion request's body: the route's pydantic `CompletionBody`, or the fast path's `FastBody`."""

    @property
    def language(self) -> str | None: ...
    @property
    def segments(self) -> SegmentsLike | None: ...
    @property
    def document(self) -> str | None: ...
    @property
    def cursor(self) -> int | None: ...
    @property
    def user(self) -> str | None: ...
    @property
    def deadline_ms(self) -> float | None: ...


class FastSegments(msgspec.Struct):
    """`schemas.Segments`, for msgspec (unknown fields ignored, as there)."""

    prefix: str = ""
    suffix: str | None = None
    filepath: str | None = None
    git_url: str | None = None


class FastBody(msgspec.Struct):
    """`schemas.CompletionBody`, for msgspec: the same fields, types (strict) and bounds."""

    language: str | None = None
    segments: FastSegments | None = None
    document: str | None = None
    cursor: int | None = None
    user: str | None = None
    deadline_ms: Annotated[float, msgspec.Meta(gt=0)] | None = None


_decoder = msgspec.json.Decoder(FastBody)
_encoder = msgspec.json.Encoder()


async def reply(server: Server, body: BodyLike, client: str) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of the answer to a completion request (`schemas.CompletionOut` on 200, its
    fields in that order; 503 when overloaded). `client` is `client_of`'s.

    Raises:
        BadRequest: the body's values do not fit together (`completion_input`).
    """
    started = time.monotonic()
    filepath = body.segments.filepath if body.segments is not None else None
    resolved = languages.resolve(body.language, filepath, server.languages)
    completion = completion_input(body, resolved.language or "", client)
    margin_ms = server.config.service.margin_ms
    if body.deadline_ms is not None and body.deadline_ms <= margin_ms:  # no retry would ever be answered: not a 503
        raise BadRequest(422, f"deadline_ms {body.deadline_ms:g} leaves the models no time: the server keeps "
                              f"{margin_ms:g} ms of any deadline for the reply")  # fmt: skip
    if resolved.language is None:  # checked like any other, then answered with the reason
        return 200, {"id": f"cmpl-{uuid.uuid4().hex}", "choices": [], "models": {}, "cache": {}, "versions": {},
                     "degraded": False, "light": False, "latency_ms": (time.monotonic() - started) * 1000,
                     "language": None, "reason": resolved.reason}  # fmt: skip
    try:
        output = await server.service.complete(completion)
    except Overloaded as error:
        return 503, {"error": f"overloaded: {error}"}
    versions = {model: f"{model}@{version[:8]}" for model, version in output.versions.items()}  # char@1a2b3c4d
    choices = [
        {"index": i, "text": c.text, "score": c.log_prob, "model": c.model, "version": versions.get(c.model, "")}
        for i, c in enumerate(output.choices)
    ]
    return 200, {"id": output.id, "choices": choices, "models": output.models, "cache": output.cache,
                 "versions": versions, "degraded": output.degraded, "light": output.light,
                 "latency_ms": output.latency_ms, "language": resolved.language, "reason": None}  # fmt: skip


def completion_input(body: BodyLike, language: str, client: str) -> CompletionInput:
    """The service's request from the body's text, as UTF-8 bytes split at the cursor.

    Raises:
        BadRequest: neither segments nor document and cursor, a cursor outside the document or inside a character,
            text that is not UTF-8 (lone surrogates).
    """
    try:
        if body.segments is not None:
            prefix, suffix = body.segments.prefix.encode(), (body.segments.suffix or "").encode()
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
    segments = body.segments
    filepath = "/".join(filter(None, (segments.git_url, segments.filepath))) if segments is not None else ""
    user = body.user or "anonymous"
    try:
        (user + filepath).encode()
    except UnicodeError:
        raise BadRequest(400, "user or filepath (or git_url) is not valid UTF-8 (a lone surrogate)") from None
    return CompletionInput(language, prefix, suffix, user, filepath, body.deadline_ms, client)


def client_of(body: BodyLike, host: str | None, user_agent: str) -> str:
    """Who asks, for a request that names no user: the connection's host and the client program (its
    User-Agent, hashed), so that anonymous editors keep sessions of their own."""
    if body.user:
        return ""
    agent = user_agent.encode(errors="replace")
    return f"{host if host is not None else '?'}/{hashlib.blake2b(agent, digest_size=6).hexdigest()}"


class FastCompletions:
    """ASGI middleware: answers a valid JSON `POST /v1/completions` itself (see the module's docstring); every
    other request, and a completion body it does not take, goes on to `app` as it came."""

    def __init__(self, app: ASGIApp, server: Server) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        content_type = headers.get(b"content-type", b"").partition(b";")[0].strip().lower()
        if content_type != b"application/json":  # the route decides about other types (or none)
            await self.app(scope, receive, send)
            return
        body, disconnected = await _read(receive)
        if disconnected:
            return
        try:
            parsed = _decoder.decode(body)
        except ValueError:  # msgspec.DecodeError, or UnicodeDecodeError: the route answers with its error body
            await self.app(scope, _replay(body, receive), send)
            return
        client = scope.get("client")
        who = client_of(parsed, client[0] if client else None, headers.get(b"user-agent", b"").decode("latin-1"))
        try:
            status, payload = await reply(self.server, parsed, who)
        except BadRequest:  # raised before the service is asked: the route answers with its error body
            await self.app(scope, _replay(body, receive), send)
            return
        content = _encoder.encode(payload)
        fields = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        if status == 503:
            fields.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": fields})
        await send({"type": "http.response.body", "body": content})


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by lower-case name, the first of a repeated one (as Starlette's `get` takes it)."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        found.setdefault(name, value)
    return found


async def _read(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, and whether the client went away instead."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b"", True
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read, then whatever comes next (the disconnect)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return await receive()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
