"""Fetching real packages from the registries (npm and Debian), as the recipes do."""

import pytest

from codecomp.data_prep.extract import archive_files
from codecomp.data_prep.fetch import FetchError, fetch, sha256_of
from codecomp.data_prep.recipe import PackageSpec
from codecomp.parsing import parse

pytestmark = pytest.mark.network


def test_fetch_real_npm_package_and_reuse_the_cache(tmp_path, monkeypatch):
    spec = PackageSpec(name="is-number", registry="npm", version="7.0.0", language="javascript", split="train",
                       include=("index.js",))  # fmt: skip
    archive = fetch(spec, tmp_path)
    assert archive.version == "7.0.0" and archive.sha256 == sha256_of(archive.path)
    files = list(archive_files(spec, archive, 100_000))
    assert [f.path for f in files] == ["index.js"]
    assert len(parse(files[0].data, "javascript")) > 20
    monkeypatch.setattr("codecomp.data_prep.fetch._run", lambda *a: pytest.fail("cached archive fetched again"))
    assert fetch(spec, tmp_path).sha256 == archive.sha256


def test_fetch_real_deb_and_read_its_headers(tmp_path):
    spec = PackageSpec(name="libcxxopts-dev", registry="deb", version="3.1.1-1", language="cpp", split="train",
                       root="usr/include", include=("*.hpp",))  # fmt: skip
    archive = fetch(spec, tmp_path)
    assert archive.version.startswith("3.1.1")
    files = list(archive_files(spec, archive, 1_000_000))
    assert [f.path for f in files] == ["cxxopts.hpp"]
    tree = parse(files[0].data, "cpp")
    assert tree.error_share < 0.05 and len(tree) > 1000


def test_unknown_package_is_a_clear_error(tmp_path):
    spec = PackageSpec(name="codecomp-no-such-package-xyz", registry="npm", version="0.0.1", language="javascript",
                       split="train", include=("*",))  # fmt: skip
    with pytest.raises(FetchError, match="npm pack codecomp-no-such-package-xyz"):
        fetch(spec, tmp_path)
