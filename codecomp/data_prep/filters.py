"""Per-file filters: what is not hand-written source of the package's language is dropped, by reason."""

from __future__ import annotations

import dataclasses
import re

from codecomp.data_prep.recipe import matches_any
from codecomp.parsing import EXTENSIONS

# Drop reasons, in the order they are checked; stats.json counts files per reason.
WRONG_EXTENSION = "wrong_extension"
TOO_LARGE = "too_large"
EMPTY = "empty"
BINARY = "binary"
NOT_UTF8 = "not_utf8"
GENERATED = "generated"
MINIFIED = "minified"
NOT_COMPILABLE = "not_compilable"


@dataclasses.dataclass  # not frozen: OmegaConf makes a frozen schema read-only, refusing the yaml
class FilterConfig:
    """Bounds and markers of the filters (the `filters` node of conf/data.yaml)."""

    max_file_bytes: int = 1_000_000
    max_line_chars: int = 1000
    max_mean_line_chars: float = 200.0
    max_error_share: float = 0.02
    max_tree_depth: int = 1000
    generated_paths: list[str] = dataclasses.field(
        default_factory=lambda: ["**/dist/**", "**/build/**", "**/min/**", "**/*.min.js", "**/*.d.ts"]
    )
    generated_markers: list[str] = dataclasses.field(
        default_factory=lambda: ["_interopRequireDefault", "@generated", "DO NOT EDIT"]
    )
    not_compilable_markers: list[str] = dataclasses.field(
        default_factory=lambda: ["dg-error", "dg-excess-errors", "dg-bogus"]
    )  # libstdc++ tests meant to fail


# A leading comment (block or run of line comments) and the blank lines around it.
_LEADING_COMMENT = re.compile(rb"\A\s*(?:/\*.*?\*/|(?://[^\n]*\n\s*)+)\s*", re.S)
_LICENCE_WORDS = re.compile(rb"copyright|licen[cs]e|\bGPL\b|permission is hereby granted|SPDX-License", re.I)
_SHEBANG = re.compile(rb"\A#![^\n]*\n")


def strip_licence_header(data: bytes) -> bytes:
    """Remove leading comments that state a licence or copyright (they are boilerplate a model
    would learn to recite); other leading comments stay."""
    data = _SHEBANG.sub(b"", data)
    while (match := _LEADING_COMMENT.match(data)) and _LICENCE_WORDS.search(match.group(0)):
        data = data[match.end() :]
    return data


def drop_reason(path: str, data: bytes | None, size: int, language: str, config: FilterConfig) -> str | None:
    """Why the file is dropped, or None to keep it. `data` is None for files over the size bound."""
    if not path.lower().endswith(EXTENSIONS[language]):
        return WRONG_EXTENSION
    if data is None or size > config.max_file_bytes:
        return TOO_LARGE
    if not data.strip():
        return EMPTY
    if b"\x00" in data:
        return BINARY
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return NOT_UTF8
    if matches_any(path, config.generated_paths) or any(marker in text for marker in config.generated_markers):
        return GENERATED
    lines = text.splitlines() or [""]
    if max(map(len, lines)) > config.max_line_chars or len(text) / len(lines) > config.max_mean_line_chars:
        return MINIFIED
    if any(marker in text for marker in config.not_compilable_markers):
        return NOT_COMPILABLE
    return None
