"""Corpus statistics: stats.json and the printed table."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from codecomp.data.shards import TextShard, TreeShard
from codecomp.data_prep.recipe import SPLITS


def corpus_stats(
    corpus: Path, drops: dict[str, Counter[str]], transforms: dict[str, Counter[str]], vocab: dict
) -> dict:
    """Files, bytes, projects, trees, nodes and ERROR share per split and language, plus drops and OoV."""
    shards: dict[str, dict[str, dict]] = {}
    for split in SPLITS:
        for folder in sorted((corpus / split).glob("*")):
            text, trees = TextShard(folder), TreeShard(folder)
            shards.setdefault(split, {})[folder.name] = {
                "files": len(text),
                "bytes": sum(entry["length"] for entry in text.files),
                "projects": len({entry["project"] for entry in text.files}),
                "trees": len(trees),
                "nodes": trees.node_count,
                "error_share": round(float(trees.error_bytes.sum()) / max(1, int(trees.n_bytes.sum())), 5),
                "oov": vocab.get(folder.name, {}).get("oov", {}).get(split),
            }
    return {
        "shards": shards,
        "dropped": {language: dict(sorted(counts.items())) for language, counts in sorted(drops.items())},
        "transformed": {name: dict(sorted(counts.items())) for name, counts in transforms.items()},
        "vocab": vocab,
    }


def print_stats(stats: dict, console: Console | None = None) -> None:
    console = console or Console(width=max(100, Console().width))
    table = Table(title="corpus")
    for column in ("split", "language", "projects", "files", "MB", "trees", "nodes", "ERROR share", "value OoV"):
        table.add_column(column, justify="left" if column in ("split", "language") else "right")
    for split, languages in stats["shards"].items():
        for language, row in languages.items():
            oov = "" if row["oov"] is None else f"{row['oov']:.2%}"
            table.add_row(
                split, language, str(row["projects"]), f"{row['files']:,}", f"{row['bytes'] / 1e6:.2f}",
                f"{row['trees']:,}", f"{row['nodes']:,}", f"{row['error_share']:.2%}", oov,
            )  # fmt: skip
    console.print(table)
    drops = Table(title="dropped files")
    drops.add_column("language")
    drops.add_column("reason")
    drops.add_column("files", justify="right")
    for language, reasons in stats["dropped"].items():
        for reason, count in reasons.items():
            drops.add_row(language, reason, f"{count:,}")
    console.print(drops)
    for name, counts in stats["transformed"].items():
        console.print(f"{name.replace('_', ' ')}: {counts}")
    sizes = {language: {"kinds": v["kinds"], "values": v["values"]} for language, v in stats["vocab"].items()}
    console.print(f"vocabularies (train split): {json.dumps(sizes)}")
