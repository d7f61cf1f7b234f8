"""The reference line completer of a byte n-gram: beam search over bytes for one prefix at a time.

`codecomp.inference.ngram.NGramCompleter` runs the same search for many requests at once (and adds a cache);
its tests check it against this one.
"""

from __future__ import annotations

import heapq

import numpy as np

from codecomp.models.ngram import EOF, N_SYMBOLS, CharNGram

_NEWLINE = ord("\n")


def complete_line(
    model: CharNGram, prefix: bytes, beam_size: int = 4, max_chars: int = 80, k: int = 1
) -> list[tuple[bytes, float]]:
    """Complete the current line by beam search over bytes.

    A hypothesis ends when it emits b"\\n" or EOF (whose probability counts in its score; the newline is not part of
    the text) or when its text reaches `max_chars` bytes. The same text ended by both newline and EOF is one
    completion whose probability is the sum of the two.

    Args:
        model: a fitted model.
        prefix: the document up to the cursor.
        beam_size: live hypotheses kept per step, and symbols tried per hypothesis.
        max_chars: the longest completion, in bytes.
        k: how many completions to return.

    Returns:
        Up to k (completion bytes, natural-log probability) pairs, most probable first.
    """
    if beam_size < 1 or k < 1 or max_chars < 0:
        raise ValueError(f"need beam_size >= 1, k >= 1, max_chars >= 0; got {beam_size}, {k}, {max_chars}")
    keep = max(len(prefix) - (model.order - 1), 0)  # older bytes never matter; a short prefix stays a document start
    history = prefix[keep:]
    tries = min(beam_size, N_SYMBOLS)
    finished: dict[bytes, float] = {}
    beam: list[tuple[float, bytes]] = [(0.0, b"")]  # (log-probability, text)
    for _ in range(max_chars):
        candidates: list[tuple[float, bytes]] = []
        for score, text in beam:
            log_probs = np.log(model.distribution(history + text))  # (257,)
            for symbol in map(int, np.argpartition(-log_probs, tries - 1)[:tries]):
                total = score + float(log_probs[symbol])
                if symbol in (_NEWLINE, EOF):
                    finished[text] = float(np.logaddexp(finished[text], total)) if text in finished else total
                else:
                    candidates.append((total, text + bytes((symbol,))))
        beam = heapq.nlargest(beam_size, candidates)
        best_done = heapq.nlargest(k, finished.values())
        # Scores only fall as text grows, so no live hypothesis can overtake the k best finished ones.
        if not beam or (len(best_done) == k and beam[0][0] <= best_done[-1]):
            beam = []
            break
    for score, text in beam:  # reached max_chars
        finished.setdefault(text, score)
    return sorted(finished.items(), key=lambda item: -item[1])[:k]
