"""The runner: what a container does with a batch. One for every model family: it wraps the family's
completer (from the registry in `codecomp.inference.families`) and speaks the wire types."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from codecomp.checkpoint import load
from codecomp.inference.completer import Completer, CompletionOptions, CompletionRequest
from codecomp.inference.families import load_completer
from codecomp.serve.protocol import Options, WireCandidate, WireRequest


class Runner(Protocol):
    family: str  # the checkpoint's model family
    version: str  # a content hash of the checkpoint: prediction caches key on it

    def predict(
        self, requests: list[WireRequest], deadlines: list[float], options: Options
    ) -> list[list[WireCandidate]]:
        """Candidates per request; `deadlines` are `time.monotonic()` instants an anytime model stops at."""
        ...


class CompleterRunner:
    """A completer behind the container's `predict`: wire requests in, wire candidates out.

    Args:
        completer: any family's completer.
        version: the checkpoint's content hash.
    """

    def __init__(self, completer: Completer, version: str) -> None:
        self.completer, self.version = completer, version
        self.family = completer.family

    def predict(
        self, requests: list[WireRequest], deadlines: list[float], options: Options
    ) -> list[list[WireCandidate]]:
        results = self.completer.complete(
            [CompletionRequest(r.prefix, r.suffix, r.language, r.session) for r in requests],
            CompletionOptions(options.k, options.beam, options.max_chars),
            deadlines,
        )
        # An empty text offers nothing to insert (a line that ends at once, a deadline before the first byte).
        return [[WireCandidate(c.text, c.log_prob, c.complete) for c in candidates if c.text] for candidates in results]


def load_runner(checkpoint: str | Path, **settings: Any) -> CompleterRunner:
    """The runner for a checkpoint, the file read once (raises CheckpointError for a bad file).

    `settings` are the completer's keyword arguments (serve.yaml's `settings:` of the model).
    """
    loaded = load(checkpoint)
    return CompleterRunner(load_completer(loaded, **settings), loaded.version)
