"""Parse throughput: tree-sitter's bare parse against parse + CodeTree conversion, same files, same run.

    python -m benchmarks.parse_throughput [--corpus data/small] [--repeat 3]

Reads the text shards of a built corpus (run `codecomp-data` first) and prints MB/s per language
for both, and their ratio (the cost of the cursor walk and the arrays).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from pathlib import Path

from codecomp.data.shards import TextShard
from codecomp.parsing import parse
from codecomp.parsing.languages import parser


def _best_of(repeat: int, parse_one: Callable[[bytes], object], documents: list[bytes]) -> float:
    """Fastest of `repeat` passes over all documents, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for document in documents:
            parse_one(document)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--corpus", type=Path, default=Path("data/small"))
    args.add_argument("--repeat", type=int, default=3)
    options = args.parse_args()
    print(f"{'language':<11} {'files':>6} {'MB':>6} {'bare MB/s':>10} {'CodeTree MB/s':>14} {'ratio':>6}")
    for language in ("cpp", "javascript"):
        documents = [
            doc for split in ("train", "valid", "test") for doc in TextShard(options.corpus / split / language)
        ]
        megabytes = sum(map(len, documents)) / 1e6
        bare = _best_of(options.repeat, parser(language).parse, documents)
        full = _best_of(options.repeat, functools.partial(parse, language=language), documents)
        print(f"{language:<11} {len(documents):>6} {megabytes:>6.2f} {megabytes / bare:>10.2f} "
              f"{megabytes / full:>14.2f} {bare / full:>6.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
