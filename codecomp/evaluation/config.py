"""The settings of `codecomp-eval` (conf/eval.yaml), typed: the schema Hydra checks the yaml and overrides against.

A wrong type (`seed=abc`) or an unknown key (`ngram.nope=1`) stops the run at start-up, before any
checkpoint loads. conf/eval.yaml holds the values and says what each one means.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.core.config_store import ConfigStore

SCHEMA = "eval_schema"  # the name conf/eval.yaml lists first in its defaults


@dataclasses.dataclass
class NgramConfig:
    order: int = 6
    discount: float | None = None  # None: modified Kneser-Ney


@dataclasses.dataclass
class NextCharConfig:
    positions: int = 20000  # per language


@dataclasses.dataclass
class LineCompletionConfig:
    positions: int = 200  # cursors per language
    beam_size: int = 4
    max_chars: int = 80
    context_bytes: int = 4096


@dataclasses.dataclass
class HolesConfig:
    per_language: int = 500
    ablation_ckpt_path: str | None = None
    # hole settings scored (codecomp.data.hole_settings.SETTINGS), and the share of holes partly typed in the
    # editor and prefix ones
    contexts: list[str] = dataclasses.field(default_factory=lambda: ["whole_file", "editor", "prefix"])
    partial_rate: float = 0.0


@dataclasses.dataclass
class MixtureConfig:
    ngram_ckpt_path: str | None = None  # a cache n-gram to mix with a Char-LSTM; None: no mixture
    fit_documents: int | None = 40  # valid files sampled to fit the weight; None: all


@dataclasses.dataclass
class EvalConfig:
    ckpt_path: str
    corpus: str  # the corpus folder scored, data/<corpus_name> by default
    corpus_name: str = "small"
    split: str = "test"
    # The corpus whose train split the baselines are fitted on; None: the one the checkpoint records (else `corpus`).
    fit_corpus: str | None = None
    tensorboard_dir: str | None = None  # None: tensorboard/ inside the run folder
    languages: list[str] = dataclasses.field(default_factory=lambda: ["cpp", "javascript"])
    max_documents: int | None = None  # files sampled per language; None: all
    device: str = "cpu"
    seed: int = 0
    quantize: str = "none"  # or int8: the completer's matrix products dynamically quantized (CPU), as served
    # The `completer` block of conf/eval.yaml: how the checkpoint's completer is built.
    completer: dict[str, Any] = dataclasses.field(default_factory=dict)
    ngram: NgramConfig = dataclasses.field(default_factory=NgramConfig)
    next_char: NextCharConfig = dataclasses.field(default_factory=NextCharConfig)
    line_completion: LineCompletionConfig = dataclasses.field(default_factory=LineCompletionConfig)
    holes: HolesConfig = dataclasses.field(default_factory=HolesConfig)
    mixture: MixtureConfig = dataclasses.field(default_factory=MixtureConfig)


def register_schema() -> None:
    """Make `eval_schema` known to Hydra; the CLI calls it before composing, as do tests."""
    ConfigStore.instance().store(name=SCHEMA, node=EvalConfig)
