import shutil
from pathlib import Path

import pytest
import torch

from tests.fixture_corpus import write_cache


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fixture_cache(tmp_path_factory) -> Path:
    """A fetch cache holding the fixture corpus's archives (built once per session)."""
    folder = tmp_path_factory.mktemp("fixture-cache")
    write_cache(folder / "cache", folder)
    return folder / "cache"


@pytest.fixture
def cache_copy(fixture_cache, tmp_path) -> Path:
    """A private copy of the fixture cache that a test may damage."""
    return Path(shutil.copytree(fixture_cache, tmp_path / "cache"))


@pytest.fixture(scope="session")
def fixture_corpus(fixture_cache, tmp_path_factory) -> Path:
    """The fixture corpus built once per session by the real pipeline (offline, from the cache)."""
    from codecomp.data_prep.build import BuildConfig, build_corpus
    from codecomp.data_prep.filters import FilterConfig
    from codecomp.data_prep.recipe import Recipe
    from tests.fixture_corpus import recipe

    out = tmp_path_factory.mktemp("corpus")
    filters = FilterConfig(max_file_bytes=20_000, max_tree_depth=500)
    build_corpus(
        Recipe.from_dict(recipe()), BuildConfig(out_dir=out, cache_dir=fixture_cache, workers=1, filters=filters)
    )
    return out / "fixture"
