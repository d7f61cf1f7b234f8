"""The open documents, kept in sync with the editor, and what the server is asked about a cursor in one.

pygls keeps a workspace of its own, but splits lines at every separator `str.splitlines` knows (U+2028,
form feed, ...) where LSP counts only `\\n`, `\\r\\n` and `\\r`; so the text is kept here, by LSP's rules.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from dataclasses import dataclass, field

from codecomp.serve.lsp.positions import Position, line_end, line_starts, offset_at, position_at, utf8_bytes

# Language ids editors use, and file extensions for the ones they do not know: the server's two languages.
LANGUAGE_IDS = {
    "cpp": "cpp", "c++": "cpp", "cuda-cpp": "cpp", "objcpp": "cpp",
    "javascript": "javascript", "javascriptreact": "javascript", "js": "javascript", "jsx": "javascript",
}  # fmt: skip
EXTENSIONS = {
    ".cpp": "cpp", ".cc": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
    ".h++": "cpp", ".h": "cpp", ".ipp": "cpp", ".inl": "cpp", ".tcc": "cpp",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
}  # fmt: skip


def language_of(uri: str, language_id: str | None) -> str | None:
    """The server's language for a document: by its language id, else by its file extension; None: not served."""
    if language_id and (language := LANGUAGE_IDS.get(language_id.lower())):
        return language
    extension = posixpath.splitext(urllib.parse.urlsplit(uri).path)[1].lower()
    return EXTENSIONS.get(extension)


def path_of(uri: str) -> str:
    """The file path of a `file:` URI (the URI itself for other schemes): the server's `segments.filepath`."""
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.unquote(parts.path) if parts.scheme == "file" else uri


@dataclass(frozen=True)
class Cursor:
    """A snapshot of a document at a cursor: what the completion request carries, and where edits go.

    Attributes:
        prefix, suffix: the text before and after the cursor.
        byte_offset: the cursor as a UTF-8 byte offset into the document (the server's `cursor`).
        word: the identifier characters just before the cursor, on its line (replaced by a completion item).
        rest_of_line: the text after the cursor up to the line break (not repeated by a completion).
        position, word_start: the cursor and the start of `word` as LSP positions.
    """

    prefix: str
    suffix: str
    byte_offset: int
    word: str
    rest_of_line: str
    position: Position
    word_start: Position


@dataclass
class Document:
    """One open document: its text, version and language; positions in `encoding` code units."""

    uri: str
    text: str
    version: int
    language: str | None
    encoding: str
    _starts: list[int] | None = field(default=None, repr=False)

    @property
    def starts(self) -> list[int]:
        if self._starts is None:
            self._starts = line_starts(self.text)
        return self._starts

    def replace(self, start: Position, end: Position, new_text: str) -> None:
        """Apply one incremental change: the text between `start` and `end` becomes `new_text`."""
        first = offset_at(self.text, start, self.encoding, self.starts)
        last = max(first, offset_at(self.text, end, self.encoding, self.starts))
        self.text = self.text[:first] + new_text + self.text[last:]
        self._starts = None

    def set_text(self, text: str) -> None:
        self.text, self._starts = text, None

    def cursor(self, position: Position) -> Cursor:
        """The snapshot at `position` (clamped into the document)."""
        text, starts = self.text, self.starts
        offset = offset_at(text, position, self.encoding, starts)
        at = position_at(text, offset, self.encoding, starts)  # the clamped position
        line_start = starts[at.line]
        first = offset
        while first > line_start and _is_word_char(text[first - 1]):
            first -= 1
        prefix = text[:offset]
        return Cursor(
            prefix=prefix, suffix=text[offset:], byte_offset=utf8_bytes(prefix), word=text[first:offset],
            rest_of_line=text[offset : line_end(text, starts, at.line)], position=at,
            word_start=position_at(text, first, self.encoding, starts),
        )  # fmt: skip


def _is_word_char(char: str) -> bool:
    """A character of an identifier being typed (JavaScript names may hold `$`)."""
    return char.isalnum() or char in "_$"


class Documents:
    """The documents the editor has open, by URI."""

    def __init__(self) -> None:
        self._open: dict[str, Document] = {}
        self.encoding = "utf-16"

    def open(self, uri: str, text: str, version: int, language_id: str | None) -> Document:
        document = Document(uri, text, version, language_of(uri, language_id), self.encoding)
        self._open[uri] = document
        return document

    def get(self, uri: str) -> Document | None:
        return self._open.get(uri)

    def close(self, uri: str) -> None:
        self._open.pop(uri, None)

    def __len__(self) -> int:
        return len(self._open)
