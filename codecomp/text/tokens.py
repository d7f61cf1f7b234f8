"""Regular expressions for the words and tokens of C++/JavaScript source bytes.

Two token notions, for two purposes:
- `CODE_TOKEN` keeps every non-space byte: the approximate cache compares the code just before a
  cursor, where punctuation (`x.`, `x(`, `x,`) decides what comes next.
- `DEDUPE_TOKEN` keeps names, numbers and whole string literals and drops punctuation: near-duplicate
  detection looks for copied content, which formatting and operators say little about.
"""

from __future__ import annotations

import re

WORD_BYTE = rb"[A-Za-z0-9_$\x80-\xff]"  # a byte of a name or number (any byte of a non-ASCII UTF-8 name)
WORD = re.compile(rb"[A-Za-z_$\x80-\xff]" + WORD_BYTE + rb"*")  # a name

# Where a token is being typed: after a word byte, or a member access (`.`, `->`, `::`) that starts one.
AT_TOKEN = re.compile(rb"(?:" + WORD_BYTE + rb"|\.|->|::)\Z")


def at_token(prefix: bytes) -> bool:
    """Whether a token is being typed at the end of `prefix` (a token model has something to say)."""
    return AT_TOKEN.search(prefix[-2:]) is not None


# A run of word bytes (a name or number, `2.5` is three tokens), or any other non-space byte by itself.
CODE_TOKEN = re.compile(WORD_BYTE + rb"+|\S")

# A name, a number (`2.5`, `0x1fL`, `1e10` whole), or a single- or double-quoted string on one line.
DEDUPE_TOKEN = re.compile(WORD.pattern + rb"|\d[\w.]*|\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'")


def code_tokens(data: bytes, start: int = 0, end: int | None = None) -> list[bytes]:
    """The `CODE_TOKEN`s of `data[start:end]`, without copying the slice."""
    return CODE_TOKEN.findall(data, start, len(data) if end is None else end)
