"""Completers: one class per model family, built from a checkpoint, with a batched call.
Evaluation and serving both use exactly these; `families.load_completer` picks the class by the family."""

from codecomp.checkpoint import CheckpointError
from codecomp.inference.completer import Candidate, Completer, CompletionOptions, CompletionRequest

__all__ = ["Candidate", "CheckpointError", "Completer", "CompletionOptions", "CompletionRequest"]
