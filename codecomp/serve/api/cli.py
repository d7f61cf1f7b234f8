"""`codecomp-serve`: start the completion server and its model containers (conf/serve.yaml); and
`codecomp-serve reload MODEL [CHECKPOINT]`: have a running server serve a new checkpoint without stopping.

The server's command line is Hydra's (overrides such as `port=9000`), which has no subcommands: `reload` as
the first argument is taken here, before Hydra sees the command line, and the rest is parsed by argparse.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

import httpx
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
def serve(cfg: DictConfig) -> None:
    config = OmegaConf.to_object(cfg)  # the `hydra` node is not part of it
    assert isinstance(config, ServerConfig)
    server = Server(config)
    log.info("serving %s on http://%s:%d", ", ".join(server.endpoints), config.host, config.port)
    uvicorn.run(create_app(server), host=config.host, port=config.port, log_level="warning")


def reload(argv: Sequence[str]) -> int:
    """`codecomp-serve reload`: POST /v1/admin/reload and print the answer; 0 when the model serves the file."""
    parser = argparse.ArgumentParser(
        prog="codecomp-serve reload",
        description="Have a running codecomp-serve serve a model from a new checkpoint, without stopping: new "
        "containers start and warm up, take over once ready, and the old ones finish and stop. A checkpoint that "
        "cannot serve is refused and the old one keeps serving.",
    )
    parser.add_argument("model", help="the served model's name (char, tree, ngram)")
    parser.add_argument("checkpoint", nargs="?", help="the file to serve, a path on the server (default: the "
                        "model's present file, read again)")  # fmt: skip
    parser.add_argument("--url", default=os.environ.get("CODECOMP_URL", "http://127.0.0.1:8000"),
                        help="the server (default: $CODECOMP_URL, else %(default)s)")  # fmt: skip
    parser.add_argument("--token", default=os.environ.get("CODECOMP_TOKEN"),
                        help="its bearer token (default: $CODECOMP_TOKEN)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    body = {"model": args.model, "checkpoint": args.checkpoint}
    try:
        response = httpx.post(f"{args.url.rstrip('/')}/v1/admin/reload", json=body, headers=headers,
                              timeout=args.timeout)  # fmt: skip
    except httpx.HTTPError as error:
        print(f"codecomp-serve reload: no answer from {args.url}: {error}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        try:
            why = response.json().get("error", response.text)
        except ValueError:
            why = response.text
        print(f"codecomp-serve reload: refused ({response.status_code}): {why}", file=sys.stderr)
        return 1
    print(json.dumps(response.json(), indent=1))
    return 0


def main() -> None:
    if sys.argv[1:2] == ["reload"]:
        sys.exit(reload(sys.argv[2:]))
    serve()


if __name__ == "__main__":
    main()
