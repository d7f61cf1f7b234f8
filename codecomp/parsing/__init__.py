"""Tree-sitter parsing of C++ and JavaScript into flat CodeTree arrays."""

from codecomp.parsing.codetree import HOLE, NO_VALUE, CodeTree, level_order, parse
from codecomp.parsing.cursor import CursorLeaf, leaf_at, mark_hole
from codecomp.parsing.forest import Forest
from codecomp.parsing.languages import (
    EXTENSIONS,
    LANGUAGES,
    UnknownLanguageError,
    grammar_versions,
    kind_names,
    language_for_path,
)

__all__ = [
    "EXTENSIONS",
    "HOLE",
    "LANGUAGES",
    "NO_VALUE",
    "CodeTree",
    "CursorLeaf",
    "Forest",
    "UnknownLanguageError",
    "grammar_versions",
    "kind_names",
    "language_for_path",
    "leaf_at",
    "level_order",
    "mark_hole",
    "parse",
]
