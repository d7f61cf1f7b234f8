"""The tree-sitter grammars codecomp parses, and how file names map to them."""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import PurePath

import tree_sitter
import tree_sitter_cpp
import tree_sitter_javascript

LANGUAGES = ("cpp", "javascript")

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "cpp": (".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h", ".ipp", ".tcc", ".inl"),
    "javascript": (".js", ".mjs", ".cjs", ".jsx"),
}

_GRAMMAR_PACKAGES = {"cpp": "tree-sitter-cpp", "javascript": "tree-sitter-javascript"}
_GRAMMAR_MODULES = {"cpp": tree_sitter_cpp, "javascript": tree_sitter_javascript}


class UnknownLanguageError(ValueError):
    """A language name or file extension that codecomp has no grammar for."""


def check_language(language: str) -> str:
    """Return `language` if codecomp supports it, else raise UnknownLanguageError."""
    if language not in LANGUAGES:
        raise UnknownLanguageError(f"unknown language {language!r}; expected one of {LANGUAGES}")
    return language


def language_for_path(path: str | PurePath) -> str:
    """The language of a source file, from its extension (`a/b.cc` -> `cpp`)."""
    suffix = PurePath(path).suffix.lower()
    for language, suffixes in EXTENSIONS.items():
        if suffix in suffixes:
            return language
    raise UnknownLanguageError(f"no language for file extension {suffix!r} of {str(path)!r}")


@functools.cache
def grammar(language: str) -> tree_sitter.Language:
    """The tree-sitter Language object of a supported language (cached per process)."""
    return tree_sitter.Language(_GRAMMAR_MODULES[check_language(language)].language())


@functools.cache
def parser(language: str) -> tree_sitter.Parser:
    """A parser for `language`, one per process (parsers are not thread-safe)."""
    return tree_sitter.Parser(grammar(language))


@functools.cache
def kind_names(language: str) -> dict[int, str]:
    """Node kind id -> kind name, for every kind the grammar can produce, ERROR included."""
    lang = grammar(language)
    names = {kind_id: lang.node_kind_for_id(kind_id) or "" for kind_id in range(lang.node_kind_count)}
    names[ERROR_KIND_ID] = "ERROR"
    return names


def grammar_versions() -> dict[str, str]:
    """Versions of tree-sitter and of each grammar package, recorded in corpora and checkpoints."""
    versions = {"tree-sitter": importlib.metadata.version("tree-sitter")}
    for language, package in _GRAMMAR_PACKAGES.items():
        versions[language] = importlib.metadata.version(package)
    return versions


# tree-sitter's builtin error symbol, (TSSymbol)-1, is the kind id of every ERROR node.
ERROR_KIND_ID = 65535
