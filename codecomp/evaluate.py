"""`codecomp-eval`: evaluate a checkpoint on held-out projects against baselines (conf/eval.yaml).

    codecomp-eval ckpt_path=checkpoints/char_lstm_quick/best.ckpt
    codecomp-eval ckpt_path=... recipe=full split=valid max_documents=200

Writes metrics.json to the run folder and scalars to TensorBoard (logs/tensorboard/eval), and prints
a table. Deterministic for a fixed seed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torch.utils.tensorboard import SummaryWriter

from codecomp.evaluation.char_eval import CharEvalSettings, evaluate_language
from codecomp.inference.char_lstm import CharLSTMCompleter

log = logging.getLogger(__name__)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def evaluate(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
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
    completer = CharLSTMCompleter.from_checkpoint(cfg.ckpt_path, device=cfg.device, max_context=settings.context_bytes)
    corpus = Path(cfg.corpus)
    results = {
        language: evaluate_language(completer, corpus, cfg.split, language, settings) for language in cfg.languages
    }
    report = {
        "checkpoint": str(cfg.ckpt_path),
        "corpus": str(corpus),
        "split": cfg.split,
        "baseline": f"char {settings.ngram_order}-gram, {'modified ' if settings.ngram_discount is None else ''}"
        "Kneser-Ney, fit on the train split in this run",
        "settings": OmegaConf.to_container(cfg, resolve=True),
        "languages": results,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=1) + "\n")
    _to_tensorboard(report, Path("logs/tensorboard/eval") / out_dir.name)
    return report


def _to_tensorboard(report: dict[str, Any], log_dir: Path) -> None:
    with SummaryWriter(str(log_dir)) as writer:
        for language, result in report["languages"].items():
            for who in ("model", "baseline"):
                for metric, value in result[who].items():
                    writer.add_scalar(f"{report['split']}/{language}/{who}/{metric}", value, 0)
        writer.add_text("eval/metrics", "```\n" + json.dumps(report["languages"], indent=1) + "\n```", 0)


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    table = Table(title=f"{report['checkpoint']} on {report['corpus']} [{report['split']}] vs {report['baseline']}")
    for column in ("language", "metric", "model", "baseline", "model/baseline"):
        table.add_column(column, justify="left" if column in ("language", "metric") else "right")
    for language, result in report["languages"].items():
        for metric, value in result["model"].items():
            ratio = result["ratio"][metric]
            table.add_row(language, metric, f"{value:.3f}", f"{result['baseline'][metric]:.3f}",
                          "n/a" if ratio is None else f"{ratio:.3f}")  # fmt: skip
    (console or Console(width=120)).print(table)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    report = evaluate(cfg, out_dir)
    print_report(report)
    log.info("metrics written to %s", out_dir / "metrics.json")


if __name__ == "__main__":
    main()
