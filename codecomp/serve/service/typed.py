"""What the user typed next, as a verdict on each candidate: full information for the selection layer.

An editor's feedback events speak only of the choices shown, and a rejection says nothing about which
other candidate would have been right. But the session's next requests reveal what the user typed after
the cursor: every candidate of every model, shown or not, can then be judged by the rule a user applies
to a suggestion (the feedback replay's simulated users apply the same rule, `takes`):

    a user takes the longest start of a choice that what they type next starts with too, cut back to a
    token boundary, if it covers at least the next token (editors accept a suggestion word by word).

Text typed since a completion arrives a few characters at a time, so a verdict waits until the typed text
decides it: the candidate and the text part, a line end is typed, or the text runs past the candidate.
"""

from __future__ import annotations

import re

# A token as a user accepts it: a run of name or number characters, or any other character by itself;
# the spaces before it come with it.
FIRST_TOKEN = re.compile(r"\s*(?:[A-Za-z0-9_$\u0080-\U0010ffff]+|\S)")


def takes(choice: str, rest: str, habit: str = "any") -> int:
    """How many characters of `choice` a user takes when `rest` is what they type next (0: not taken).

    Args:
        choice: the suggestion.
        rest: the rest of the line the user types.
        habit: "any" takes any choice; "token" only a choice of one token; "line" only two tokens or more.
    """
    same = next((i for i, (a, b) in enumerate(zip(choice, rest, strict=False)) if a != b), min(len(choice), len(rest)))
    taken = tokens = 0
    for match in FIRST_TOKEN.finditer(choice):
        tokens += 1
        end = match.end()
        if end > same:
            if tokens >= 2:  # enough is known: past what matches, and of two tokens at least
                break
            continue
        if end == len(rest) or not _continues(rest, end):
            taken = end
    if (habit == "token" and tokens > 1) or (habit == "line" and tokens < 2):
        return 0
    return taken


def verdict(choice: str, typed: str) -> int | None:
    """`takes(choice, rest)` once `typed`, the text typed so far since the completion, decides it; else None.

    Decided when a line end was typed (the rest of the line is known), when the typed text parts from the
    choice, or when it runs past the choice (so whether a name goes on past the choice's end is known)."""
    line_end = typed.find("\n")
    if line_end >= 0:
        return takes(choice, typed[:line_end])
    parted = any(a != b for a, b in zip(choice, typed, strict=False))
    return takes(choice, typed) if parted or len(typed) > len(choice) else None


def _continues(text: str, end: int) -> bool:
    """Whether a name or number goes on past `end` (a cut there would split a token)."""
    return (text[end - 1].isalnum() or text[end - 1] in "_$") and (text[end].isalnum() or text[end] in "_$")
