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


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, fixture_corpus) -> tuple[Path, Path]:
    """Tiny Char-LSTM and Tree-LSTM checkpoints trained on the fixture corpus (for the plumbing of serving, not
    for completion quality), once per session: (char, tree)."""
    from codecomp.train import train
    from tests.test_train import TREE_TINY, compose_train

    short = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
             "test_after_fit=false"]  # fmt: skip
    folder = tmp_path_factory.mktemp("serve-checkpoints")
    train(compose_train(folder / "char", fixture_corpus, short))
    train(compose_train(folder / "tree", fixture_corpus, short, TREE_TINY))
    return folder / "char" / "checkpoints" / "last.ckpt", folder / "tree" / "checkpoints" / "last.ckpt"
