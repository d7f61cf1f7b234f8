"""Build a corpus from a recipe: fetch, filter, deduplicate, split, parse, shard, vocabularies, stats.

Everything is written into a scratch folder beside the target and renamed into place at the end,
so an interrupted run never leaves a corpus that looks whole.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from codecomp.data.shards import ShardFile, write_text_shard, write_tree_shard
from codecomp.data_prep import dedupe
from codecomp.data_prep.extract import archive_files
from codecomp.data_prep.fetch import Archive, fetch
from codecomp.data_prep.filters import FilterConfig, drop_reason, strip_licence_header
from codecomp.data_prep.recipe import SPLITS, Recipe
from codecomp.data_prep.stats import corpus_stats
from codecomp.data_prep.vocabularies import build_vocabularies
from codecomp.parsing import CodeTree, grammar_versions, parse

log = logging.getLogger(__name__)

# Drop reasons decided after filtering (see filters.py for the per-file ones).
EXACT_DUPLICATE, NEAR_DUPLICATE = "exact_duplicate", "near_duplicate"
# Reasons a kept file has no CodeTree in the tree shard (its text stays in the text shard).
PARSE_FAILED, PARSE_ERRORS, TOO_DEEP = "parse_failed", "parse_errors", "too_deep"


# Not frozen, these config classes: OmegaConf makes a frozen schema read-only, refusing the yaml.
@dataclasses.dataclass
class DedupeConfig:
    near_threshold: float = 0.8  # token-set Jaccard at which two files count as near duplicates
    min_tokens: int = 20  # smaller files take part in exact de-duplication only


@dataclasses.dataclass
class VocabConfig:
    max_values: int = 20000  # leaf-value vocabulary size, special tokens included
    min_frequency: int = 2


@dataclasses.dataclass
class BuildConfig:
    """Settings of a build besides the recipe (conf/data.yaml, which nests them the same way)."""

    out_dir: Path  # the corpus goes to out_dir/<recipe name>/
    cache_dir: Path  # fetched archives
    workers: int = 2  # parser processes
    filters: FilterConfig = dataclasses.field(default_factory=FilterConfig)
    dedupe: DedupeConfig = dataclasses.field(default_factory=DedupeConfig)
    vocab: VocabConfig = dataclasses.field(default_factory=VocabConfig)


@dataclasses.dataclass(frozen=True)
class CorpusFile:
    package: str
    project: str
    split: str
    language: str
    path: str  # package name / path inside the package
    text: bytes


def build_corpus(recipe: Recipe, config: BuildConfig) -> dict:
    """Build `<out_dir>/<recipe.name>/` and return its stats (also written to stats.json)."""
    started = time.monotonic()
    target = config.out_dir / recipe.name
    scratch = config.out_dir / f".{recipe.name}.partial-{os.getpid()}"
    _remove_stale_scratch(config.out_dir, recipe.name)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        archives = [fetch(package, config.cache_dir) for package in tqdm(recipe.packages, desc="fetch", unit="pkg")]
        drops: dict[str, Counter[str]] = defaultdict(Counter)
        files, transforms = _filtered_files(recipe, archives, config.filters, drops)
        files, transforms["held_out_duplicates_dropped_from_train"] = _deduplicated(files, config, drops)
        trees = _parse_all(files, config, drops)
        by_shard: dict[tuple[str, str], list[int]] = defaultdict(list)
        for index, file in enumerate(files):
            by_shard[(file.split, file.language)].append(index)
        for (split, language), members in sorted(by_shard.items()):
            folder = scratch / split / language
            write_text_shard(folder, [ShardFile(files[i].path, files[i].project, files[i].text) for i in members])
            with_tree = [position for position, i in enumerate(members) if trees[i] is not None]
            write_tree_shard(folder, language, [trees[members[p]] for p in with_tree], with_tree)  # type: ignore[misc]
        vocab_report = build_vocabularies(scratch, config.vocab.max_values, config.vocab.min_frequency)
        manifest = {
            "recipe": recipe.name,
            "grammars": grammar_versions(),
            "archives": [archive.manifest_entry() for archive in archives],
            "splits": {split: sorted({f.project for f in files if f.split == split}) for split in SPLITS},
        }
        _write_json(scratch / "manifest.json", manifest)
        stats = corpus_stats(scratch, drops, transforms, vocab_report)
        _write_json(scratch / "stats.json", stats)
        _replace_atomically(scratch, target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    log.info("built %s in %.1f s", target, time.monotonic() - started)
    return stats


def _filtered_files(
    recipe: Recipe, archives: list[Archive], filters: FilterConfig, drops: dict[str, Counter[str]]
) -> tuple[list[CorpusFile], dict[str, Counter[str]]]:
    files, stripped, normalised = [], Counter[str](), Counter[str]()
    for package, archive in zip(recipe.packages, archives, strict=False):
        bound = min(filters.max_file_bytes, package.max_file_bytes or filters.max_file_bytes)
        bounded = dataclasses.replace(filters, max_file_bytes=bound)
        for item in archive_files(package, archive, bound):
            reason = drop_reason(item.path, item.data, item.size, package.language, bounded)
            if reason is not None:
                drops[package.language][reason] += 1
                continue
            assert item.data is not None
            text = strip_licence_header(item.data)
            if text != item.data:
                stripped[package.language] += 1
            if b"\r\n" in text:  # one line ending everywhere: models would otherwise learn both
                text = text.replace(b"\r\n", b"\n")
                normalised[package.language] += 1
            project = package.project_of(item.path)
            files.append(
                CorpusFile(
                    package.name,
                    project,
                    package.split_of(project),
                    package.language,
                    f"{package.name}/{item.path}",
                    text,
                )
            )
    files.sort(key=lambda f: (f.language, SPLITS.index(f.split), f.project, f.path))
    return files, {"licence_headers_stripped": stripped, "line_endings_normalised": normalised}


def _deduplicated(
    files: list[CorpusFile], config: BuildConfig, drops: dict[str, Counter[str]]
) -> tuple[list[CorpusFile], Counter[str]]:
    """Keep one file per (near-)duplicate family, preferring the most held-out split.

    Also counts, per language, the train files dropped because a valid or test file is their (near) duplicate:
    the held-out figures would have been measured on code seen in training.
    """
    families = dedupe.duplicate_families(
        [f.text for f in files], config.dedupe.near_threshold, config.dedupe.min_tokens
    )
    rank = {"test": 0, "valid": 1, "train": 2}
    duplicate_of = dedupe.keep_one_per_family(families, [rank[f.split] for f in files])
    kept, leaks = [], Counter[str]()
    for file, original in zip(files, duplicate_of, strict=False):
        if original is None:
            kept.append(file)
            continue
        if file.split == "train" and files[original].split != "train":
            leaks[file.language] += 1
        if dedupe.exact_key(file.text) == dedupe.exact_key(files[original].text):
            drops[file.language][EXACT_DUPLICATE] += 1
        else:
            drops[file.language][NEAR_DUPLICATE] += 1
    return kept, leaks


def _parse_job(job: tuple[bytes, str]) -> CodeTree | None:
    text, language = job
    try:
        return parse(text, language)
    except Exception:  # a file the parser cannot take is counted, never fatal
        return None


def _parse_all(files: list[CorpusFile], config: BuildConfig, drops: dict[str, Counter[str]]) -> list[CodeTree | None]:
    """CodeTrees of the files that parse cleanly enough; None (and a drop count) for the others."""
    jobs: Iterator[tuple[bytes, str]] = ((f.text, f.language) for f in files)
    pool = multiprocessing.get_context("spawn").Pool(config.workers) if config.workers > 1 else None
    results: Iterator[CodeTree | None] = (
        pool.imap(_parse_job, jobs, chunksize=16) if pool is not None else map(_parse_job, jobs)
    )
    trees: list[CodeTree | None] = []
    try:
        for file, tree in tqdm(zip(files, results, strict=False), total=len(files), desc="parse", unit="file"):
            reason = None
            if tree is None:
                reason = PARSE_FAILED
            elif tree.error_share > config.filters.max_error_share:
                reason = PARSE_ERRORS
            elif int(tree.depth.max()) > config.filters.max_tree_depth:
                reason = TOO_DEEP
            if reason is not None:
                drops[file.language]["tree_" + reason] += 1
                tree = None
            trees.append(tree)
    finally:
        if pool is not None:
            pool.terminate()
    return trees


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def _remove_stale_scratch(out_dir: Path, name: str) -> None:
    """Delete scratch folders of earlier runs that died (their process is gone)."""
    for folder in out_dir.glob(f".{name}.partial-*"):
        pid = int(folder.name.rsplit("-", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass


def _replace_atomically(scratch: Path, target: Path) -> None:
    """Rename the finished corpus into place; an older corpus is moved aside first, then removed."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.rename(target, old)
    os.rename(scratch, target)
    shutil.rmtree(old, ignore_errors=True)
