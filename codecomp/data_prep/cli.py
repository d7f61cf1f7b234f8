"""`codecomp-data`: build a corpus from a recipe (Hydra app, conf/data.yaml)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from codecomp import CONFIG_DIR
from codecomp.data_prep.build import BuildConfig, build_corpus
from codecomp.data_prep.filters import FilterConfig
from codecomp.data_prep.recipe import Recipe
from codecomp.data_prep.stats import print_stats


def build_config(cfg: DictConfig) -> BuildConfig:
    filters: dict[str, Any] = OmegaConf.to_container(cfg.filters, resolve=True)  # type: ignore[assignment]
    return BuildConfig(
        out_dir=Path(cfg.out_dir),
        cache_dir=Path(cfg.cache_dir),
        workers=int(cfg.workers),
        filters=FilterConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in filters.items()}),  # type: ignore[arg-type]
        near_duplicate_threshold=float(cfg.dedupe.near_threshold),
        near_duplicate_min_tokens=int(cfg.dedupe.min_tokens),
        vocab_max_values=int(cfg.vocab.max_values),
        vocab_min_frequency=int(cfg.vocab.min_frequency),
    )


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="data")
def main(cfg: DictConfig) -> None:
    recipe_node: dict[str, Any] = OmegaConf.to_container(cfg.recipe, resolve=True)  # type: ignore[assignment]
    stats = build_corpus(Recipe.from_dict(recipe_node), build_config(cfg))
    print_stats(stats)
    logging.getLogger(__name__).info("corpus written to %s", Path(cfg.out_dir) / cfg.recipe.name)


if __name__ == "__main__":
    main()
