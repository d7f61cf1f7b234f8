"""Tree-LSTM completer latency for one hole in real files of about 1k, 5k and 20k nodes.

    python -m benchmarks.hole_latency [--checkpoint checkpoints/tree_lstm_quick/best.ckpt] [--repeat 5]

For each size, the file of the corpus closest to it; the cursor at its middle identifier. Reports
the end-to-end time of `TreeLSTMCompleter.complete_holes` (parse with the placeholder, encode, rank) and,
beside it, tree-sitter's parse of the same file, the part no model can avoid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import median_ms
from codecomp.data.holes import target_leaves
from codecomp.data.shards import TextShard, TreeShard
from codecomp.inference.tree_lstm import HoleRequest, TreeLSTMCompleter
from codecomp.parsing import parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/tree_lstm_quick/best.ckpt")
    parser.add_argument("--corpus", type=Path, default=Path("data/small"))
    parser.add_argument("--language", default="javascript")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    completer = TreeLSTMCompleter.from_checkpoint(args.checkpoint)
    print(f"checkpoint {args.checkpoint}, threads={torch.get_num_threads()}")
    folder = args.corpus / "train" / args.language
    trees, texts = TreeShard(folder), TextShard(folder)
    sizes = np.diff(np.asarray(trees.tree_ptr))
    print(f"{'target':>7} {'nodes':>7} {'KB':>6} {'complete ms':>12} {'parse ms':>9}")
    for target in (1_000, 5_000, 20_000):
        index = int(np.argmin(np.abs(sizes - target)))
        document = texts.document(int(trees.file_index[index]))
        tree = parse(document, args.language)
        leaves = target_leaves(tree, completer.target_kinds)
        cursor = int(tree.ends[leaves[len(leaves) // 2]])
        request = HoleRequest(document, cursor, args.language)
        total = median_ms(args.repeat, lambda: completer.complete_holes([request], k=5))  # noqa: B023
        bare = median_ms(args.repeat, lambda: parse(document, args.language))  # noqa: B023
        print(f"{target:>7,} {len(tree):>7,} {len(document) / 1e3:>6.1f} {total:>12.1f} {bare:>9.1f}")


if __name__ == "__main__":
    main()
