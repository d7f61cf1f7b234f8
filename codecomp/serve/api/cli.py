"""`codecomp-serve`: start the completion server and its model containers (conf/serve.yaml)."""

from __future__ import annotations

import logging

import hydra
import uvicorn
from omegaconf import DictConfig, OmegaConf

from codecomp import CONFIG_DIR
from codecomp.serve.api.app import create_app
from codecomp.serve.api.config import ServerConfig, register_schema
from codecomp.serve.api.server import Server

log = logging.getLogger(__name__)

register_schema()  # before hydra.main composes conf/serve.yaml against it


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="serve")
def main(cfg: DictConfig) -> None:
    config = OmegaConf.to_object(cfg)  # the `hydra` node is not part of it
    assert isinstance(config, ServerConfig)
    server = Server(config)
    log.info("serving %s on http://%s:%d", ", ".join(server.endpoints), config.host, config.port)
    uvicorn.run(create_app(server), host=config.host, port=config.port, log_level="warning")


if __name__ == "__main__":
    main()
