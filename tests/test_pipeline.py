"""The corpus pipeline end to end on the fixture corpus, offline."""

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest

import codecomp.data_prep.build
import codecomp.data_prep.fetch
from codecomp.data.shards import TextShard, TreeShard
from codecomp.data.vocab import Vocabulary
from codecomp.data_prep.build import BuildConfig, build_corpus
from codecomp.data_prep.fetch import FetchError
from codecomp.data_prep.filters import FilterConfig
from codecomp.data_prep.recipe import Recipe
from codecomp.parsing import parse
from tests.fixture_corpus import recipe


def offline(monkeypatch):
    def refuse(command, cwd):
        raise AssertionError(f"the build went online: {command}")

    monkeypatch.setattr(codecomp.data_prep.fetch, "_run", refuse)


def config(cache: Path, out: Path, **overrides) -> BuildConfig:
    filters = FilterConfig(max_file_bytes=20_000, max_tree_depth=500)
    return BuildConfig(out_dir=out, cache_dir=cache, workers=1, filters=filters, **overrides)


@pytest.fixture
def corpus(fixture_cache, tmp_path, monkeypatch):
    offline(monkeypatch)
    stats = build_corpus(Recipe.from_dict(recipe()), config(fixture_cache, tmp_path / "data"))
    return tmp_path / "data" / "fixture", stats


def test_drops_are_counted_by_reason(corpus):
    _, stats = corpus
    assert stats["dropped"]["javascript"] == {
        "binary": 1, "empty": 1, "exact_duplicate": 1, "generated": 2, "minified": 1, "near_duplicate": 1,
        "not_utf8": 1, "too_large": 1, "tree_parse_errors": 1, "tree_too_deep": 1, "wrong_extension": 1,
    }  # fmt: skip
    assert stats["transformed"] == {
        "licence_headers_stripped": {"javascript": 1},
        "line_endings_normalised": {"javascript": 1},
        # fx-core's lib/copy.js and lib/near.js (train) duplicate files of fx-test and fx-near: dropped from train
        "held_out_duplicates_dropped_from_train": {"javascript": 2},
    }


def test_splits_hold_whole_projects(corpus):
    folder, _stats = corpus
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["splits"] == {
        "train": ["fx-core", "fx-cpp-examples/alpha"],
        "valid": ["fx-cpp-examples/beta", "fx-near"],
        "test": ["fx-cpp-examples/gamma", "fx-test"],
    }
    for split, projects in manifest["splits"].items():
        for language in ("cpp", "javascript"):
            shard = TextShard(folder / split / language)
            assert {entry["project"] for entry in shard.files} <= set(projects)
    assert {a["name"]: a["version"] for a in manifest["archives"]}["fx-cpp-examples"] == "1.0-1"
    assert all(len(a["sha256"]) == 64 for a in manifest["archives"])


def test_duplicates_stay_in_the_held_out_split(corpus):
    folder, _ = corpus
    paths = {
        split: [e["path"] for e in TextShard(folder / split / "javascript").files]
        for split in ("train", "valid", "test")
    }
    assert "fx-test/lib/shared.js" in paths["test"]
    assert "fx-core/lib/copy.js" not in paths["train"]  # its exact copy (up to whitespace) is in test
    assert "fx-near/src/neighbour.js" in paths["valid"]
    assert "fx-core/lib/near.js" not in paths["train"]  # a near duplicate of a valid file
    assert "fx-core/lib/licensed.js" in paths["train"]


def test_text_shard_keeps_files_whose_tree_is_dropped(corpus):
    folder, _ = corpus
    text, trees = TextShard(folder / "train" / "javascript"), TreeShard(folder / "train" / "javascript")
    paths = [e["path"] for e in text.files]
    assert "fx-core/lib/broken.js" in paths and "fx-core/lib/deep.js" in paths
    with_trees = {paths[i] for i in trees.file_index.tolist()}
    assert "fx-core/lib/broken.js" not in with_trees and "fx-core/lib/deep.js" not in with_trees
    valid = TextShard(folder / "valid" / "javascript")
    own = valid.document([e["path"] for e in valid.files].index("fx-near/src/own.js"))
    assert b"\r" not in own and own.count(b"\n") > 5
    licensed = text.document(paths.index("fx-core/lib/licensed.js"))
    assert licensed.startswith(b"function licensed") and b"Copyright" not in licensed


def test_tree_shard_round_trips(corpus):
    folder, _ = corpus
    for split in ("train", "test"):
        for language in ("cpp", "javascript"):
            text, trees = TextShard(folder / split / language), TreeShard(folder / split / language)
            assert len(trees) > 0
            for t in range(len(trees)):
                stored, fresh = trees.tree(t), parse(text.document(int(trees.file_index[t])), language)
                for name in ("kinds", "named", "parents", "children", "starts", "ends", "depth", "height"):
                    assert np.array_equal(getattr(stored, name), getattr(fresh, name)), name
                leaves = np.flatnonzero(fresh.is_leaf)
                assert [stored.value(i) for i in leaves] == [fresh.value(i) for i in leaves]


def test_vocabulary_comes_from_train_only(corpus):
    folder, stats = corpus
    values = Vocabulary.load(folder / "vocab" / "javascript.values.json")
    assert "alphaAlpha" in values  # train identifiers
    assert "zzUniqueTestNameAlpha" not in values  # test-only identifier
    assert values.id("zzUniqueTestNameAlpha") == values.unk_id
    assert stats["shards"]["test"]["javascript"]["oov"] > 0
    assert stats["vocab"]["javascript"]["oov"]["train"] < stats["shards"]["test"]["javascript"]["oov"]


def test_second_run_is_offline_and_byte_identical(corpus, fixture_cache, tmp_path, monkeypatch):
    folder, _ = corpus
    offline(monkeypatch)
    build_corpus(Recipe.from_dict(recipe()), config(fixture_cache, tmp_path / "again"))
    comparison = filecmp.dircmp(folder, tmp_path / "again" / "fixture")
    assert _all_identical(comparison)


def _all_identical(comparison: filecmp.dircmp) -> bool:
    _, mismatch, errors = filecmp.cmpfiles(comparison.left, comparison.right, comparison.common_files, shallow=False)
    if comparison.left_only or comparison.right_only or mismatch or errors:
        return False
    return all(_all_identical(sub) for sub in comparison.subdirs.values())


def test_interrupted_build_leaves_the_old_corpus_whole(corpus, fixture_cache, monkeypatch):
    folder, _ = corpus
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    stale = folder.parent / ".fixture.partial-999999999"  # a dead run's scratch folder
    stale.mkdir()

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(codecomp.data_prep.build, "build_vocabularies", interrupt)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(Recipe.from_dict(recipe()), config(fixture_cache, folder.parent))
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert [p.name for p in folder.parent.iterdir()] == ["fixture"]  # no scratch left, stale one removed


def test_damaged_cache_entry_is_fetched_again(cache_copy, tmp_path, monkeypatch):
    archive = cache_copy / "npm" / "fx-test=0.1.0.tgz"
    archive.write_bytes(archive.read_bytes()[:-10])
    calls = []

    def no_registry(command, cwd):
        calls.append(command)
        raise FetchError("registry unreachable in this test")

    monkeypatch.setattr(codecomp.data_prep.fetch, "_run", no_registry)
    with pytest.raises(FetchError, match="unreachable"):
        build_corpus(Recipe.from_dict(recipe()), config(cache_copy, tmp_path / "data"))
    assert calls and calls[0][:2] == ["npm", "pack"]
    assert not (tmp_path / "data" / "fixture").exists()
