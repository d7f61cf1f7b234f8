"""MinHash signatures, LSH bands and Jaccard similarity: one implementation for corpus dedupe and the approximate cache.

Both uses go through datasketch (`MinHash.update_batch`, `MinHashLSH`); `benchmarks/minhash.py` compares it
with the hand-written versions it replaced, on the same inputs, for speed and recall. Items are byte strings
hashed with crc32, which datasketch pre-mixes with the MurmurHash3 finalizer before its affine permutations
a * h + b mod 2**32 (scheme "affine32"): signatures are uint32 and the same in every process, as nothing here
uses Python's salted hash().

The parameters stay with each use: corpus dedupe wants high recall at Jaccard 0.8 over whole files, the
approximate cache a cheap signature of a 64-token context.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Iterable
from collections.abc import Set as AbstractSet

import numpy as np
from datasketch import MinHash, MinHashLSH


def jaccard(a: AbstractSet[Hashable], b: AbstractSet[Hashable]) -> float:
    """Jaccard similarity |a & b| / |a | b| of two sets; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


class MinHasher:
    """MinHash with `bands` x `rows` permutations of a fixed seed, and the LSH bands of its signatures.

    Two sets become LSH candidates when their signatures agree on all `rows` values of at least one band,
    which happens with probability 1 - (1 - J**rows)**bands for sets of Jaccard similarity J.
    Not thread-safe: one datasketch MinHash is cleared and refilled for every set, which costs less than
    building a new one for a short context.

    Args:
        bands: LSH bands (`candidate_pairs` needs 2 or more, as datasketch's MinHashLSH does).
        rows: Signature values per band.
        seed: Seed of the permutations; fixed so that signatures agree across processes and runs.
    """

    def __init__(self, bands: int, rows: int, seed: int = 0) -> None:
        if bands < 1 or rows < 1:
            raise ValueError(f"bands and rows must be >= 1, got bands={bands}, rows={rows}")
        self.bands = bands
        self.rows = rows
        self.seed = seed
        self._minhash = MinHash(num_perm=bands * rows, seed=seed, hashfunc=zlib.crc32, scheme="affine32")

    @property
    def num_perm(self) -> int:
        """Length of a signature: bands * rows."""
        return self.bands * self.rows

    def signature(self, items: Iterable[bytes]) -> np.ndarray:
        """MinHash of the set of `items`: (bands * rows,) uint32, all 2**32 - 1 for an empty set.

        The array is new on every call (datasketch rebinds rather than updates it), so callers may keep it.
        """
        self._minhash.clear()
        self._minhash.update_batch(items)
        return self._minhash.hashvalues

    def band_keys(self, signature: np.ndarray, salt: bytes = b"") -> tuple[bytes, ...]:
        """One key per band: its index, `salt`, and its values; equal exactly when band and salt agree.

        The salt keeps sets of different groups apart in one band map (the approximate cache salts with
        the digest of the current line, so contexts typed on other lines never become candidates).
        """
        data = signature.tobytes()
        width = len(data) // self.bands
        return tuple(
            band.to_bytes(2, "little") + salt + data[band * width : (band + 1) * width] for band in range(self.bands)
        )

    def candidate_pairs(self, sets: Iterable[tuple[int, Iterable[bytes]]]) -> list[tuple[int, int]]:
        """Pairs (i, j) of keys whose sets share at least one LSH band, i given before j, each pair once.

        Args:
            sets: (key, items) pairs with distinct integer keys; each set is hashed once and not kept.

        Returns:
            The candidate pairs, in the order of `j`, then of `i`; their exact similarity is for the caller.
        """
        index = MinHashLSH(num_perm=self.num_perm, params=(self.bands, self.rows))
        pairs: list[tuple[int, int]] = []
        for key, items in sets:
            self.signature(items)
            pairs.extend((earlier, key) for earlier in sorted(index.query(self._minhash)))
            index.insert(key, self._minhash, check_duplication=False)
        return pairs
