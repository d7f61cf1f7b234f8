"""Tests of serve/approx_cache.py: the LSH cache under which near-identical contexts share an answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from codecomp.serve.service.approx_cache import ApproximateCache

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- ApproximateCache


def _context(n_lines: int = 12, changed: int | None = None, stem: str = "foo") -> bytes:
    """A JavaScript-like context of distinct tokens (8 tokens a line); `changed` renames one call."""
    lines = [f"let x{i} = {'bar' if i == changed else stem}{i}(y{i});" for i in range(n_lines)]
    return ("\n".join(lines) + "\n").encode()


LINE = b"  return x"


def test_identical_context_hits_with_similarity_one() -> None:
    cache: ApproximateCache[str] = ApproximateCache()
    cache.store("v1", "javascript", _context() + LINE, "completion")
    assert cache.lookup("v1", "javascript", _context() + LINE) == ("completion", 1.0)
    assert (cache.hits, cache.misses, len(cache)) == (1, 0, 1)


def test_context_differing_in_one_far_token_still_hits() -> None:
    cache: ApproximateCache[str] = ApproximateCache(threshold=0.8)
    cache.store("v1", "javascript", _context() + LINE, "completion")
    # Line 5 of 12 is ~50 tokens before the cursor: inside the 64 compared tokens, so 3 shingles differ.
    found = cache.lookup("v1", "javascript", _context(changed=5) + LINE)
    assert found is not None
    value, similarity = found
    assert value == "completion"
    assert 0.8 <= similarity < 1.0
    # A stricter cache refuses the same pair.
    strict: ApproximateCache[str] = ApproximateCache(threshold=0.95)
    strict.store("v1", "javascript", _context() + LINE, "completion")
    assert strict.lookup("v1", "javascript", _context(changed=5) + LINE) is None


def test_different_current_line_never_hits() -> None:
    cache: ApproximateCache[str] = ApproximateCache(threshold=0.0)  # any candidate would be accepted
    cache.store("v1", "javascript", _context() + LINE, "completion")
    assert cache.lookup("v1", "javascript", _context() + b"  return y") is None
    assert cache.lookup("v1", "javascript", _context() + LINE + b" ") is None
    assert cache.lookup("v1", "javascript", _context() + LINE) is not None
    assert (cache.hits, cache.misses) == (1, 2)


def test_unrelated_context_misses() -> None:
    cache: ApproximateCache[str] = ApproximateCache()
    cache.store("v1", "javascript", _context() + LINE, "completion")
    assert cache.lookup("v1", "javascript", _context(stem="qux", n_lines=9) + LINE) is None
    assert cache.misses == 1


def test_different_model_version_or_language_misses() -> None:
    cache: ApproximateCache[str] = ApproximateCache(threshold=0.0)
    cache.store("v1", "javascript", _context() + LINE, "completion")
    assert cache.lookup("v2", "javascript", _context() + LINE) is None
    assert cache.lookup("v1", "cpp", _context() + LINE) is None


def test_only_the_tail_of_a_long_prefix_matters() -> None:
    cache: ApproximateCache[str] = ApproximateCache()
    head_a = b"// " + b"a" * 100_000 + b"\n"
    head_b = b"/* " + b"b" * 100_000 + b" */\n"
    cache.store("v1", "javascript", head_a + _context() + LINE, "completion")
    assert cache.lookup("v1", "javascript", head_b + _context() + LINE) == ("completion", 1.0)


def test_store_of_an_identical_context_replaces_its_value() -> None:
    cache: ApproximateCache[str] = ApproximateCache()
    cache.store("v1", "javascript", _context() + LINE, "old")
    cache.store("v1", "javascript", _context() + LINE, "new")
    assert len(cache) == 1
    assert cache.lookup("v1", "javascript", _context() + LINE) == ("new", 1.0)


def test_lru_eviction_keeps_band_buckets_bounded() -> None:
    cache: ApproximateCache[int] = ApproximateCache(max_entries=3)
    for i in range(200):
        cache.store("v1", "javascript", _context(stem=f"f{i}_") + LINE, i)
        assert len(cache) <= 3
        assert cache.band_buckets <= 3 * cache.bands
    assert len(cache) == 3
    assert cache.band_buckets > 0
    referenced = set().union(*cache._bands.values())
    assert referenced == set(cache._entries)  # no stale ids left in the band maps
    assert cache.lookup("v1", "javascript", _context(stem="f0_") + LINE) is None
    assert cache.lookup("v1", "javascript", _context(stem="f199_") + LINE) == (199, 1.0)


def test_lookup_refreshes_lru_order() -> None:
    cache: ApproximateCache[str] = ApproximateCache(max_entries=2)
    cache.store("v1", "javascript", _context(stem="a") + LINE, "a")
    cache.store("v1", "javascript", _context(stem="b") + LINE, "b")
    assert cache.lookup("v1", "javascript", _context(stem="a") + LINE) is not None
    cache.store("v1", "javascript", _context(stem="c") + LINE, "c")
    assert cache.lookup("v1", "javascript", _context(stem="b") + LINE) is None
    assert cache.lookup("v1", "javascript", _context(stem="a") + LINE) == ("a", 1.0)


def test_off_switch() -> None:
    cache: ApproximateCache[str] = ApproximateCache(max_entries=0)
    cache.store("v1", "javascript", _context() + LINE, "completion")
    assert cache.lookup("v1", "javascript", _context() + LINE) is None
    assert (len(cache), cache.band_buckets, cache.misses) == (0, 0, 1)


def test_signatures_are_deterministic_across_instances_and_processes() -> None:
    prefix = _context() + LINE
    signature = ApproximateCache().signature(prefix)
    assert len(signature) == 16 * 4
    assert ApproximateCache().signature(prefix) == signature
    assert ApproximateCache(seed=1).signature(prefix) != signature
    # A fresh interpreter with a different str hash seed must agree (no use of hash()).
    code = "import sys; from codecomp.serve.service.approx_cache import ApproximateCache as C; "
    code += "print(C().signature(sys.stdin.buffer.read()))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], input=prefix, capture_output=True, check=True, cwd=ROOT, env=env
    ).stdout
    assert out.decode().strip() == str(signature)
