"""LSP positions to string offsets and UTF-8 byte offsets, and back.

An LSP position is (line, character). Lines are split at `\\n`, `\\r\\n` and `\\r` only (not at the other
characters Python's `str.splitlines` breaks at, such as U+2028 or form feed). `character` counts code
units of the encoding agreed at initialization: UTF-16 unless the client offered another
(`general.positionEncodings`): a character outside the Basic Multilingual Plane (an emoji) is 2 UTF-16
units, 4 UTF-8 units, 1 UTF-32 unit. The completion server wants a UTF-8 byte offset, so everything
passes through a Python `str` index (code points) here.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"
ENCODINGS = (UTF8, UTF16, UTF32)
LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Position:
    """A zero-based LSP position: `character` in code units of the agreed encoding."""

    line: int
    character: int


def units(text: str, encoding: str) -> int:
    """How many code units of `encoding` `text` takes (lone surrogates count as one character)."""
    if encoding == UTF32 or text.isascii():
        return len(text)
    if encoding == UTF16:
        return len(text.encode("utf-16-le", "surrogatepass")) // 2
    return len(text.encode("utf-8", "surrogatepass"))


def utf8_bytes(text: str) -> int:
    """The length of `text` in UTF-8 bytes: the server's cursor unit."""
    return units(text, UTF8)


def line_starts(text: str) -> list[int]:
    """The string index at which each line of `text` starts (the first is 0)."""
    return [0, *(match.end() for match in LINE_BREAK.finditer(text))]


def line_end(text: str, starts: list[int], line: int) -> int:
    """The string index where `line`'s content ends, before its line break."""
    if line + 1 >= len(starts):
        return len(text)
    end = starts[line + 1]
    if text[end - 1] == "\n":
        end -= 1
    if end > starts[line] and text[end - 1] == "\r":
        end -= 1
    return end


def column_index(line_text: str, character: int, encoding: str) -> int:
    """The string index in `line_text` at `character` code units.

    A column past the end of the line means its end (as LSP says); one that falls inside a character
    (between the two UTF-16 units of an emoji, inside a UTF-8 sequence) means that character's start.
    """
    if character <= 0:
        return 0
    if encoding == UTF32 or line_text.isascii():
        return min(character, len(line_text))
    counted = 0
    for index, char in enumerate(line_text):
        width = units(char, encoding)
        if counted + width > character:
            return index
        counted += width
    return len(line_text)


def offset_at(text: str, position: Position, encoding: str, starts: list[int] | None = None) -> int:
    """The string index of `position` in `text` (clamped: a line past the end means the end of the text)."""
    starts = line_starts(text) if starts is None else starts
    if position.line < 0:
        return 0
    if position.line >= len(starts):
        return len(text)
    start = starts[position.line]
    return start + column_index(text[start : line_end(text, starts, position.line)], position.character, encoding)


def position_at(text: str, offset: int, encoding: str, starts: list[int] | None = None) -> Position:
    """The LSP position of string index `offset` in `text`."""
    starts = line_starts(text) if starts is None else starts
    offset = max(0, min(offset, len(text)))
    line = bisect_right(starts, offset) - 1
    return Position(line, units(text[starts[line] : offset], encoding))
