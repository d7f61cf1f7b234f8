"""What completers take and give."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class CompletionRequest:
    """A document around a cursor: the bytes before it and after it (UTF-8)."""

    prefix: bytes
    language: str
    suffix: bytes = b""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One completion and its natural-log probability under the model.

    `complete` is False for a completion cut short (by the character bound or the deadline).
    """

    text: bytes
    log_prob: float
    complete: bool = True
