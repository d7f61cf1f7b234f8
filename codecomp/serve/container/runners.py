"""The runner: what a container does with a batch. One for every model family: it wraps the family's
completer (from the registry in `codecomp.inference.families`) and speaks the wire types. A line completer
that decodes stepwise (`codecomp.inference.decoding`) gets a runner that also offers `decoding`, which the
container's continuous batching drives (`codecomp.serve.container.rows`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from codecomp.checkpoint import load
from codecomp.inference.completer import Candidate, Completer, CompletionOptions, CompletionRequest
from codecomp.inference.decoding import LineDecoding, StepwiseCompleter
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


class WireDecoding(Protocol):
    """`codecomp.inference.decoding.LineDecoding` in wire types."""

    @property
    def live(self) -> int: ...

    def add(self, requests: Sequence[WireRequest], deadlines: Sequence[float]) -> list[int]: ...

    def step(self) -> None: ...

    def pop_finished(self) -> list[tuple[int, list[WireCandidate]]]: ...


@runtime_checkable
class StepwiseRunner(Runner, Protocol):
    def decoding(self, options: Options) -> WireDecoding:
        """A new, empty decoding under `options`: rows join it between steps and leave when done."""
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
        results = self.completer.complete(_requests(requests), _options(options), deadlines)
        return [_wire(candidates) for candidates in results]


class StepwiseCompleterRunner(CompleterRunner):
    """The runner of a completer that also decodes stepwise (a line model): `predict`, and `decoding`."""

    completer: StepwiseCompleter  # type: ignore[assignment]  # a Completer that also decodes stepwise

    def decoding(self, options: Options) -> WireDecoding:
        return _WireRows(self.completer.decoding(_options(options)))


class _WireRows:
    """A completer's decoding, in wire types."""

    def __init__(self, decoding: LineDecoding) -> None:
        self.decoding = decoding

    @property
    def live(self) -> int:
        return self.decoding.live

    def add(self, requests: Sequence[WireRequest], deadlines: Sequence[float]) -> list[int]:
        return self.decoding.add(_requests(requests), deadlines)

    def step(self) -> None:
        self.decoding.step()

    def pop_finished(self) -> list[tuple[int, list[WireCandidate]]]:
        return [(row, _wire(candidates)) for row, candidates in self.decoding.pop_finished()]


def _requests(requests: Sequence[WireRequest]) -> list[CompletionRequest]:
    return [CompletionRequest(r.prefix, r.suffix, r.language, r.session) for r in requests]


def _options(options: Options) -> CompletionOptions:
    return CompletionOptions(options.k, options.beam, options.max_chars)


def _wire(candidates: Sequence[Candidate]) -> list[WireCandidate]:
    # An empty text offers nothing to insert (a line that ends at once, a deadline before the first byte).
    return [WireCandidate(c.text, c.log_prob, c.complete) for c in candidates if c.text]


def load_runner(checkpoint: str | Path, **settings: Any) -> CompleterRunner:
    """The runner for a checkpoint, the file read once (raises CheckpointError for a bad file).

    `settings` are the completer's keyword arguments (serve.yaml's `settings:` of the model).
    """
    loaded = load(checkpoint)
    return runner_for(load_completer(loaded, **settings), loaded.version)


def runner_for(completer: Completer, version: str) -> CompleterRunner:
    """The runner of a completer: one that also offers `decoding` where the completer decodes stepwise."""
    if isinstance(completer, StepwiseCompleter):
        return StepwiseCompleterRunner(completer, version)
    return CompleterRunner(completer, version)
