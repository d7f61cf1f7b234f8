"""The registry of model families: a checkpoint's `family` names the completer class that reads it.

Adding a family is one module with its completer class (see `codecomp.inference.completer.Completer`)
and one line in FAMILIES. Serving containers and `codecomp-eval` both build completers here, so
neither branches on the family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from codecomp.checkpoint import CheckpointError, LoadedCheckpoint, load
from codecomp.inference.char_lstm import CharLSTMCompleter
from codecomp.inference.completer import Completer
from codecomp.inference.ngram import NGramCompleter
from codecomp.inference.quantize import quantize_completer
from codecomp.inference.tree_lstm import TreeLSTMCompleter

FAMILIES: dict[str, type[Completer]] = {
    CharLSTMCompleter.family: CharLSTMCompleter,
    TreeLSTMCompleter.family: TreeLSTMCompleter,
    NGramCompleter.family: NGramCompleter,
}


def completer_class(family: str) -> type[Completer]:
    """The completer class of a model family.

    Raises:
        CheckpointError: no family of that name is registered.
    """
    try:
        return FAMILIES[family]
    except KeyError:
        raise CheckpointError(
            f"no completer for model family {family!r}; this codecomp knows {', '.join(sorted(FAMILIES))}"
        ) from None


def load_completer(
    checkpoint: LoadedCheckpoint | str | Path, device: str | torch.device = "cpu", quantize: str = "none",
    **settings: Any,
) -> Completer:  # fmt: skip
    """The completer for a checkpoint, whatever its family; the file is read once.

    Args:
        checkpoint: a path, or a checkpoint already loaded with `codecomp.checkpoint.load`.
        device: where the model runs.
        quantize: "none", or "int8": the model's matrix products dynamically quantized (CPU; see
            `codecomp.inference.quantize`), as serve.yaml's `settings: {quantize: int8}` and
            `codecomp-eval quantize=int8` ask.
        **settings: the completer's keyword arguments (e.g. Char-LSTM `max_context`, `sessions`,
            `per_session`; Tree-LSTM `window_bytes`); none: its defaults.

    Raises:
        CheckpointError: a missing, damaged or foreign file, an unknown family, other grammar versions.
        TypeError: a setting the family's completer does not take.
        ValueError: an unknown `quantize`, or one the family has no variant for.
    """
    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load(checkpoint)
    completer = completer_class(loaded.family).from_checkpoint(loaded, device=device, **settings)
    return quantize_completer(completer, quantize)
