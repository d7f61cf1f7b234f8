"""The settings of `codecomp-data` (conf/data.yaml), typed: the schema Hydra checks the yaml and overrides against.

A wrong type (`workers=two`) or an unknown key (`filters.nope=1`) stops the build at start-up, before
anything is fetched. `DataConfig` is the `BuildConfig` the build receives, plus the recipe node.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.core.config_store import ConfigStore

from codecomp.data_prep.build import BuildConfig

SCHEMA = "data_schema"  # the name conf/data.yaml lists first in its defaults


@dataclasses.dataclass
class DataConfig(BuildConfig):
    # The `recipe` group (conf/recipe/*.yaml): checked as a whole by `Recipe.from_dict`, which knows its rules.
    recipe: dict[str, Any] = dataclasses.field(kw_only=True)


def register_schema() -> None:
    """Make `data_schema` known to Hydra; the CLI calls it before composing, as do tests."""
    ConfigStore.instance().store(name=SCHEMA, node=DataConfig)
