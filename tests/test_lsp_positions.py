"""LSP positions (UTF-16 by default, UTF-8 or UTF-32 when agreed) to string and UTF-8 byte offsets, and back."""

import random

import pytest

from codecomp.serve.lsp.documents import Document, language_of
from codecomp.serve.lsp.positions import (
    UTF8,
    UTF16,
    UTF32,
    Position,
    line_starts,
    offset_at,
    position_at,
    units,
    utf8_bytes,
)

TEXT = 'const s = "héllo 😀";\r\nlet 名前 = s + "\u2028";\rx\n'  # CRLF, a lone CR, U+2028 inside a line


def test_code_units_of_each_encoding():
    assert [units("😀", e) for e in (UTF8, UTF16, UTF32)] == [4, 2, 1]
    assert [units("é", e) for e in (UTF8, UTF16, UTF32)] == [2, 1, 1]
    assert [units("名", e) for e in (UTF8, UTF16, UTF32)] == [3, 1, 1]
    assert utf8_bytes("a😀é") == 7


def test_lines_break_at_lf_crlf_and_cr_only():
    assert line_starts(TEXT) == [0, 22, 40, 42]  # not at U+2028
    assert line_starts("a\r\n\r\nb") == [0, 3, 5]


@pytest.mark.parametrize(
    "encoding, character, expected",
    [(UTF16, 17, "😀"), (UTF8, 18, "😀"), (UTF32, 17, "😀"), (UTF16, 19, '"'), (UTF8, 22, '"'), (UTF32, 18, '"')],
)
def test_a_position_after_an_emoji_counts_it_in_the_agreed_units(encoding, character, expected):
    # 'const s = "héllo ' is 17 code points, 17 UTF-16 units, 18 UTF-8 bytes (é is 2); the emoji 1, 2, 4
    offset = offset_at(TEXT, Position(0, character), encoding)
    assert TEXT[offset] == expected
    assert position_at(TEXT, offset, encoding) == Position(0, character)


def test_positions_past_the_end_clamp_and_never_split_a_character():
    assert offset_at(TEXT, Position(0, 999), UTF16) == TEXT.index("\r\n")  # the line's end, before its break
    assert offset_at(TEXT, Position(99, 0), UTF16) == len(TEXT)
    inside_emoji = offset_at(TEXT, Position(0, 18), UTF16)  # between the emoji's two UTF-16 units
    assert TEXT[inside_emoji] == "😀"
    assert offset_at(TEXT, Position(0, 19), UTF8) == TEXT.index("😀")  # inside its UTF-8 bytes


def test_lines_after_crlf_cr_and_a_line_separator():
    assert TEXT[offset_at(TEXT, Position(1, 0), UTF16) :].startswith("let 名前")
    assert TEXT[offset_at(TEXT, Position(2, 0), UTF16)] == "x"
    assert offset_at(TEXT, Position(1, 999), UTF16) == TEXT.index("\rx")  # U+2028 stays inside line 1


def test_round_trip_on_random_text():
    rng = random.Random(0)
    alphabet = ["a", "é", "名", "😀", "\n", "\r\n", "\r", "\u2028", " "]
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        starts = line_starts(text)
        for offset in range(len(text) + 1):
            if 0 < offset < len(text) and text[offset - 1 : offset + 1] == "\r\n":
                continue  # inside a line break: no position points there
            for encoding in (UTF8, UTF16, UTF32):
                position = position_at(text, offset, encoding, starts)
                assert offset_at(text, position, encoding, starts) == offset


def test_a_cursor_gives_prefix_suffix_byte_offset_and_the_word_typed():
    document = Document("file:///a.js", "let x = 1;\r\nconst é😀 = fo(b);\r\n", 1, "javascript", UTF16)
    cursor = document.cursor(Position(1, 14))  # after "fo": é is 1 unit, the emoji 2
    assert cursor.prefix == "let x = 1;\r\nconst é😀 = fo"
    assert cursor.byte_offset == len(cursor.prefix.encode()) == 29  # é is 2 bytes, the emoji 4
    assert (cursor.word, cursor.rest_of_line, cursor.word_start) == ("fo", "(b);", Position(1, 12))


def test_incremental_changes_in_utf16_units():
    document = Document("file:///a.cpp", "int 😀 = 1;\r\nint y;", 1, "cpp", UTF16)
    document.replace(Position(0, 9), Position(0, 10), "2")  # the "1", after the 2-unit emoji
    document.replace(Position(1, 4), Position(1, 5), "zz")
    document.replace(Position(0, 11), Position(1, 0), "\n")  # CRLF -> LF
    assert document.text == "int 😀 = 2;\nint zz;"


def test_languages_by_id_then_extension():
    assert language_of("file:///x/a.txt", "cpp") == "cpp"
    assert language_of("file:///x/a.hpp", "plaintext") == "cpp"
    assert language_of("file:///x/a%20b.mjs", None) == "javascript"
    assert language_of("file:///x/a.py", "python") is None
