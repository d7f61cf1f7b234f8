"""The settings of `codecomp-serve` (conf/serve.yaml), typed: the schema Hydra checks the yaml and overrides against.

The same dataclasses are the schema and what `Server` receives (`OmegaConf.to_object`), so a wrong type
(`port=abc`) or an unknown key (`models.char.nope=1`) stops the server at start-up, before any model
loads or socket opens. Torch-free, like the rest of the HTTP process.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.core.config_store import ConfigStore

from codecomp.serve.dispatch.dispatcher import BatchingConfig
from codecomp.serve.service.completion import ServiceConfig
from codecomp.serve.service.state_store import StoreConfig

SCHEMA = "serve_schema"  # the name conf/serve.yaml lists first in its defaults
QUANTIZE_MODES = ("none", "int8")  # codecomp.inference.quantize's, which this torch-free module cannot import


@dataclasses.dataclass
class OptionsConfig:
    """How much work one batch may do; the server turns it into the wire's `protocol.Options` (a msgspec
    Struct, which OmegaConf cannot use as a schema)."""

    k: int = 3  # candidates per request
    beam: int = 4  # beam width
    max_chars: int = 80  # bytes per line


@dataclasses.dataclass
class ModelConfig:
    """One served model: its checkpoint, the languages it serves and its containers."""

    checkpoint: str
    languages: list[str] = dataclasses.field(default_factory=lambda: ["cpp", "javascript"])
    replicas: int = 1
    threads: int = 1  # torch threads per container
    options: OptionsConfig = dataclasses.field(default_factory=OptionsConfig)
    # Under load: smaller answers before shedding.
    light: OptionsConfig = dataclasses.field(default_factory=lambda: OptionsConfig(k=1, beam=1, max_chars=40))
    batching: BatchingConfig = dataclasses.field(default_factory=BatchingConfig)
    # The container runner's own; `quantize: int8` runs the model's matrix products in int8 (the Char-LSTM and
    # the Tree-LSTM; codecomp/inference/quantize.py), `none` (the default) in float.
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    trigger: str = "always"  # or "token": asked only where a token is being typed
    warmup_batch: int = 8  # a new container first answers dummy batches of 1, 2, 4, ... up to this size (0: none)

    def __post_init__(self) -> None:
        # Checked here, at start-up, rather than by a container crashing in a loop on it.
        if self.settings.get("quantize", "none") not in QUANTIZE_MODES:
            raise ValueError(f"settings.quantize must be one of {QUANTIZE_MODES}, not {self.settings['quantize']!r}")


@dataclasses.dataclass
class ServerConfig:
    """Everything behind the HTTP app; times in seconds unless the name says otherwise."""

    models: dict[str, ModelConfig]
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None  # bearer token required on every /v1 path (health too) when set
    container_address: str = "tcp://127.0.0.1:0"  # where containers connect; port 0: any free port
    heartbeat_s: float = 0.2
    heartbeat_timeout_s: float = 1.0
    max_body_bytes: int = 4_000_000
    body_timeout_s: float = 10.0  # a body not whole by then is refused (408) and its connection closed
    store_path: str = "serve_state/feedback.sqlite"  # SQLite: the events and state; Redis: the local buffer
    store: StoreConfig = dataclasses.field(default_factory=StoreConfig)  # sqlite or redis (shared by frontends)
    service: ServiceConfig = dataclasses.field(default_factory=ServiceConfig)


def register_schema() -> None:
    """Make `serve_schema` known to Hydra; the CLI calls it before composing, as do tests."""
    ConfigStore.instance().store(name=SCHEMA, node=ServerConfig)
