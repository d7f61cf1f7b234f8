"""The served models' answers for every request of a trace, computed once and kept on disk.

Every model of conf/serve.yaml (checkpoint, settings, options, trigger) answers each request once,
in-process through the model-family registry, exactly as its container would with no deadline. Answers are
kept under `--answers` by model, checkpoint version and trace length, so replays after the first are fast.

For the hot-reload scenario, `untrained` writes a randomly initialised checkpoint of a model's family and
config with the project's own `codecomp.checkpoint.save`, as a mis-deployed training run would give.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmarks.loadgen.editors import Request
from codecomp import CONFIG_DIR
from codecomp.checkpoint import Description, load, save
from codecomp.data.tree_vocab import TreeVocab
from codecomp.inference.completer import Completer, CompletionOptions, CompletionRequest
from codecomp.inference.families import load_completer
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig
from codecomp.models.components.hole_model import HoleModel
from codecomp.serve.api.config import ModelConfig, ServerConfig, register_schema
from codecomp.serve.protocol import WireCandidate
from codecomp.text.tokens import at_token

ModelAnswers = list[list[WireCandidate]]  # per request of the trace, one model's candidates


def served_models(overrides: Sequence[str]) -> ServerConfig:
    """conf/serve.yaml with `overrides`, typed."""
    register_schema()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="serve", overrides=list(overrides))
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def answer_all(completer: Completer, trace: Sequence[Request], options: CompletionOptions, token_only: bool,
               batch: int = 32, only: range | None = None) -> ModelAnswers:  # fmt: skip
    """Every request's candidates from one completer, in trace order (sessions as the server keys them); with
    `only`, the requests of that range (the others get none)."""
    requests = [CompletionRequest(r.prefix.encode(), r.suffix.encode(), r.language,
                                  f"{r.user}\0{r.document}\0{r.language}") for r in trace]  # fmt: skip
    out: ModelAnswers = [[] for _ in trace]
    asked = [i for i, r in enumerate(requests) if (not token_only or at_token(r.prefix)) and (not only or i in only)]
    for start in range(0, len(asked), batch):
        rows = asked[start : start + batch]
        for i, candidates in zip(rows, completer.complete([requests[i] for i in rows], options), strict=True):
            out[i] = [WireCandidate(c.text, c.log_prob, c.complete) for c in candidates if c.text]
    return out


def model_answers(name: str, model: ModelConfig, checkpoint: str | Path, trace: Sequence[Request],
                  store: Path | None, only: range | None = None) -> ModelAnswers:  # fmt: skip
    """One served model's answers for the trace (`only`: for that range of it), with `checkpoint` (read from
    `store` when kept there)."""
    part = f"-{only.start}-{only.stop}" if only else ""
    kept = store / f"{name}-{load(checkpoint).version}-{len(trace)}{part}.msgpack" if store is not None else None
    if kept is not None and kept.is_file():
        return msgspec.msgpack.decode(kept.read_bytes(), type=ModelAnswers)
    completer = load_completer(checkpoint, **model.settings)
    options = CompletionOptions(model.options.k, model.options.beam, model.options.max_chars)
    answers = answer_all(completer, trace, options, model.trigger == "token", only=only)
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_bytes(msgspec.msgpack.encode(answers))
    return answers


def _tree_lstm(description: Description) -> torch.nn.Module:
    vocab = TreeVocab.from_json(description.vocab)
    return HoleModel(len(vocab.kinds), len(vocab.values), **description.model_config)


# A fresh network of each neural family, from its checkpoint's description (as its completer builds one).
_NETWORKS: dict[str, Callable[[Description], torch.nn.Module]] = {
    "char_lstm": lambda description: CharLSTM(CharLSTMConfig(**description.model_config)),
    "tree_lstm": _tree_lstm,
}


def untrained(good: str | Path, out: Path, seed: int = 0) -> Path:
    """A checkpoint of `good`'s family, config, vocabularies and languages whose network is freshly initialised
    (seeded: the same file every time, so its answers are kept like the others').

    Raises:
        ValueError: a family with no network to initialise (the n-gram is counted, not trained by steps).
    """
    if out.is_file():
        return out
    loaded = load(good)
    description = loaded.description
    if description.family not in _NETWORKS:
        raise ValueError(f"no untrained {description.family!r} model: use one of {', '.join(_NETWORKS)}")
    torch.manual_seed(seed)
    state: dict[str, Any] = _NETWORKS[description.family](description).state_dict()
    if state.keys() != loaded.state.keys():
        raise ValueError(f"a fresh {description.family} network does not have the weights of {good}")
    corpus = description.corpus["path"] if description.corpus else None
    return save(out, state, description.family, description.model_config, description.languages,
                description.vocab, corpus, **description.extra)  # fmt: skip
