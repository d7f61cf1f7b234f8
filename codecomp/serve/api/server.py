"""Assembles a frontend from plain settings: router transport, endpoints, supervisor, service, feedback store."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

from codecomp.checkpoint import CheckpointError
from codecomp.serve.container.process import Options
from codecomp.serve.dispatch.dispatcher import BatchingConfig, Frontend, ModelEndpoint
from codecomp.serve.dispatch.metrics import Metrics
from codecomp.serve.dispatch.supervisor import ContainerSpec, Supervisor
from codecomp.serve.dispatch.transport import RouterTransport, ZmqRouter
from codecomp.serve.service.completion import CompletionService, ServiceConfig
from codecomp.serve.service.feedback import FeedbackStore

log = logging.getLogger(__name__)

# Editors name languages their own way (VS Code ids, file extensions); the models know two.
LANGUAGE_ALIASES = {
    "javascript": "javascript", "javascriptreact": "javascript", "js": "javascript", "jsx": "javascript",
    "mjs": "javascript", "cpp": "cpp", "c++": "cpp", "cc": "cpp", "cxx": "cpp", "hpp": "cpp",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    checkpoint: str
    languages: tuple[str, ...] = ("cpp", "javascript")
    replicas: int = 1
    threads: int = 1
    options: Options = dataclasses.field(default_factory=Options)
    # Under load: smaller answers before shedding.
    light: Options = dataclasses.field(default_factory=lambda: Options(k=1, beam=1, max_chars=40))
    batching: BatchingConfig = dataclasses.field(default_factory=BatchingConfig)
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # the container runner's own
    trigger: str = "always"  # or "token": asked only where a token is being typed

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        raw = dict(raw)
        for name, kind in (("options", Options), ("light", Options), ("batching", BatchingConfig)):
            if name in raw:
                raw[name] = kind(**raw[name])
        raw["languages"] = tuple(raw.get("languages", cls.languages))
        return cls(**raw)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    models: dict[str, ModelConfig]
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None  # bearer token required on /v1 (health excepted) when set
    container_address: str = "tcp://127.0.0.1:0"  # where containers connect; port 0: any free port
    heartbeat_s: float = 0.2
    heartbeat_timeout_s: float = 1.0
    max_body_bytes: int = 4_000_000
    store_path: str = "serve_state/feedback.sqlite"
    service: ServiceConfig = dataclasses.field(default_factory=ServiceConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ServerConfig:
        raw = dict(raw)
        raw["models"] = {name: ModelConfig.from_dict(model) for name, model in raw["models"].items()}
        raw["service"] = ServiceConfig(**raw.get("service", {}))
        return cls(**raw)


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
            name: ModelEndpoint(name, m.batching, m.options, m.light, self.metrics, m.trigger)
            for name, m in config.models.items()
        }
        languages: dict[str, list[str]] = {}
        for name, model in config.models.items():
            for language in model.languages:
                languages.setdefault(language, []).append(name)
        self.transport = transport if transport is not None else ZmqRouter(config.container_address)
        self.frontend = Frontend(self.transport, self.endpoints, self.metrics, config.heartbeat_timeout_s)
        self.service = CompletionService(self.endpoints, languages, config.service, self.metrics)
        self.store = FeedbackStore(config.store_path)
        self.supervisor: Supervisor | None = None
        self._lag_watch: asyncio.Task[None] | None = None
        if supervise:
            address = getattr(self.transport, "address", "")
            specs = [
                ContainerSpec(name, m.checkpoint, m.replicas, m.threads, m.settings)
                for name, m in config.models.items()
            ]
            self.supervisor = Supervisor(self.frontend, address, specs, self.metrics, config.heartbeat_s)

    @property
    def languages(self) -> list[str]:
        return sorted(self.service.languages)

    async def start(self, ready_timeout_s: float = 120.0) -> None:
        await self.frontend.start()
        self._lag_watch = asyncio.create_task(self.service.watch_loop_lag())
        try:
            if self.supervisor is not None:
                self.supervisor.start()
                await self.supervisor.wait_ready(ready_timeout_s)
        except BaseException:
            await self.stop()  # no containers, sockets or files left behind
            raise

    async def stop(self) -> None:
        if self._lag_watch is not None:
            self._lag_watch.cancel()
        await self.frontend.stop()
        if self.supervisor is not None:
            await self.supervisor.stop()
        self.transport.close()
        self.store.close()


def _check_checkpoint(name: str, path: str) -> None:
    """Fail at start-up with a clear message, not with containers crashing in a loop."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"model {name!r}: no checkpoint at {path} (train one first: see the README)")
    with file.open("rb") as handle:
        if handle.read(4) != b"PK\x03\x04":  # torch.save writes a zip archive
            raise CheckpointError(f"model {name!r}: {path} is damaged or not a torch checkpoint")
