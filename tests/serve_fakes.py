"""In-process stand-ins for model containers, and a server around them, for the serving tests.

The containers are the real `ContainerCore` around a fake runner, talking over `InProcessRouter`, so the
RPC messages, batching, caches, deadlines and replica loss run without processes;
tests/test_serve_processes.py runs the real thing.
"""

import asyncio
import contextlib
import time
import types

import httpx

from codecomp.serve import protocol
from codecomp.serve.api.app import create_app
from codecomp.serve.api.config import ModelConfig, OptionsConfig, ServerConfig
from codecomp.serve.api.server import Server
from codecomp.serve.container.core import ContainerCore
from codecomp.serve.dispatch.dispatcher import BatchingConfig
from codecomp.serve.dispatch.transport import InProcessRouter
from codecomp.serve.protocol import WireCandidate
from codecomp.serve.service.completion import ServiceConfig


class EchoRunner:
    """Completes with the last word of the prefix reversed; counts batches and records the sessions it
    served; can be slow or broken."""

    family = "fake"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s, self.batches, self.sessions, self.broken = delay_s, [], [], False

    def predict(self, requests, deadlines, options):
        self.batches.append(len(requests))
        self.sessions.extend(r.session for r in requests)
        if self.broken:
            raise RuntimeError("model exploded")
        words = [r.prefix.split()[-1] if r.prefix.split() else b"" for r in requests]
        return [[WireCandidate(word[::-1] + b"!", -0.5), WireCandidate(b"second", -1.5)][: options.k] for word in words]


class FakeContainer:
    """A container's loop over an in-process dealer: hello, heartbeats, and batches after `delay_s`."""

    def __init__(self, router, identity, model, runner, delay_s=0.0, heartbeat_s=0.05):
        self.dealer = router.connect(identity)
        self.core = ContainerCore(runner, model, version="v1")
        self.delay_s, self.heartbeat_s = delay_s, heartbeat_s
        self.silent = False  # a hung container: it stops beating and answering
        self.tasks = []

    async def start(self):
        await self.dealer.send(self.core.hello())
        self.tasks = [asyncio.ensure_future(self._answer()), asyncio.ensure_future(self._beat())]

    async def _answer(self):
        while True:
            frame = await self.dealer.receive()
            received = time.monotonic()
            await asyncio.sleep(self.delay_s)
            if self.silent:
                continue
            reply = self.core.handle(frame, received)
            if reply is None:
                return
            await self.dealer.send(reply)

    async def _beat(self):
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if not self.silent:
                await self.dealer.send(self.core.hello(protocol.Heartbeat))

    def stop(self):
        for task in self.tasks:
            task.cancel()


def config(tmp_path, models=("echo",), **service):
    batching = BatchingConfig(objective_ms=20, max_batch=8, max_queue=service.pop("max_queue", 64))
    return ServerConfig(
        models={
            name: ModelConfig(checkpoint="unused", options=OptionsConfig(k=2), batching=batching) for name in models
        },
        heartbeat_timeout_s=0.3,
        max_body_bytes=20_000,
        store_path=str(tmp_path / "feedback.sqlite"),
        service=ServiceConfig(**{"objective_ms": 200.0, "margin_ms": 20.0, **service}),
        token=None,
    )


@contextlib.asynccontextmanager
async def serving(cfg, containers=(("echo", "echo-0", 0.0),), token=None):
    """A started server with fake containers, (model, identity, delay) each; yields its app, server and fakes."""
    router = InProcessRouter()
    if token:
        cfg = ServerConfig(**{**cfg.__dict__, "token": token})
    server = Server(cfg, transport=router, supervise=False)
    await server.start()
    fakes = []
    try:
        for model, identity, delay in containers:
            fake = FakeContainer(router, identity.encode(), model, EchoRunner(), delay)
            await fake.start()
            fakes.append(fake)
        for _ in range(100):
            if len(server.dispatcher.replicas) == len(fakes):
                break
            await asyncio.sleep(0.01)
        yield types.SimpleNamespace(app=create_app(server, manage_lifecycle=False), server=server, fakes=fakes)
    finally:
        for fake in fakes:
            fake.stop()
        await server.stop()


@contextlib.asynccontextmanager
async def running(cfg, containers=(("echo", "echo-0", 0.0),), token=None):
    """`serving`, with an HTTP client of its app; yields its client, server and fakes."""
    async with serving(cfg, containers, token) as served:
        transport = httpx.ASGITransport(app=served.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://codecomp") as client:
            yield types.SimpleNamespace(client=client, server=served.server, fakes=served.fakes)


def body(prefix="const total = compute", suffix="\n", language="javascript", user="ada"):
    return {"language": language, "segments": {"prefix": prefix, "suffix": suffix}, "user": user}
