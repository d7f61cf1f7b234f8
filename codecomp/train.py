"""`codecomp-train`: not built yet (the Char-LSTM and Tree-LSTM issues add it)."""

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="codecomp-train",
        description="STUB: training is not implemented yet; it lands with the Char-LSTM and Tree-LSTM issues.",
    )
    parser.parse_args()
    raise SystemExit("codecomp-train is a stub until the model issues land (see --help)")
