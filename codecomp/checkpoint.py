"""The checkpoint format: what a codecomp checkpoint holds beside its weights, how it is written and read.

A checkpoint is the file Lightning saves (a torch zip archive) with one more entry, `codecomp`, that
describes the model so that serving and evaluation rebuild it with no config at hand:

    schema       int, the layout of this entry (SCHEMA_VERSION; files without it are schema 1)
    family       the model family; `codecomp.inference.families` maps it to a completer class
    model_config the network's constructor arguments
    languages    the languages it was trained on
    vocab        its vocabularies (family-specific; JSON-like)
    grammars     tree-sitter and grammar package versions it was trained with
    corpus       the corpus it was trained on, {"name", "path"} (absent before it was recorded: None)
    ...          family-specific entries, kept in `Description.extra`: the Tree-LSTM's `target_kinds`, and its
                 `hole_settings` ({"shares": {setting: share}, "partial_rate", "window_bytes"}: how its training
                 holes were built, `codecomp.data.hole_settings.HoleSettings.to_json`), from which its completer
                 builds the context the model learnt (editor-like or whole file)

Schema 1 (before the number was written) has the same entries, so both load alike; `corpus` is optional in
both (older files lack it), so recording it needed no new schema; nor did `hole_settings` (a file without it
was trained on whole-file holes only, and is served so).

This module imports torch only inside `load`: the HTTP process, which never loads torch, uses
`check_file` at start-up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

CODECOMP_KEY = "codecomp"  # the checkpoint entry that describes the model
SCHEMA_VERSION = 2
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
_STATE_PREFIX = "model."  # LightningModules keep their network as `self.model`
_KNOWN = frozenset({"schema", "family", "model_config", "languages", "vocab", "grammars", "corpus"})


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged, of another model family or made with other grammars."""


@dataclasses.dataclass(frozen=True)
class Description:
    """The `codecomp` entry of a checkpoint, typed.

    Attributes:
        schema: the entry's layout version (1 for files written before it was recorded).
        family: the model family, e.g. "char_lstm".
        model_config: the network's constructor arguments.
        languages: languages the model was trained on.
        vocab: its vocabularies, in the family's own JSON-like form.
        grammars: {"tree-sitter": version, language: grammar package version} at training time.
        extra: the family's own further entries (e.g. the Tree-LSTM's `target_kinds`).
        corpus: the corpus trained on, {"name": its folder's name, "path": its folder as training saw it};
            None for checkpoints written before it was recorded.
    """

    schema: int
    family: str
    model_config: dict[str, Any]
    languages: tuple[str, ...]
    vocab: Any
    grammars: dict[str, str]
    extra: dict[str, Any]
    corpus: dict[str, str] | None = None


@dataclasses.dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read once: everything a completer needs to rebuild its model.

    Attributes:
        path: where it was read from.
        description: its `codecomp` entry.
        state: the network's weights (the LightningModule's `model.` entries, prefix removed), on CPU.
        version: a short content hash of the file's bytes (16 hex digits); prediction caches key on it.
    """

    path: Path
    description: Description
    state: dict[str, torch.Tensor]
    version: str

    @property
    def family(self) -> str:
        return self.description.family

    def expect_family(self, family: str) -> None:
        """Raise CheckpointError unless this is a `family` model."""
        if self.family != family:
            raise CheckpointError(f"{self.path} holds a {self.family!r} model, not {family!r}")


def describe(
    checkpoint: dict[str, Any],
    family: str,
    model_config: Mapping[str, Any],
    languages: Sequence[str],
    vocab: Any,
    corpus: str | Path | None = None,
    **extra: Any,
) -> None:
    """Make a checkpoint self-describing: a LightningModule's `on_save_checkpoint` calls this.

    Args:
        checkpoint: the dict Lightning is about to save; the `codecomp` entry is added to it.
        family: the model family its completer is registered under.
        model_config: the network's constructor arguments (plain values).
        languages: languages trained on.
        vocab: the vocabularies, JSON-like.
        corpus: the corpus folder trained on (`data/<recipe>`); evaluation fits its baselines on it.
        **extra: the family's own entries (read back as `Description.extra`).
    """
    from codecomp.parsing import grammar_versions  # here, so that importing this module stays light

    clash = _KNOWN & extra.keys()
    if clash:
        raise ValueError(f"{sorted(clash)} are entries of every checkpoint, not family extras")
    checkpoint[CODECOMP_KEY] = {
        "schema": SCHEMA_VERSION,
        "family": family,
        "model_config": dict(model_config),
        "languages": list(languages),
        "vocab": vocab,
        "grammars": grammar_versions(),
        "corpus": None if corpus is None else {"name": Path(corpus).name, "path": str(corpus)},
        **extra,
    }


def save(
    path: str | Path,
    state: Mapping[str, torch.Tensor],
    family: str,
    model_config: Mapping[str, Any],
    languages: Sequence[str],
    vocab: Any,
    corpus: str | Path | None = None,
    **extra: Any,
) -> Path:
    """Write a checkpoint for a model that Lightning does not train (the n-gram, fitted by counting): the same
    layout, so `load` reads it like the others. Written to a temporary file first, then renamed into place.

    Args:
        path: the file to write; its folder is created.
        state: the model's tensors, stored as the `state_dict` entries `model.<name>` (read back as
            `LoadedCheckpoint.state[name]`).
        family, model_config, languages, vocab, corpus, extra: as for `describe`.
    """
    import torch  # here: the HTTP process imports this module and must not load torch

    path = Path(path)
    checkpoint: dict[str, Any] = {"state_dict": {_STATE_PREFIX + name: tensor for name, tensor in state.items()}}
    describe(checkpoint, family, model_config, languages, vocab, corpus, **extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint, partial)
    partial.replace(path)
    return path


def check_file(path: str | Path) -> Path:
    """A cheap check without torch (for start-up): the file exists and is a zip archive, as torch writes.

    Raises:
        CheckpointError: missing, or not a torch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (train one first: see the README)")
    with path.open("rb") as handle:
        if handle.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
            raise CheckpointError(f"checkpoint {path} is damaged or not a torch checkpoint")
    return path


def load(path: str | Path, family: str | None = None, check_grammars: bool = True) -> LoadedCheckpoint:
    """Read a checkpoint once: its bytes are hashed for the version and unpickled with
    `weights_only=True` (no code runs from the file), onto the CPU.

    Args:
        path: the checkpoint file.
        family: when given, the family it must hold.
        check_grammars: compare the grammar versions it was trained with to the installed ones.

    Raises:
        CheckpointError: missing, damaged, not a codecomp checkpoint, of a newer schema, of another
            family, or trained with other grammar versions than the installed ones.
    """
    import torch  # here: the HTTP process imports this module and must not load torch

    path = check_file(path)
    data = path.read_bytes()
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is damaged or not a torch checkpoint: {error}") from None
    entry = checkpoint.get(CODECOMP_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path} is not a codecomp checkpoint (no {CODECOMP_KEY!r} entry)")
    loaded = LoadedCheckpoint(
        path=path,
        description=_description(path, entry),
        state=_model_state(checkpoint.get("state_dict", {})),
        version=hashlib.blake2b(data, digest_size=8).hexdigest(),
    )
    if family is not None:
        loaded.expect_family(family)
    if check_grammars:
        _check_grammars(loaded)
    return loaded


def _description(path: Path, entry: dict[str, Any]) -> Description:
    schema = entry.get("schema", 1)
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint schema {schema!r}; this codecomp reads schemas 1 to {SCHEMA_VERSION} (update it)"
        )
    if not isinstance(entry.get("family"), str):
        raise CheckpointError(f"{path} does not say its model family (a damaged {CODECOMP_KEY!r} entry)")
    return Description(
        schema=schema,
        family=entry["family"],
        model_config=dict(entry.get("model_config") or {}),
        languages=tuple(entry.get("languages") or ()),
        vocab=entry.get("vocab"),
        grammars=dict(entry.get("grammars") or {}),
        extra={k: v for k, v in entry.items() if k not in _KNOWN},
        corpus=dict(entry["corpus"]) if isinstance(entry.get("corpus"), dict) else None,
    )


def _model_state(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The plain network's weights out of a LightningModule's state dict."""
    return {k[len(_STATE_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(_STATE_PREFIX)}


def _check_grammars(loaded: LoadedCheckpoint) -> None:
    """Tree-sitter and the grammars of the model's languages must be the minor versions it was trained
    with: their minor releases may rename or renumber node kinds (patch releases keep them)."""
    from codecomp.parsing import grammar_versions

    installed = grammar_versions()
    for name in ("tree-sitter", *loaded.description.languages):
        trained = loaded.description.grammars.get(name)
        if trained is None or name not in installed or _minor(installed[name]) == _minor(trained):
            continue
        package = "tree-sitter" if name == "tree-sitter" else f"tree-sitter-{name}"  # the grammars' pip names
        raise CheckpointError(
            f"{loaded.path} was trained with {package} {trained}, but {installed[name]} is installed and node kinds "
            f"may differ: pip install '{package}~={trained}', or retrain the model with the installed version"
        )


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])
