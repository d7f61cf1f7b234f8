"""Completers: one class per model family, built from a checkpoint path, with a batched call.
Evaluation and serving both use exactly these."""

from codecomp.checkpoint import CheckpointError, load_checkpoint
from codecomp.inference.types import Candidate, CompletionRequest

__all__ = ["Candidate", "CheckpointError", "CompletionRequest", "load_checkpoint"]
