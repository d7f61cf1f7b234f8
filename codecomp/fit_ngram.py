"""`codecomp-fit-ngram`: fit the byte n-gram of each language on a corpus's train split and save it as one
checkpoint of the `ngram` family (conf/ngram.yaml), which serving and `codecomp-eval` load with no config.

    codecomp-fit-ngram                                  # data/small, 6-grams, checkpoints/ngram/best.ckpt
    codecomp-fit-ngram corpus_name=full order=7 out=checkpoints/ngram_full/best.ckpt
"""

from __future__ import annotations

import dataclasses
import logging
import time
from functools import partial
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from codecomp import CONFIG_DIR
from codecomp.checkpoint import save
from codecomp.data.shards import TextShard
from codecomp.inference.ngram import NGramCompleter, checkpoint_state
from codecomp.models.ngram import CharNGram

log = logging.getLogger(__name__)

SCHEMA = "ngram_schema"  # the name conf/ngram.yaml lists first in its defaults


@dataclasses.dataclass
class FitNGramConfig:
    """The settings of `codecomp-fit-ngram`, typed: a wrong type or an unknown key stops it at start-up."""

    corpus: str  # the corpus folder, data/<corpus_name> by default
    corpus_name: str = "small"
    split: str = "train"
    languages: list[str] = dataclasses.field(default_factory=lambda: ["cpp", "javascript"])
    order: int = 6
    discount: float | None = None  # None: modified Kneser-Ney
    out: str = "checkpoints/ngram/best.ckpt"


def register_schema() -> None:
    """Make `ngram_schema` known to Hydra; the CLI calls it before composing, as do tests."""
    ConfigStore.instance().store(name=SCHEMA, node=FitNGramConfig)


def fit_ngram(config: FitNGramConfig, console: Console | None = None) -> Path:
    """Fit one model per language on `config.corpus`'s `config.split`, save them in one checkpoint, print what
    was fitted; returns the checkpoint's path."""
    console = console or Console(width=120)
    corpus = Path(config.corpus)
    shards = {language: TextShard(corpus / config.split / language) for language in config.languages}
    models, summary = {}, Table(title=f"{config.order}-grams fitted on {corpus / config.split}")
    for column in ("language", "files", "bytes", "n-grams per order", "seconds"):
        summary.add_column(column, justify="left" if column in ("language", "n-grams per order") else "right")
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("order {task.completed}/{task.total}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console) as progress:
        for language, shard in shards.items():
            task = progress.add_task(f"{language}: counting", total=config.order)
            started = time.perf_counter()
            model = CharNGram(config.order, config.discount).fit(shard, partial(progress.advance, task))
            models[language] = model
            sizes = [len(array) for name, array in model.to_arrays().items() if name.endswith(".ng_keys")]
            summary.add_row(language, str(len(shard)), str(int(sum(f["length"] for f in shard.files))),
                            " ".join(map(str, sizes)), f"{time.perf_counter() - started:.1f}")  # fmt: skip
    fitted = {language: {"files": len(shard), "bytes": int(sum(f["length"] for f in shard.files))}
              for language, shard in shards.items()}  # fmt: skip
    path = save(config.out, checkpoint_state(models), NGramCompleter.family,
                {"order": config.order, "discount": config.discount}, list(models), vocab=None, corpus=corpus,
                split=config.split, fitted=fitted)  # fmt: skip
    console.print(summary)
    console.print(f"checkpoint: {path} ({path.stat().st_size / 1e6:.1f} MB, family {NGramCompleter.family!r})")
    return path


register_schema()  # before hydra.main composes conf/ngram.yaml against it


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="ngram")
def main(cfg: DictConfig) -> None:
    config = OmegaConf.to_object(cfg)  # the `hydra` node is not part of it
    assert isinstance(config, FitNGramConfig)
    fit_ngram(config)


if __name__ == "__main__":
    main()
