"""`codecomp-eval`: evaluate a checkpoint on held-out projects against baselines (conf/eval.yaml).

    codecomp-eval ckpt_path=checkpoints/char_lstm_quick/best.ckpt
    codecomp-eval ckpt_path=... corpus_name=full split=valid max_documents=200
    codecomp-eval ckpt_path=... corpus_name=other fit_corpus=data/small   # baselines fit on data/small/train

Scores any built corpus and split; the baselines are fitted on the train split of the corpus the checkpoint
was trained on (or `fit_corpus`). Writes metrics.json and TensorBoard scalars (tensorboard/) to the run
folder, and prints a table. Deterministic for a fixed seed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch.utils.tensorboard import SummaryWriter

from codecomp import CONFIG_DIR
from codecomp.checkpoint import load
from codecomp.evaluation.char_eval import CharEvalSettings, evaluate_language
from codecomp.evaluation.config import EvalConfig, register_schema
from codecomp.evaluation.corpora import CorpusError, ShardKind, resolve_corpora
from codecomp.evaluation.hole_eval import evaluate_holes, print_holes
from codecomp.evaluation.mixture import MixtureSettings, evaluate_mixture, print_mixture
from codecomp.inference.families import load_completer
from codecomp.inference.ngram import NGramCompleter

log = logging.getLogger(__name__)

register_schema()  # before hydra.main composes conf/eval.yaml against it


def evaluate(cfg: EvalConfig, out_dir: Path) -> dict[str, Any]:
    """Evaluate the checkpoint's completer (built as serving builds it, with the `completer` settings)
    at its task, lines or tokens, on `cfg.corpus`'s split, with baselines fitted on the train split of the
    corpus the checkpoint was trained on (or `cfg.fit_corpus`); write metrics.json and TensorBoard."""
    loaded = load(cfg.ckpt_path)
    completer = load_completer(loaded, device=cfg.device, quantize=cfg.quantize, **cfg.completer)
    corpora = resolve_corpora(cfg.corpus, cfg.split, cfg.languages, cfg.fit_corpus, loaded.description.corpus,
                              _SHARDS.get(completer.task, "text"), cfg.ckpt_path)  # fmt: skip
    # The tasks read the resolved corpora from the config: the fitted corpus, the languages the split has.
    cfg = dataclasses.replace(cfg, fit_corpus=str(corpora.fitted), languages=list(corpora.languages))
    languages = _TASKS[completer.task](cfg, completer)
    report = {
        "checkpoint": str(cfg.ckpt_path),
        "family": completer.family,
        "task": completer.task,
        **corpora.summary(),
        "settings": dataclasses.asdict(cfg),
        "languages": languages,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=1) + "\n")
    # Under the run folder unless told otherwise: an evaluation writes nowhere else (tests leave logs/ alone).
    board = Path(cfg.tensorboard_dir) / out_dir.name if cfg.tensorboard_dir else out_dir / "tensorboard"
    _to_tensorboard(report, board)
    return report


def evaluate_tokens(cfg: EvalConfig, completer: Any) -> dict[str, Any]:
    """Hole prediction of a token completer (a TreeLSTMCompleter), beside its ablation if given."""
    ablation = cfg.holes.ablation_ckpt_path
    ablation_completer: Any = (
        load_completer(ablation, device=cfg.device, quantize=cfg.quantize, **cfg.completer) if ablation else None
    )
    return {
        language: evaluate_holes(completer, ablation_completer, Path(cfg.corpus), cfg.split, language,
                                 cfg.holes.per_language, cfg.seed, fit_corpus=Path(cfg.fit_corpus or cfg.corpus),
                                 contexts=cfg.holes.contexts, partial_rate=cfg.holes.partial_rate)
        for language in cfg.languages
    }  # fmt: skip


def evaluate_lines(cfg: EvalConfig, completer: Any) -> dict[str, Any]:
    """Bits per character and line completion of a line completer (a CharLSTMCompleter) against the n-gram."""
    settings = CharEvalSettings(
        ngram_order=cfg.ngram.order,
        ngram_discount=cfg.ngram.discount,
        next_char_positions=cfg.next_char.positions,
        line_positions=cfg.line_completion.positions,
        beam_size=cfg.line_completion.beam_size,
        max_chars=cfg.line_completion.max_chars,
        context_bytes=cfg.line_completion.context_bytes,
        max_documents=cfg.max_documents,
        seed=cfg.seed,
    )
    if "max_context" not in cfg.completer:  # the model reads as much prefix as the baseline, unless told
        completer.max_context = settings.context_bytes
    results = {
        language: evaluate_language(
            completer, Path(cfg.corpus), cfg.split, language, settings, fit_corpus=Path(cfg.fit_corpus or cfg.corpus)
        )
        for language in cfg.languages
    }
    if cfg.mixture.ngram_ckpt_path and completer.family == "char_lstm":  # the mixture beside each model alone
        ngram = NGramCompleter.from_checkpoint(cfg.mixture.ngram_ckpt_path)
        mixing = MixtureSettings(
            fit_documents=cfg.mixture.fit_documents, next_char_positions=settings.next_char_positions,
            line_positions=settings.line_positions, beam_size=settings.beam_size, max_chars=settings.max_chars,
            max_documents=cfg.max_documents, seed=cfg.seed,
        )  # fmt: skip
        for language, result in results.items():
            result["mixture"] = evaluate_mixture(completer, ngram, Path(cfg.corpus), cfg.split,
                                                 Path(cfg.fit_corpus or cfg.corpus), language, mixing)  # fmt: skip
    baseline = f"{'modified ' if settings.ngram_discount is None else ''}Kneser-Ney char {settings.ngram_order}-gram"
    fitted = f"{cfg.fit_corpus or cfg.corpus}/train"
    return {language: {**result, "baseline_name": f"{baseline}, fit on {fitted} in this run"}
            for language, result in results.items()}  # fmt: skip


_TASKS = {"line": evaluate_lines, "token": evaluate_tokens}  # a completer's task -> how it is evaluated
_SHARDS: dict[str, ShardKind] = {"line": "text", "token": "trees"}  # a task -> the shards it reads


def _to_tensorboard(report: dict[str, Any], log_dir: Path) -> None:
    with SummaryWriter(str(log_dir)) as writer:
        for tag, value in _scalars(report["languages"], report["split"]):
            writer.add_scalar(tag, value, 0)
        writer.add_text("eval/metrics", "```\n" + json.dumps(report["languages"], indent=1) + "\n```", 0)


def _scalars(tree: Any, prefix: str) -> list[tuple[str, float]]:
    """Every number in the nested results, tagged by its path."""
    if isinstance(tree, dict):
        return [pair for key, value in tree.items() for pair in _scalars(value, f"{prefix}/{key}")]
    return [(prefix, float(tree))] if isinstance(tree, int | float) and not isinstance(tree, bool) else []


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=120)
    printer = print_holes if report["task"] == "token" else _print_char
    printer(report, console)


def _print_char(report: dict[str, Any], console: Console) -> None:
    first = next(iter(report["languages"].values()))
    title = f"{report['checkpoint']} on {report['corpus']} [{report['split']}] vs {first['baseline_name']}"
    table = Table(title=escape(title))  # escaped: Rich would take "[test]" for markup and drop it
    for column in ("language", "metric", "model", "baseline", "model/baseline"):
        table.add_column(column, justify="left" if column in ("language", "metric") else "right")
    for language, result in report["languages"].items():
        for metric, value in result["model"].items():
            ratio = result["ratio"][metric]
            table.add_row(language, metric, f"{value:.3f}", f"{result['baseline'][metric]:.3f}",
                          "n/a" if ratio is None else f"{ratio:.3f}")  # fmt: skip
    console.print(table)
    print_mixture(report, console)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    config = OmegaConf.to_object(cfg)  # the `hydra` node is not part of it
    assert isinstance(config, EvalConfig)
    try:
        report = evaluate(config, out_dir)
    except CorpusError as error:  # a missing corpus: the message says what to build or name, no traceback needed
        raise SystemExit(f"codecomp-eval: {error}") from None
    print_report(report)
    log.info("metrics written to %s", out_dir / "metrics.json")


if __name__ == "__main__":
    main()
