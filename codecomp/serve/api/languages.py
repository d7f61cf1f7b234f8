"""Which served language answers a request: editors name languages their own way (VS Code's language ids,
file extensions), Tabby's clients may name none, and the models know a few.

A language that is a near relative of a served one is answered by that one's models (TypeScript by the
JavaScript models: its syntax is JavaScript's plus types; C, CUDA and Objective-C++ by the C++ models). Any
other language gets an empty answer that says why, never an error: Tabby's clients treat an error as a
broken server and reconnect.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Collection

# Editor language ids and file extensions -> the language of the models that answer.
LANGUAGE_ALIASES = {
    "javascript": "javascript", "javascriptreact": "javascript", "js": "javascript", "jsx": "javascript",
    "mjs": "javascript", "cjs": "javascript",
    "cpp": "cpp", "c++": "cpp", "cc": "cpp", "cxx": "cpp", "hpp": "cpp", "hh": "cpp", "hxx": "cpp", "h++": "cpp",
    "ipp": "cpp", "tpp": "cpp", "inl": "cpp",
}  # fmt: skip
# Near relatives, answered by the models of the language named (said so in the answer's `language`).
CLOSEST = {
    "typescript": "javascript", "typescriptreact": "javascript", "ts": "javascript", "tsx": "javascript",
    "mts": "javascript", "cts": "javascript",
    "c": "cpp", "h": "cpp", "cuda-cpp": "cpp", "cuda": "cpp", "cu": "cpp", "cuh": "cpp", "objective-cpp": "cpp",
    "mm": "cpp", "arduino": "cpp", "ino": "cpp",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Resolved:
    """The served language whose models answer, or None and the reason none does."""

    language: str | None
    reason: str | None = None


def resolve(language: str | None, filepath: str | None, served: Collection[str]) -> Resolved:
    """The served language for a request's `language` (any editor's name for it), or, when it names none, for
    the extension of its `segments.filepath`."""
    if language and language.strip():
        named, asked = language.strip().lower(), f"language {language!r}"
    elif filepath and (extension := posixpath.splitext(filepath.replace("\\", "/"))[1].lstrip(".")):
        named, asked = extension.lower(), f"a file named {posixpath.basename(filepath)!r}"
    else:
        return Resolved(None, f"no language given, nor a file path with an extension; served: {', '.join(served)}")
    found = LANGUAGE_ALIASES.get(named) or CLOSEST.get(named)
    if found is None or found not in served:
        return Resolved(None, f"no model for {asked}; served: {', '.join(served)}")
    return Resolved(found)


def described(served: Collection[str]) -> str:
    """What the API documentation says of languages (OpenAPI): the served ones, their stand-ins, the rest."""
    names = sorted(name for name, target in LANGUAGE_ALIASES.items() if target in served)
    near = sorted((name, target) for name, target in CLOSEST.items() if target in served)
    return (
        f"Served: {', '.join(served)} (also named {', '.join(names)}). Near relatives, answered by a served "
        f"language's models: {', '.join(f'{name} -> {target}' for name, target in near)}. Absent or empty: taken "
        "from the extension of `segments.filepath`. Any other language: 200 with no choices, `language` null "
        "and `reason` saying why."
    )
