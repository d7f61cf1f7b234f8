"""What every completer offers, whatever its model family: requests, options, candidates, the protocol.

A completer is built from a checkpoint (`from_checkpoint`, through `codecomp.inference.families`) and
answers many requests in one batched `complete`. Serving containers wrap exactly this; evaluation uses
exactly this, so evaluation measures what is served.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import torch

    from codecomp.checkpoint import LoadedCheckpoint


@dataclasses.dataclass(frozen=True)
class CompletionRequest:
    """A document around a cursor: the UTF-8 bytes before it and after it.

    `session` names the editor session (user, file, language) it comes from; a completer may keep
    state per session (the Char-LSTM's prefix states), so that a keystroke costs one more byte.
    The empty string: no session, nothing kept.
    """

    prefix: bytes
    suffix: bytes
    language: str
    session: str = ""


@dataclasses.dataclass(frozen=True)
class CompletionOptions:
    """How much work a batch may do: `k` candidates per request, beam width `beam`, at most
    `max_chars` bytes per candidate. A completer ignores what does not apply to it."""

    k: int = 3
    beam: int = 4
    max_chars: int = 80

    def __post_init__(self) -> None:
        if self.k < 1 or self.beam < 1 or self.max_chars < 1:
            raise ValueError(f"k, beam and max_chars must be positive: {self}")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One completion: the bytes to insert at the cursor and their natural-log probability.

    `complete` is False for a completion cut short (by the byte bound or the deadline).
    """

    text: bytes
    log_prob: float
    complete: bool = True


class Completer(Protocol):
    """One model family's completer.

    Attributes:
        family: the model family it is registered under (the checkpoint's `family`).
        task: what it completes: "line" (the rest of the line) or "token" (the token at the cursor).
    """

    family: ClassVar[str]
    task: ClassVar[str]

    @classmethod
    def from_checkpoint(
        cls, checkpoint: LoadedCheckpoint | str | Path, device: str | torch.device = "cpu", **settings: Any
    ) -> Completer:
        """Rebuild the model from a checkpoint (loaded once, or a path); `settings` are the
        constructor's keyword arguments (serve.yaml's `settings:`, eval.yaml's `completer:`)."""
        ...

    def complete(
        self,
        requests: Sequence[CompletionRequest],
        options: CompletionOptions = ...,
        deadlines: Sequence[float] | None = None,
    ) -> list[list[Candidate]]:
        """Candidates per request, best first.

        Args:
            requests: the cursors to complete, answered in one batched pass where the model allows.
            options: k, beam width, byte bound.
            deadlines: per request, a `time.monotonic()` instant; an anytime completer stops a request
                there with its best candidates so far (marked `complete=False`). None: no deadline.
        """
        ...
