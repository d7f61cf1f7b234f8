"""Where evaluation looks (sampled byte positions, line-completion tasks) and the line metrics: exact match,
edit similarity, characters saved."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from rapidfuzz import fuzz


@dataclasses.dataclass(frozen=True)
class LineTask:
    """Complete the rest of a line: `prefix` is the document up to the cursor, `target` the rest of
    its line (no newline)."""

    document: int
    prefix: bytes
    target: bytes


def sample_line_tasks(documents: Sequence[bytes], count: int, seed: int, min_line_chars: int = 8) -> list[LineTask]:
    """`count` cursor positions inside lines, lines drawn uniformly from all lines with at least
    `min_line_chars` non-blank bytes, the cursor uniformly between the indentation and the last byte."""
    lines = []
    for index, document in enumerate(documents):
        start = 0
        for line in document.split(b"\n"):
            if len(line.strip()) >= min_line_chars:
                lines.append((index, start, len(line)))
            start += len(line) + 1
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(lines), size=min(count, len(lines)), replace=False) if lines else np.zeros(0, int)
    tasks = []
    for pick in sorted(int(i) for i in chosen):
        index, start, length = lines[pick]
        line = documents[index][start : start + length]
        indent = len(line) - len(line.lstrip())
        cursor = start + int(rng.integers(indent, length))  # at least one byte left to complete
        end = start + length
        tasks.append(LineTask(index, documents[index][:cursor], documents[index][cursor:end]))
    return tasks


def sample_positions(documents: Sequence[bytes], count: int, seed: int) -> list[tuple[int, int]]:
    """(document, byte position) pairs drawn uniformly over all bytes of the documents, without repeats."""
    sizes = np.array([len(d) for d in documents], dtype=np.int64)
    total = int(sizes.sum())
    if total == 0:
        return []
    flat = np.sort(np.random.default_rng(seed).choice(total, size=min(count, total), replace=False))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    doc = np.searchsorted(starts, flat, side="right") - 1
    return [(int(d), int(f - starts[d])) for d, f in zip(doc, flat, strict=True)]


def common_prefix_length(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def line_metrics(predictions: Sequence[bytes], targets: Sequence[bytes]) -> dict[str, float]:
    """exact_match (%), edit_similarity (0-100, mean of `fuzz.ratio`), chars_saved (%): the share of
    target characters a user accepting the suggestion up to its first mistake would not type."""
    if not targets:
        return {"exact_match": 0.0, "edit_similarity": 0.0, "chars_saved": 0.0}
    exact = sum(p.rstrip() == t.rstrip() for p, t in zip(predictions, targets, strict=True))
    similarity = [
        fuzz.ratio(p.decode("utf-8", "replace"), t.decode("utf-8", "replace"))
        for p, t in zip(predictions, targets, strict=True)
    ]
    saved = sum(common_prefix_length(p, t) for p, t in zip(predictions, targets, strict=True))
    return {
        "exact_match": 100.0 * exact / len(targets),
        "edit_similarity": float(np.mean(similarity)),
        "chars_saved": 100.0 * saved / max(1, sum(len(t) for t in targets)),
    }
