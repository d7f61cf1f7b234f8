"""MinHash/LSH: datasketch (codecomp.text.minhash) against the project's hand-written versions, same inputs, same run.

    python -m benchmarks.minhash [--corpus data/small] [--repeat 5] [--contexts 400] [--files 2500]

The hand-written versions are kept here, as they were before the shared module replaced them, as the
reference that justifies the choice:
- serving path (the approximate cache, 16 bands x 4 rows): 3-token shingles of a 64-token context hashed
  with blake2b-64, permuted by a * x + b mod 2**64 in numpy, band keys as blake2b digests of (bucket,
  band, values); per-request microseconds for signature + band keys of one context.
- corpus dedupe (20 bands x 5 rows): token sets hashed with crc32, multiply-shift permutations in
  numpy, a dict of band buckets; files per second for signatures + LSH candidate pairs.
Both sides also get planted near-duplicates (the same ones), and the share that becomes LSH
candidates is printed per Jaccard range, so that speed is not bought with recall.

Reads the text shards of a built corpus (train and test, C++ and JavaScript); without one, the
repository's own .py files.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from codecomp.data.shards import TextShard
from codecomp.data_prep.dedupe import token_set
from codecomp.text.digest import digest
from codecomp.text.minhash import MinHasher, jaccard
from codecomp.text.tokens import code_tokens

ROOT = Path(__file__).resolve().parents[1]
CONTEXT, SHINGLE = 64, 3
CACHE_BANDS, CACHE_ROWS = 16, 4
DEDUPE_BANDS, DEDUPE_ROWS = 20, 5
BUCKET = digest((b"model-version", b"javascript", b"  return x"))  # the salt of one cache bucket


# ---------------------------------------------------------------- the hand-written versions


class OwnContextHasher:
    """The approximate cache's MinHash before issue 12: blake2b-64 shingles, uint64 permutations."""

    def __init__(self, bands: int, rows: int, seed: int = 0) -> None:
        rng = random.Random(seed)
        self.bands, self.rows = bands, rows
        self.mult = np.array([rng.randrange(1 << 64) | 1 for _ in range(bands * rows)], dtype=np.uint64)
        self.add = np.array([rng.randrange(1 << 64) for _ in range(bands * rows)], dtype=np.uint64)

    def band_keys(self, tokens: list[bytes], bucket: bytes) -> tuple[bytes, ...]:
        shingles = {
            int.from_bytes(hashlib.blake2b(b" ".join(tokens[i : i + SHINGLE]), digest_size=8).digest(), "little")
            for i in range(len(tokens) - SHINGLE + 1)
        }
        x = np.fromiter(shingles, dtype=np.uint64, count=len(shingles))
        sig = (self.mult[:, None] * x[None, :] + self.add[:, None]).min(axis=1).tolist()
        return tuple(
            digest((bucket, band.to_bytes(4, "little"), *(v.to_bytes(8, "little") for v in sig[lo : lo + self.rows])))
            for band, lo in enumerate(range(0, len(sig), self.rows))
        )

    def band_keys_crc32(self, tokens: list[bytes], bucket: bytes) -> tuple[bytes, ...]:
        """The same permutations on crc32 shingle hashes, with raw band keys: the shared module's hashing,
        so that the difference to datasketch is the permutation step alone."""
        shingles = shingle_set(tokens)
        x = np.fromiter((zlib.crc32(shingle) for shingle in shingles), dtype=np.uint64, count=len(shingles))
        data = (self.mult[:, None] * x[None, :] + self.add[:, None]).min(axis=1).tobytes()
        width = len(data) // self.bands
        return tuple(
            band.to_bytes(2, "little") + bucket + data[band * width : (band + 1) * width] for band in range(self.bands)
        )


def own_candidate_pairs(sets: Sequence[frozenset[bytes]], bands: int, rows: int, seed: int = 0) -> set[tuple[int, int]]:
    """Corpus dedupe's MinHash/LSH before issue 12: crc32, multiply-shift, a dict of band buckets."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 63, size=bands * rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 1 << 63, size=bands * rows, dtype=np.uint64)
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for index, tokens in enumerate(sets):
        hashes = np.fromiter((zlib.crc32(token) for token in tokens), dtype=np.uint64, count=len(tokens))
        signature = ((np.outer(a, hashes) + b[:, None]) >> np.uint64(32)).min(axis=1).reshape(bands, rows)
        for band in range(bands):
            buckets[(band, signature[band].tobytes())].append(index)
    pairs: set[tuple[int, int]] = set()
    for members in buckets.values():
        for position, i in enumerate(members):
            pairs.update((i, j) for j in members[position + 1 :])
    return pairs


# ---------------------------------------------------------------- the shared module, as the two uses call it


def shared_band_keys(hasher: MinHasher, tokens: list[bytes], bucket: bytes) -> tuple[bytes, ...]:
    return hasher.band_keys(hasher.signature(shingle_set(tokens)), salt=bucket)


def shared_candidate_pairs(sets: Sequence[frozenset[bytes]], bands: int, rows: int) -> set[tuple[int, int]]:
    return set(MinHasher(bands, rows).candidate_pairs(enumerate(sets)))


# ---------------------------------------------------------------- inputs


def load_documents(corpus: Path) -> tuple[str, list[bytes]]:
    folders = [corpus / split / lang for split in ("train", "test") for lang in ("cpp", "javascript")]
    if all((folder / "files.json").exists() for folder in folders):
        return str(corpus), [doc for folder in folders for doc in TextShard(folder)]
    files = sorted(path for path in ROOT.glob("**/*.py") if ".venv" not in path.parts)
    return "the repository's .py files", [path.read_bytes() for path in files]


def contexts_of(documents: list[bytes], count: int, rng: random.Random) -> list[list[bytes]]:
    """Up to `count` contexts: the 64 tokens before the start of a random line, one per document."""
    contexts = []
    for document in rng.sample(documents, len(documents)):
        starts = [i + 1 for i in range(len(document)) if document[i] == 10]
        if not starts:
            continue
        tokens = code_tokens(document, 0, rng.choice(starts))[-CONTEXT:]
        if len(tokens) == CONTEXT:
            contexts.append(tokens)
        if len(contexts) == count:
            break
    return contexts


def mutate(tokens: list[bytes], count: int, rng: random.Random, tag: str) -> list[bytes]:
    """A copy of `tokens` with `count` random positions replaced by tokens found nowhere else."""
    out = list(tokens)
    for n, position in enumerate(rng.sample(range(len(out)), count)):
        out[position] = f"planted_{tag}_{n}".encode()
    return out


def shingle_set(tokens: list[bytes]) -> frozenset[bytes]:
    return frozenset(b" ".join(tokens[i : i + SHINGLE]) for i in range(len(tokens) - SHINGLE + 1))


# ---------------------------------------------------------------- measurements


def best_of(repeat: int, work: Callable[[], object]) -> float:
    """Fastest of `repeat` runs of `work()` after one warm-up run, in seconds."""
    work()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def print_time(label: str, figure: str, ratio: float | None = None) -> None:
    """One line of figures; `ratio` is this side's time over datasketch's."""
    print(f"  {label:<37} {figure}" + ("" if ratio is None else f"   {ratio:5.2f}x the time of datasketch"))


RANGES = ((0.9, 1.01), (0.8, 0.9), (0.6, 0.8), (0.3, 0.6), (0.0, 0.3))


def print_recall(pairs: list[tuple[float, bool, bool]], bands: int, rows: int) -> None:
    """Share of pairs that became candidates, per Jaccard range: (jaccard, own found, shared found)."""
    print(f"  {'Jaccard':<10} {'pairs':>6} {'theory':>7} {'own':>7} {'datasketch':>11}")
    for lo, hi in RANGES:
        chosen = [p for p in pairs if lo <= p[0] < hi]
        if not chosen:
            continue
        theory = float(np.mean([1 - (1 - j**rows) ** bands for j, _, _ in chosen]))
        own = sum(p[1] for p in chosen) / len(chosen)
        shared = sum(p[2] for p in chosen) / len(chosen)
        print(f"  [{lo:.1f}, {min(hi, 1.0):.1f}) {len(chosen):>6} {theory:>7.3f} {own:>7.3f} {shared:>11.3f}")


def serving(documents: list[bytes], count: int, repeat: int, rng: random.Random) -> None:
    contexts = contexts_of(documents, count, rng)
    own = OwnContextHasher(CACHE_BANDS, CACHE_ROWS)
    shared = MinHasher(CACHE_BANDS, CACHE_ROWS)
    print(f"(a) serving path: signature + band keys of one {CONTEXT}-token context, {len(contexts)} contexts")
    own_s = best_of(repeat, lambda: [own.band_keys(c, BUCKET) for c in contexts]) / len(contexts)
    crc_s = best_of(repeat, lambda: [own.band_keys_crc32(c, BUCKET) for c in contexts]) / len(contexts)
    shared_s = best_of(repeat, lambda: [shared_band_keys(shared, c, BUCKET) for c in contexts]) / len(contexts)
    print_time("own, as it was (blake2b-64, uint64)", f"{1e6 * own_s:8.1f} us/request", own_s / shared_s)
    print_time("own, same hashing as below (crc32)", f"{1e6 * crc_s:8.1f} us/request", crc_s / shared_s)
    print_time("datasketch (crc32, affine32)", f"{1e6 * shared_s:8.1f} us/request")
    # Planted near-duplicates: k of 64 tokens replaced, and (every 4th) unrelated pairs of two contexts.
    pairs = []
    for n, tokens in enumerate(contexts):
        variant = mutate(tokens, 1 + (n // 4) % 8, rng, str(n)) if n % 4 else contexts[n - 1]
        j = jaccard(shingle_set(tokens), shingle_set(variant))
        own_hit = set(own.band_keys(tokens, BUCKET)) & set(own.band_keys(variant, BUCKET))
        shared_hit = set(shared_band_keys(shared, tokens, BUCKET)) & set(shared_band_keys(shared, variant, BUCKET))
        pairs.append((j, bool(own_hit), bool(shared_hit)))
    print(f"  planted pairs that share a band ({CACHE_BANDS} x {CACHE_ROWS}; the cache's threshold is 0.9):")
    print_recall(pairs, CACHE_BANDS, CACHE_ROWS)


def dedupe(documents: list[bytes], files: int, repeat: int, rng: random.Random) -> None:
    started = time.perf_counter()
    sets = [token_set(document) for document in documents[:files]]
    tokenise_s = time.perf_counter() - started
    sets = [s for s in sets if len(s) >= 20]  # duplicate_families' min_tokens
    print(f"\n(b) corpus dedupe: signatures + LSH candidate pairs of {len(sets)} token sets "
          f"(mean {np.mean([len(s) for s in sets]):.0f} distinct tokens)")  # fmt: skip
    own_s = best_of(repeat, lambda: own_candidate_pairs(sets, DEDUPE_BANDS, DEDUPE_ROWS))
    shared_s = best_of(repeat, lambda: shared_candidate_pairs(sets, DEDUPE_BANDS, DEDUPE_ROWS))
    print_time("tokenising (the same for both)", f"{len(sets) / tokenise_s:8.0f} files/s")
    print_time("own (crc32, multiply-shift, dict)", f"{len(sets) / own_s:8.0f} files/s", own_s / shared_s)
    print_time("datasketch (crc32, MinHashLSH)", f"{len(sets) / shared_s:8.0f} files/s")
    # Planted near-duplicates: copies of 300 files with a share of their distinct tokens renamed.
    originals = rng.sample(range(len(sets)), min(300, len(sets)))
    planted: list[tuple[int, int]] = []
    corpus = list(sets)
    for n, index in enumerate(originals):
        tokens = sorted(sets[index])
        renamed = set(rng.sample(tokens, round(len(tokens) * (0.02, 0.06, 0.1, 0.15, 0.25)[n % 5])))
        corpus.append(frozenset(t if t not in renamed else b"planted_%d_" % n + t for t in tokens))
        planted.append((index, len(corpus) - 1))
    own_pairs = own_candidate_pairs(corpus, DEDUPE_BANDS, DEDUPE_ROWS)
    shared_pairs = shared_candidate_pairs(corpus, DEDUPE_BANDS, DEDUPE_ROWS)
    print(f"  planted pairs that become candidates ({DEDUPE_BANDS} x {DEDUPE_ROWS}; dedupe's threshold is 0.8):")
    print_recall(
        [(jaccard(corpus[i], corpus[j]), (i, j) in own_pairs, (i, j) in shared_pairs) for i, j in planted],
        DEDUPE_BANDS,
        DEDUPE_ROWS,
    )
    print(f"  all candidate pairs (the exact-Jaccard checks that follow): own {len(own_pairs)}, "
          f"datasketch {len(shared_pairs)}")  # fmt: skip


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--corpus", type=Path, default=ROOT / "data" / "small")
    args.add_argument("--repeat", type=int, default=5, help="timed runs of each side; the fastest counts")
    args.add_argument("--contexts", type=int, default=400, help="request contexts for the serving path")
    args.add_argument("--files", type=int, default=2500, help="files for the dedupe path")
    options = args.parse_args()
    source, documents = load_documents(options.corpus)
    print(f"inputs: {len(documents)} files from {source}\n")
    serving(documents, options.contexts, options.repeat, random.Random(0))
    dedupe(documents, options.files, options.repeat, random.Random(1))


if __name__ == "__main__":
    main()
