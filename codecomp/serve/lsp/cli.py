"""`codecomp-lsp`: the editor plugin, a language server over stdio (or TCP) that asks `codecomp-serve`.

codecomp-lsp                      # what editors start; settings from initializationOptions,
                                  # CODECOMP_URL / CODECOMP_TOKEN, or ~/.config/codecomp/lsp.toml
codecomp-lsp --tcp --port 2087    # for debugging with a client that connects over TCP
"""

from __future__ import annotations

import argparse
import logging
import sys

from codecomp.serve.lsp.server import VERSION, create_server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="codecomp-lsp", description=__doc__.splitlines()[0])
    parser.add_argument("--stdio", action="store_true", help="talk LSP over stdin/stdout (the default)")
    parser.add_argument("--tcp", action="store_true", help="listen on --host:--port instead")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2087)
    parser.add_argument("--log-file", help="write the log here (default: stderr; stdout carries the protocol)")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"codecomp-lsp {VERSION}")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s",
        **({"filename": args.log_file} if args.log_file else {"stream": sys.stderr}),
    )  # fmt: skip
    server = create_server()
    if args.tcp:
        server.start_tcp(args.host, args.port)
    else:
        server.start_io()


if __name__ == "__main__":
    main()
