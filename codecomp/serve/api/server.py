"""Assembles a frontend from plain settings: router transport, endpoints, supervisor, service, feedback store,
and the hot reload of checkpoints (`POST /v1/admin/reload`, or SIGHUP: every model whose file changed)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal

from codecomp.checkpoint import CheckpointError, check_file
from codecomp.serve.api.config import OptionsConfig, ServerConfig
from codecomp.serve.dispatch.dispatcher import Dispatcher, ModelEndpoint
from codecomp.serve.dispatch.metrics import Metrics
from codecomp.serve.dispatch.reload import Reloader
from codecomp.serve.dispatch.supervisor import ContainerSpec, Supervisor
from codecomp.serve.dispatch.transport import RouterTransport, ZmqRouter
from codecomp.serve.protocol import Options
from codecomp.serve.service.completion import CompletionService
from codecomp.serve.service.state_store import make_store

log = logging.getLogger(__name__)


class Server:
    """Everything behind the HTTP app. `start` launches the containers and waits for them."""

    def __init__(self, config: ServerConfig, transport: RouterTransport | None = None,
                 supervise: bool = True) -> None:  # fmt: skip
        """`transport` and `supervise=False` let a test bring its own containers."""
        if not config.models:
            raise ValueError("no models to serve")
        if supervise:  # before any socket or file is opened
            for name, model in config.models.items():
                _check_checkpoint(name, model.checkpoint)
        self.config = config
        self.metrics = Metrics()
        self.endpoints = {
            name: ModelEndpoint(
                name, m.batching, wire_options(m.options), wire_options(m.light), self.metrics, m.trigger
            )
            for name, m in config.models.items()
        }
        languages: dict[str, list[str]] = {}
        for name, model in config.models.items():
            for language in model.languages:
                languages.setdefault(language, []).append(name)
        self.transport = transport if transport is not None else ZmqRouter(config.container_address)
        self.dispatcher = Dispatcher(self.transport, self.endpoints, self.metrics, config.heartbeat_timeout_s)
        self.store = make_store(config.store, config.store_path)
        self.metrics.store_degraded.set_function(lambda: float(self.store.health()[0]))
        self.metrics.store_buffered.set_function(lambda: float(self.store.health()[1]))
        self.service = CompletionService(self.endpoints, languages, config.service, self.metrics, self.store)
        self.supervisor: Supervisor | None = None
        self.reloader: Reloader | None = None  # only supervised containers can be replaced
        self._reloads: set[asyncio.Task[object]] = set()  # started by SIGHUP
        if supervise:
            address = getattr(self.transport, "address", "")
            specs = [
                ContainerSpec(
                    name, m.checkpoint, m.replicas, m.threads, m.settings, m.warmup_batch, wire_options(m.options)
                )
                for name, m in config.models.items()
            ]
            self.supervisor = Supervisor(self.dispatcher, address, specs, self.metrics, config.heartbeat_s)
            self.reloader = Reloader(self.dispatcher, self.supervisor)

    @property
    def languages(self) -> list[str]:
        return sorted(self.service.languages)

    async def start(self, ready_timeout_s: float = 120.0) -> None:
        await self.dispatcher.start()
        try:
            await self.store.start()
            if self.supervisor is not None:
                self.supervisor.start()
                await self.supervisor.wait_ready(ready_timeout_s)
        except BaseException:
            await self.stop()  # no containers, sockets or files left behind
            raise
        if self.reloader is not None:
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # not the main thread: no signal
                asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self) -> None:
        assert self.reloader is not None
        log.info("SIGHUP: reloading every model whose checkpoint file changed")
        task = asyncio.ensure_future(self.reloader.reload_changed())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def stop(self) -> None:
        if self.reloader is not None:
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in list(self._reloads):
            task.cancel()  # its new containers are stopped with the others below
        if self.supervisor is not None:
            await self.supervisor.stop_watching()  # not to restart the containers the dispatcher now lets go
        await self.dispatcher.stop()
        if self.supervisor is not None:
            await self.supervisor.stop()
        self.transport.close()
        await self.service.drain()
        await self.store.close()


def wire_options(options: OptionsConfig) -> Options:
    """The configured options as the protocol's struct, which travels with every batch."""
    return Options(**dataclasses.asdict(options))


def _check_checkpoint(name: str, path: str) -> None:
    """Fail at start-up with a clear message, not with containers crashing in a loop (without torch:
    the containers load the file)."""
    try:
        check_file(path)
    except CheckpointError as error:
        raise CheckpointError(f"model {name!r}: {error}") from None
