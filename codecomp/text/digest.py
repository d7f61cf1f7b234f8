"""Content digests of byte strings: cache keys and prefix checks without keeping the (large) text."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def digest(parts: Iterable[bytes], size: int = 16) -> bytes:
    """blake2b over `parts`, each prefixed with its length so that no two part lists collide."""
    h = hashlib.blake2b(digest_size=size)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()
