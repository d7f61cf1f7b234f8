"""`codecomp-serve`: start the completion server and its model containers (conf/serve.yaml)."""

from __future__ import annotations

import logging
from typing import Any, cast

import hydra
import uvicorn
from omegaconf import DictConfig, OmegaConf

from codecomp import CONFIG_DIR
from codecomp.serve.api.app import create_app
from codecomp.serve.api.server import Server, ServerConfig

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="serve")
def main(cfg: DictConfig) -> None:
    raw = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    raw.pop("hydra", None)
    server = Server(ServerConfig.from_dict(raw))
    log.info("serving %s on http://%s:%d", ", ".join(server.endpoints), cfg.host, cfg.port)
    uvicorn.run(create_app(server), host=cfg.host, port=cfg.port, log_level="warning")


if __name__ == "__main__":
    main()
