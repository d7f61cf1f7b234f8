"""The HTTP API, compatible with Tabby's completion API so its editor clients connect with only their endpoint set.

    POST /v1/completions  {language?, segments: {prefix, suffix?, filepath?, git_url?}, user?}  (or document, cursor)
    POST /v1/events       {type: view|select|dismiss, completion_id, choice_index}
    GET|POST /v1/health, GET /v1/models, GET /metrics (Prometheus text); OpenAPI at /docs and /openapi.json.
    POST /v1/admin/reload {model, checkpoint?}  (api/admin.py: a new checkpoint served without a stop)

A language no model serves gets 200 with no choices and the reason, as does a request that names none
(its file's extension decides, when it has one): Tabby's clients take any error as a broken server. Bad
input gets a 4xx with `{"error": ...}`, never a 5xx: malformed JSON, wrong types, an oversized or stalled
body, text that is not UTF-8, a cursor outside the document. With a token set, every /v1 path needs it.
The OpenAPI document lists all of it (`schemas.complete_document`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from codecomp.serve.api import languages
from codecomp.serve.api.admin import admin_router
from codecomp.serve.api.arrival import ArrivalStamp
from codecomp.serve.api.completions import BadRequest, FastCompletions, client_of, reply
from codecomp.serve.api.health import HealthOut, health_of, package_version
from codecomp.serve.api.middleware import BearerToken, BodyLimit
from codecomp.serve.api.schemas import CompletionBody, CompletionOut, complete_document, error_responses
from codecomp.serve.api.server import Server
from codecomp.serve.service.feedback import Event
from codecomp.serve.service.state_store import StoreUnavailable

log = logging.getLogger(__name__)
GUARDED = ("/v1/",)  # every path under it needs the bearer token, when one is set (health too)
DESCRIPTION = (
    "Tabby's completion API, and codecomp's own fields beside it. A path that does not exist answers 404, a "
    'method a path lacks 405, both with `{"error": ...}`.'
)


class EventBody(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # strict: `"elapsed": false` is not 0 ms

    type: Literal["view", "select", "dismiss"]
    completion_id: str
    choice_index: int | None = Field(
        None, ge=0, lt=2**31, description="the choice the event is about (none: the whole list)"
    )
    select_kind: Literal["line"] | None = Field(None, description="Tabby's: 'line' when only a line was accepted")
    view_id: str | None = Field(None, description="Tabby's: the view the event belongs to")
    elapsed: float | None = Field(None, ge=0, description="Tabby's: milliseconds from view to this event")


def create_app(server: Server, manage_lifecycle: bool = True) -> FastAPI:
    """The ASGI app over a `Server`; with `manage_lifecycle` the app starts and stops it."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await server.start()
        yield
        if manage_lifecycle:
            await server.stop()

    app = FastAPI(title="codecomp", version=package_version(), description=DESCRIPTION, lifespan=lifespan)
    app.add_middleware(FastCompletions, server=server)  # added first, so it runs last: after the checks below
    app.add_middleware(BodyLimit, max_bytes=server.config.max_body_bytes, timeout_s=server.config.body_timeout_s)
    if server.config.token:  # added late, so it runs early: before the body is read, sized or parsed
        app.add_middleware(BearerToken, token=server.config.token, prefixes=GUARDED)
    app.add_middleware(ArrivalStamp)  # added last, so it runs first: a request's deadline counts from here

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, error: BadRequest) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = (
            "the body is not valid JSON (or not UTF-8)" if "parsing the body" in str(error.detail) else error.detail
        )
        headers = error.headers
        if error.status_code == 405:  # Starlette names one route's methods; a path may have a route per method
            partial = [route for route in app.routes if route.matches(request.scope)[0] == Match.PARTIAL]
            methods = {method for route in partial for method in getattr(route, "methods", None) or ()}
            headers = {"Allow": ", ".join(sorted(methods))}
        return JSONResponse({"error": message}, status_code=error.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return JSONResponse({"error": "the body is not valid JSON (or not UTF-8)"}, status_code=400)
        detail = [{"field": ".".join(str(part) for part in p["loc"][1:]), "problem": p["msg"]} for p in problems]
        return JSONResponse({"error": "invalid request", "detail": detail}, status_code=422)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete_document(
                FastAPI.openapi(app), languages.described(server.languages), bool(server.config.token)
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.post(
        "/v1/completions",
        response_model=CompletionOut,
        responses=error_responses(400, 422, 503),
        operation_id="completion",
    )
    async def completions(body: CompletionBody, request: Request) -> Any:
        """Valid JSON bodies are answered by the same `reply` in front of FastAPI (`completions.FastCompletions`)."""
        client = client_of(body, request.client.host if request.client is not None else None,
                           request.headers.get("user-agent", ""))  # fmt: skip
        status, payload = await reply(server, body, client)
        if status != 200:
            return JSONResponse(payload, status_code=status, headers={"Retry-After": "1"})
        return payload

    @app.post("/v1/events", operation_id="event", response_model=dict[str, Any],
              responses=error_responses(400, 422, 503))  # fmt: skip
    async def events(body: EventBody) -> Any:
        """Stored and learned from; an event for a completion the server no longer remembers (after a restart,
        or an old one) is stored and acknowledged too, as Tabby does, with `known: false`."""
        event = Event(body.type, body.completion_id, body.choice_index, select_kind=body.select_kind,
                      view_id=body.view_id, elapsed=body.elapsed)  # fmt: skip
        try:
            row, known = await server.service.feedback(event)
        except ValueError as error:
            raise BadRequest(422, str(error)) from None
        except StoreUnavailable as error:  # nothing acknowledged is lost: the editor may send it again
            return JSONResponse({"error": f"store unavailable: {error}"}, status_code=503, headers={"Retry-After": "1"})
        return {"stored": row, "known": known}

    @app.get("/v1/health", response_model=HealthOut, operation_id="health")
    @app.post("/v1/health", response_model=HealthOut, operation_id="health_post")  # Tabby's clients before 0.3
    async def health() -> HealthOut:
        return health_of(server)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        described = []
        for (name, endpoint), model in zip(server.endpoints.items(), server.config.models.values(), strict=True):
            replicas = [{"id": r.identity.decode(errors="replace"), "pid": r.pid, "batch_size": r.aimd.size}
                        for r in endpoint.replicas.values()]  # fmt: skip
            described.append({"name": name, "family": endpoint.family, "version": endpoint.version,
                              "languages": list(model.languages), "replicas": replicas})  # fmt: skip
        return {"models": described, "caches": server.service.cache_stats(),
                "selection": server.service.selection_stats()}  # fmt: skip

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(admin_router(server))  # POST /v1/admin/reload
    return app
