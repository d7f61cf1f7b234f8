"""A candidate's overlap with the rest of the current line: text already after the cursor is not inserted again.

A line model completes the line to its end without regard to what follows the cursor, so in the middle of
a line (`foo(|);`, with the `);` already there, often closed by the editor itself) its candidate `a, b);`
would leave `foo(a, b););`. Editors insert a suggestion at the cursor and keep what follows, so the
candidate is cut where it starts to say what the line already says: `a, b`. The caches keep the models'
own candidates; this runs on each request's answer, before ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

from codecomp.serve.protocol import WireCandidate


def rest_of_line(suffix: bytes) -> bytes:
    """The text after the cursor to the end of its line, without trailing white space (`\\r` included)."""
    return suffix.split(b"\n", 1)[0].rstrip()


def trim_overlap(text: bytes, rest: bytes, complete: bool = True) -> bytes:
    """`text` without its end where that end begins the rest of the line `rest`.

    The whole of `rest` at the end of `text` is always cut (`a, b);` before `);` -> `a, b`). A shorter
    overlap, the end of `text` being only the start of `rest` (`x)` before `);` -> `x`), is cut only when
    the candidate is `complete`: the end of a line cut short at a length bound is where the bound fell, not
    where the model meant the line to meet what follows.

    Args:
        text: the candidate, UTF-8 bytes to insert at the cursor.
        rest: `rest_of_line(suffix)`.
        complete: whether the model ended the candidate itself (False: cut short at a bound or deadline).

    Returns:
        The bytes to insert; empty when the candidate only repeats what is there.
    """
    body = text.rstrip()
    if not rest or not body:
        return text
    if body.endswith(rest):
        return body[: len(body) - len(rest)]
    if complete:
        for size in range(min(len(rest) - 1, len(body)), 0, -1):  # the longest overlap first
            if body.endswith(rest[:size]):
                return body[: len(body) - size]
    return text


def trim_candidates(candidates: Sequence[WireCandidate], suffix: bytes) -> list[WireCandidate]:
    """Each candidate without its overlap with the rest of the line after the cursor (`trim_overlap`)."""
    rest = rest_of_line(suffix)
    if not rest:
        return list(candidates)
    return [WireCandidate(trim_overlap(c.text, rest, c.complete), c.log_prob, c.complete) for c in candidates]
