"""Recipes, filters and de-duplication on their own."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from codecomp import CONFIG_DIR
from codecomp.data_prep.config import DataConfig, register_schema
from codecomp.data_prep.dedupe import duplicate_families, keep_one_per_family
from codecomp.data_prep.filters import FilterConfig, drop_reason, strip_licence_header
from codecomp.data_prep.recipe import PackageSpec, Recipe, RecipeError, glob_match
from tests.fixture_corpus import js_module


@pytest.mark.parametrize(
    ("path", "pattern", "expected"),
    [
        ("lodash.js", "lodash.js", True),
        ("src/a/b.js", "src/**", True),
        ("src/a/b.js", "src/*", False),
        ("a.js", "*.js", True),
        ("lib/a.js", "*.js", False),
        ("a.js", "**/*.js", True),
        ("x/dist/y.js", "**/dist/**", True),
        ("distance/y.js", "**/dist/**", False),
    ],
)
def test_glob_semantics(path, pattern, expected):
    assert glob_match(path, pattern) is expected


def package(**fields):
    base = {
        "name": "p",
        "registry": "npm",
        "version": "1",
        "language": "javascript",
        "split": "train",
        "include": ("**",),
    }
    return PackageSpec(**{**base, **fields})


def test_package_locates_and_splits_sub_projects():
    spec = package(root="usr/ex", include=("**/*.cpp",), exclude=("hana/**",), project_depth=1,
                   project_splits={"test": ("graph",)}, language="cpp", registry="deb")  # fmt: skip
    assert spec.locate("usr/ex/graph/a.cpp") == "graph/a.cpp"
    assert spec.locate("usr/ex/hana/a.cpp") is None
    assert spec.locate("usr/other/a.cpp") is None
    assert spec.split_of(spec.project_of("graph/a.cpp")) == "test"
    assert spec.split_of(spec.project_of("heap/a.cpp")) == "train"


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"registry": "pypi"}, "registry"), ({"split": "dev"}, "split"), ({"include": ()}, "include"),
     ({"language": "rust"}, "language"), ({"project_splits": {"test": ("x",)}}, "project_depth")],
)  # fmt: skip
def test_bad_package_fields_are_clear_errors(fields, message):
    with pytest.raises(RecipeError, match=message):
        package(**fields)


def test_forks_must_share_a_split():
    entry = {"registry": "npm", "version": "1", "language": "javascript", "include": ["**"], "family": "uglify"}
    bad = {"name": "r", "packages": [{**entry, "name": "uglify-js", "split": "train"},
                                     {**entry, "name": "terser", "split": "test"}]}  # fmt: skip
    with pytest.raises(RecipeError, match="family 'uglify'"):
        Recipe.from_dict(bad)
    with pytest.raises(RecipeError, match="unexpected keyword"):
        Recipe.from_dict({"name": "r", "packages": [{**entry, "name": "x", "split": "train", "splitt": "x"}]})


@pytest.mark.parametrize("name", ["small", "full"])
def test_conf_recipes_compose_and_validate(name):
    register_schema()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = OmegaConf.to_object(compose(config_name="data", overrides=[f"recipe={name}"]))
    assert isinstance(config, DataConfig)
    recipe = Recipe.from_dict(config.recipe)
    splits = {p.split for p in recipe.packages} | {s for p in recipe.packages for s in p.project_splits}
    assert splits == {"train", "valid", "test"}
    assert {p.language for p in recipe.packages} == {"cpp", "javascript"}
    assert config.filters.max_error_share == 0.02 and config.dedupe.near_threshold == 0.8


def test_filters_name_their_reason():
    cfg = FilterConfig(max_file_bytes=100)
    assert drop_reason("a.py", b"x", 1, "javascript", cfg) == "wrong_extension"
    assert drop_reason("a.js", None, 500, "javascript", cfg) == "too_large"
    assert drop_reason("a.js", b"var a;\x00", 7, "javascript", cfg) == "binary"
    assert drop_reason("a.js", b"var \xe9;", 6, "javascript", cfg) == "not_utf8"
    assert drop_reason("dist/a.js", b"var a;", 6, "javascript", cfg) == "generated"
    assert drop_reason("a.min.js", b"var a;", 6, "javascript", cfg) == "generated"
    assert drop_reason("a.js", b"var a = " + b"1+" * 600 + b"1;", 10, "javascript", cfg) == "minified"
    assert drop_reason("t.cc", b"int x = y; // { dg-error }", 10, "cpp", cfg) == "not_compilable"
    assert drop_reason("a.js", b"var a = 1;\n", 11, "javascript", cfg) is None


def test_licence_header_is_stripped_and_other_comments_stay():
    assert strip_licence_header(b"// Copyright 2020 X\n// MIT License\n\nint x;\n") == b"int x;\n"
    assert strip_licence_header(b"#!/usr/bin/env node\n/* SPDX-License-Identifier: MIT */\nrun();") == b"run();"
    assert strip_licence_header(b"/* Sorts numbers. */\nint x;") == b"/* Sorts numbers. */\nint x;"


def test_near_duplicates_form_families_and_the_held_out_copy_is_kept():
    base = js_module("walker")
    near = base.replace("return [", "const extra = 1;\n  return [")
    other = js_module("unrelated")
    exact = base.replace("\n", "\n\n")
    families = duplicate_families([f.encode() for f in (base, near, other, exact, "x;")])
    assert families == [0, 0, 2, 0, 4]
    assert keep_one_per_family(families, [2, 0, 2, 1, 2]) == [1, None, None, 1, None]
