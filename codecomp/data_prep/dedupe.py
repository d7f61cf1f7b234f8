"""Exact and near-duplicate detection across a whole corpus (Allamanis, 2019).

Exact duplicates share a hash of their whitespace-normalised text. Near duplicates have token-set
Jaccard similarity at or above a threshold: MinHash signatures with LSH banding propose candidate
pairs, and the exact Jaccard of each candidate decides. Duplicates form families (union-find); one
file of each family is kept, from the most held-out split present, so no family spans two splits.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from codecomp.text.minhash import MinHasher, jaccard
from codecomp.text.tokens import DEDUPE_TOKEN

_WHITESPACE = re.compile(rb"\s+")
_BANDS, _ROWS = 20, 5  # 100 hashes; pairs at Jaccard 0.8 become candidates with probability 0.9996


def exact_key(data: bytes) -> str:
    """Hash of the text with every run of whitespace removed (formatting changes compare equal)."""
    return hashlib.sha256(_WHITESPACE.sub(b"", data)).hexdigest()


def token_set(data: bytes) -> frozenset[bytes]:
    """The distinct names, numbers and string literals of `data` (`DEDUPE_TOKEN`)."""
    return frozenset(DEDUPE_TOKEN.findall(data))


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        root_i, root_j = self.find(i), self.find(j)
        if root_i != root_j:
            self.parent[max(root_i, root_j)] = min(root_i, root_j)


def duplicate_families(
    contents: Sequence[bytes], threshold: float = 0.8, min_tokens: int = 20, seed: int = 0
) -> list[int]:
    """Family id of every file: the smallest index of a file it is a (near) duplicate of.

    Files with fewer than `min_tokens` distinct tokens take part only in exact matching: their
    token sets are too small for similarity to mean copying.
    """
    families = _UnionFind(len(contents))
    first_with_key: dict[str, int] = {}
    for index, data in enumerate(contents):
        families.union(first_with_key.setdefault(exact_key(data), index), index)

    tokens = [token_set(data) for data in contents]
    # Exact copies share their representative's signature, so only representatives are hashed.
    eligible = (
        (index, token_set_)
        for index, token_set_ in enumerate(tokens)
        if len(token_set_) >= min_tokens and families.find(index) == index
    )
    for i, j in MinHasher(_BANDS, _ROWS, seed).candidate_pairs(eligible):
        if families.find(i) != families.find(j) and jaccard(tokens[i], tokens[j]) >= threshold:
            families.union(i, j)
    return [families.find(index) for index in range(len(contents))]


def keep_one_per_family(families: Sequence[int], split_rank: Sequence[int]) -> list[int | None]:
    """For each file, None to keep it, or the index of the kept file it duplicates.

    The kept file of a family is its first file in the lowest `split_rank` (test before valid before
    train): held-out projects stay whole and train loses the copies.
    """
    keeper: dict[int, int] = {}
    for index, family in enumerate(families):
        best = keeper.get(family)
        if best is None or split_rank[index] < split_rank[best]:
            keeper[family] = index
    return [None if keeper[family] == index else keeper[family] for index, family in enumerate(families)]
