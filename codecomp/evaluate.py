"""`codecomp-eval`: not built yet (the Char-LSTM and Tree-LSTM issues add it)."""

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="codecomp-eval",
        description="STUB: evaluation is not implemented yet; it lands with the Char-LSTM and Tree-LSTM issues.",
    )
    parser.parse_args()
    raise SystemExit("codecomp-eval is a stub until the model issues land (see --help)")
