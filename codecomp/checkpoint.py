"""Loading self-describing checkpoints, with clear errors for missing or damaged files."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

CODECOMP_KEY = "codecomp"  # the checkpoint entry that describes the model (family, arguments, vocabulary)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged, or not of the expected model family."""


def load_checkpoint(path: str | Path, family: str | None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with `weights_only=True` (no code runs from the file) and check it is a `family` model
    (any codecomp model when `family` is None)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is damaged or not a torch checkpoint: {error}") from None
    description = checkpoint.get(CODECOMP_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(description, dict):
        raise CheckpointError(f"{path} is not a codecomp checkpoint (no {CODECOMP_KEY!r} entry)")
    if family is not None and description.get("family") != family:
        raise CheckpointError(f"{path} holds a {description.get('family')!r} model, not {family!r}")
    return checkpoint


def model_state(checkpoint: dict[str, Any], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The plain module's weights out of a LightningModule's state dict."""
    return {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
