"""Tree-LSTM encoder speed: the level-batched BiTreeEncoder against the per-node recursive reference.

    python -m benchmarks.tree_lstm_speed [--corpus data/small] [--trees 64] [--hidden 128] [--threads 1]

Reads the first `--trees` CodeTrees of the corpus's train tree shard (run `codecomp-data` first) and
encodes them with one encoder: the level-batched forward over the whole forest at once, and the
reference one node at a time. Both run under `torch.inference_mode`, on CPU and on CUDA when there is
one. The reference runs on the first `--reference-trees` trees only and its time is scaled to the
whole batch by node count (it is linear in nodes); its outputs are checked against the batched ones.
Also prints the batched encoder's forward + backward throughput. Node ids come from the corpus's
vocabulary, as in training: the batched encoder computes the input terms (and the leaves' states)
once per distinct (kind, value) pair, so its speed depends on how many distinct pairs the forest has.

On a machine whose cores are busy, pass `--threads 1`: with as many intra-op threads as cores, every
parallel kernel of the batched encoder waits for a descheduled thread (over 10x slower), while the
reference's tiny kernels never go parallel, so the comparison would mostly measure the contention.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.tree_lstm_reference import reference_encode
from codecomp.data.shards import TreeShard
from codecomp.data.tree_batch import TreeBatch
from codecomp.data.tree_vocab import TreeVocab
from codecomp.models.components.tree_lstm import BiTreeEncoder
from codecomp.parsing import CodeTree

LANGUAGES = ("cpp", "javascript")  # one vocabulary for both, as the model's default configuration has


def _best_of(repeat: int, run: Callable[[], object], device: torch.device) -> float:
    """Fastest of `repeat` timed runs after one warm-up, in seconds."""
    best = float("inf")
    for attempt in range(repeat + 1):
        started = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if attempt:
            best = min(best, time.perf_counter() - started)
    return best


def bench(
    encoder: BiTreeEncoder,
    trees: list[CodeTree],
    ids: list[tuple[np.ndarray, np.ndarray]],
    options: argparse.Namespace,
    device: torch.device,
) -> None:
    """Time both encoders on `trees` on one device and print a table."""
    encoder = encoder.to(device)
    n_nodes = sum(map(len, trees))
    batch = TreeBatch.from_trees(trees, [k for k, _ in ids], [v for _, v in ids]).to(device)
    with torch.inference_mode():
        batched_s = _best_of(options.repeat, lambda: encoder(batch), device)
        out = encoder(batch)
        subset = trees[: options.reference_trees]
        reference_encode(encoder, *ids[0], trees[0])  # warm-up, as the batched runs had
        started = time.perf_counter()
        references = [reference_encode(encoder, *ids[t], tree) for t, tree in enumerate(subset)]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        reference_subset_s = time.perf_counter() - started
    ptr = batch.tree_ptr.tolist()
    error = max(float((out[ptr[t] : ptr[t + 1]] - ref).abs().max()) for t, ref in enumerate(references))
    if error > 1e-4:
        raise SystemExit(f"the encoders disagree: max |batched - reference| {error:.1e}")
    subset_nodes = sum(map(len, subset))
    reference_s = reference_subset_s * n_nodes / subset_nodes

    def train_step() -> None:
        encoder.zero_grad(set_to_none=True)
        encoder(batch).square().mean().backward()

    encoder.train()
    train_s = _best_of(options.repeat, train_step, device)
    encoder.eval()

    print(f"\n{device.type}: {len(trees)} trees, {n_nodes} nodes, {len(batch.up_sizes)} heights, "
          f"{len(batch.down_sizes)} depths, {len(batch.input_kinds)} distinct (kind, value) inputs; "
          f"hidden {options.hidden}, embed {options.embed}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(f"  reference: {len(subset)} trees, {subset_nodes} nodes in {reference_subset_s:.2f} s, "
          f"scaled by nodes to {reference_s:.2f} s for the batch; max |batched - reference| {error:.1e}")  # fmt: skip
    print(f"  {'':<28} {'seconds':>8} {'trees/s':>9} {'nodes/s':>10}")
    rows = [("reference (per node)", reference_s), ("level-batched", batched_s), ("level-batched fwd+bwd", train_s)]
    for name, seconds in rows:
        print(f"  {name:<28} {seconds:>8.3f} {len(trees) / seconds:>9.1f} {n_nodes / seconds:>10.0f}")
    print(f"  speed-up of level-batched over reference (inference): {reference_s / batched_s:.1f}x")


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--corpus", type=Path, default=Path("data/small"))
    args.add_argument("--language", default="cpp", choices=LANGUAGES)
    args.add_argument("--trees", type=int, default=64, help="trees in the batch (the first of the train shard)")
    args.add_argument("--reference-trees", type=int, default=8, help="trees the reference runs on")
    args.add_argument("--hidden", type=int, default=128)
    args.add_argument("--embed", type=int, default=64, help="width of each of the kind and value embeddings")
    args.add_argument("--repeat", type=int, default=10, help="timed batched runs; the fastest counts")
    args.add_argument("--threads", type=int, default=None, help="intra-op CPU threads (default: torch's)")
    options = args.parse_args()
    if options.threads:
        torch.set_num_threads(options.threads)

    shard = TreeShard(options.corpus / "train" / options.language)
    trees = [shard.tree(i) for i in range(min(options.trees, len(shard)))]
    vocab = TreeVocab.from_corpus(options.corpus, LANGUAGES)
    ids = [vocab.encode(tree) for tree in trees]
    started = time.perf_counter()
    TreeBatch.from_trees(trees, [k for k, _ in ids], [v for _, v in ids])
    print(f"TreeBatch.from_trees: {time.perf_counter() - started:.3f} s for {len(trees)} trees")
    torch.manual_seed(0)
    encoder = BiTreeEncoder(len(vocab.kinds), len(vocab.values), options.embed, options.hidden).eval()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        bench(encoder, trees, ids, options, device)


if __name__ == "__main__":
    main()
