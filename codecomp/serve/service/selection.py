"""Selection (Clipper's model-selection layer): one ranked list from the candidates of every model asked.

A policy sees, per model that answered by the deadline, its candidates best first, and returns the
choices to show. Models that missed the deadline are simply absent (Clipper's stragglers). Policies
that learn from feedback (Exp3, Exp4, per-user correction) implement the same `rank` and also learn
from events; `FixedInterleave` is the policy that learns nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol

from codecomp.serve.protocol import WireCandidate


@dataclasses.dataclass(frozen=True)
class Choice:
    """One suggestion as the editor gets it: text to insert, its log-probability and the model it came from."""

    text: str
    log_prob: float
    model: str


class SelectionPolicy(Protocol):
    def rank(
        self, user: str, language: str, asked: Sequence[str], answers: Mapping[str, Sequence[WireCandidate]]
    ) -> list[Choice]:
        """The choices to show, best first.

        Args:
            user, language: whose request it is (a learning policy keeps state per user and language).
            asked: the models asked, in the configured order.
            answers: the candidates of each model that answered by the deadline, best first.
        """
        ...


class FixedInterleave:
    """The models' candidates interleaved in the configured order (the first of each model, then the second
    of each...), repeated and blank texts dropped, at most `max_choices`."""

    def __init__(self, max_choices: int = 5) -> None:
        self.max_choices = max_choices

    def rank(
        self, user: str, language: str, asked: Sequence[str], answers: Mapping[str, Sequence[WireCandidate]]
    ) -> list[Choice]:
        ranked = [
            [Choice(text_of(c.text), c.log_prob, name) for c in answers[name]] for name in asked if name in answers
        ]
        choices: list[Choice] = []
        seen: set[str] = set()
        for rank in range(max((len(r) for r in ranked), default=0)):
            for candidates in ranked:
                text = candidates[rank].text if rank < len(candidates) else ""
                if text.strip() and text not in seen:  # blank suggestions help no one
                    seen.add(text)
                    choices.append(candidates[rank])
        return choices[: self.max_choices]


def text_of(candidate: bytes) -> str:
    """A candidate's text for the editor (a byte model may stop inside a multi-byte character: dropped)."""
    return candidate.decode("utf-8", "ignore")
