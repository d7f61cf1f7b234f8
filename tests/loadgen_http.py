"""A real HTTP server on a free local port, in a background thread, for the load generator's tests."""

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import uvicorn
from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse


def ok_body(**extra) -> dict:
    return {"id": "x", "choices": [{"index": 0, "text": "a"}], "degraded": False, "cache": {"m": "miss"}, **extra}


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


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run `app` under uvicorn on a free local port, in a background thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uvicorn_server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uvicorn_server.should_exit = True
        thread.join(5)
        sock.close()
