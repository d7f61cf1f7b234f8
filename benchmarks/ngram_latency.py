"""N-gram completer latency: line completion at cursors of held-out files, per request, at batch 1, 8 and 32.

    python -m benchmarks.ngram_latency [--checkpoint checkpoints/ngram/best.ckpt] [--corpus data/small]

Three ways: the global model alone (cache off); the cache with a new session per request (every request counts
its document); and a session typing on (the request after one more keystroke in the same line, whose document
counts are kept). Options as served: k=1, beam 2, 32 bytes.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.timing import median_ms
from codecomp.data.shards import TextShard
from codecomp.inference.completer import CompletionOptions, CompletionRequest
from codecomp.inference.ngram import NGramCompleter


def cursors(corpus: Path, count: int, seed: int = 0) -> list[tuple[bytes, bytes, str]]:
    """(prefix, suffix, language) at random cursors inside lines of the test split, alternating languages."""
    rng = np.random.default_rng(seed)
    out: list[tuple[bytes, bytes, str]] = []
    shards = {language: TextShard(corpus / "test" / language) for language in ("javascript", "cpp")}
    while len(out) < count:
        for language, shard in shards.items():
            document = shard.document(int(rng.integers(len(shard))))
            cut = int(rng.integers(1, len(document)))
            if document[cut - 1 : cut] != b"\n":  # the last keystroke stayed in the line
                out.append((document[:cut], document[cut:], language))
    return out[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/ngram/best.ckpt")
    parser.add_argument("--corpus", type=Path, default=Path("data/small"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    options = CompletionOptions(k=1, beam=2, max_chars=32)
    points = cursors(args.corpus, 32)
    plain = NGramCompleter.from_checkpoint(args.checkpoint, cache=False)
    cached = NGramCompleter.from_checkpoint(args.checkpoint)
    print(f"ms per request, k=1 beam=2 max_chars=32, {len(points)} cursors of {args.corpus}/test")
    print(f"{'batch':>5} {'cache off':>10} {'new session':>12} {'typing on':>10}")
    for batch in (1, 8, 32):
        groups = [points[i : i + batch] for i in range(0, len(points), batch)]
        fresh = [[CompletionRequest(p, s, lang) for p, s, lang in group] for group in groups]
        typed = [[CompletionRequest(p, s, lang, f"user{i}\0file\0{lang}") for i, (p, s, lang) in enumerate(group)]
                 for group in groups]  # fmt: skip
        for group in typed:  # the session read its document one keystroke ago
            cached.complete([CompletionRequest(r.prefix[:-1], r.suffix, r.language, r.session) for r in group], options)
        timings = [
            median_ms(args.repeat, partial(run, plain, fresh, options)),
            median_ms(args.repeat, partial(run, cached, fresh, options)),
            median_ms(args.repeat, partial(run, cached, typed, options)),
        ]
        columns = " ".join(f"{t / len(points):>{w}.2f}" for t, w in zip(timings, (10, 12, 10), strict=True))
        print(f"{batch:>5} {columns}")


def run(completer: NGramCompleter, groups: list[list[CompletionRequest]], options: CompletionOptions) -> None:
    for group in groups:
        completer.complete(group, options)


if __name__ == "__main__":
    main()
