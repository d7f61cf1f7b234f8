"""`codecomp-data`: build a corpus from a recipe (Hydra app, conf/data.yaml)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from codecomp import CONFIG_DIR
from codecomp.data_prep.build import build_corpus
from codecomp.data_prep.config import DataConfig, register_schema
from codecomp.data_prep.recipe import Recipe
from codecomp.data_prep.stats import print_stats

register_schema()  # before hydra.main composes conf/data.yaml against it


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="data")
def main(cfg: DictConfig) -> None:
    config = OmegaConf.to_object(cfg)  # the `hydra` node is not part of it
    assert isinstance(config, DataConfig)
    recipe = Recipe.from_dict(config.recipe)
    print_stats(build_corpus(recipe, config))
    logging.getLogger(__name__).info("corpus written to %s", config.out_dir / recipe.name)


if __name__ == "__main__":
    main()
