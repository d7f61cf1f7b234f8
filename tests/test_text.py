"""Tests of codecomp/text: the token regexes and the shared MinHash/LSH."""

from __future__ import annotations

import re

import numpy as np
import pytest

from codecomp.text.brackets import open_brackets, statement_closing
from codecomp.text.minhash import MinHasher, jaccard
from codecomp.text.tokens import DEDUPE_TOKEN, WORD, WORD_BYTE, code_tokens

# ---------------------------------------------------------------- tokens


def test_word_is_a_name_and_word_byte_any_byte_of_one() -> None:
    assert WORD.fullmatch(b"$foo_1")
    assert WORD.fullmatch("café".encode())
    assert not WORD.fullmatch(b"1foo")
    assert not WORD.fullmatch(b"foo.bar")
    assert [m.group() for m in WORD.finditer(b"a.b1(2)")] == [b"a", b"b1"]
    assert re.fullmatch(WORD_BYTE + rb"+", "$_1é".encode())
    assert not re.match(WORD_BYTE, b".")


def test_code_tokens_keep_every_non_space_byte() -> None:
    assert code_tokens(b"foo_1 = $bar(2.5);\n  x+=1") == b"foo_1 = $bar ( 2 . 5 ) ; x + = 1".split()
    assert code_tokens(b"abc def", 1, 5) == [b"bc", b"d"]
    assert code_tokens("x = café;".encode()) == [b"x", b"=", "café".encode(), b";"]  # one token, not 5 bytes


def test_dedupe_tokens_are_names_numbers_and_whole_strings() -> None:
    source = b"const s = 'it\\'s' + \"a b\"; x1 += 2.5e3; f(0x1f);"
    assert DEDUPE_TOKEN.findall(source) == [b"const", b"s", b"'it\\'s'", b'"a b"', b"x1", b"2.5e3", b"f", b"0x1f"]


# ---------------------------------------------------------------- MinHash / LSH


def test_jaccard() -> None:
    assert jaccard(frozenset({1, 2}), frozenset({2, 3})) == pytest.approx(1 / 3)
    assert jaccard(frozenset({b"a"}), frozenset({b"a"})) == 1.0
    assert jaccard(frozenset({b"a"}), frozenset()) == 0.0
    assert jaccard(frozenset(), frozenset()) == 1.0


def _words(stem: str, n: int) -> set[bytes]:
    return {f"{stem}{i}".encode() for i in range(n)}


def test_signature_is_a_set_function_with_a_fixed_seed() -> None:
    hasher = MinHasher(bands=4, rows=3, seed=7)
    items = _words("w", 50)
    signature = hasher.signature(items)
    assert signature.shape == (12,) and signature.dtype == np.uint32
    assert np.array_equal(hasher.signature(sorted(items, reverse=True)), signature)  # order does not matter
    assert np.array_equal(MinHasher(bands=4, rows=3, seed=7).signature(items), signature)
    assert not np.array_equal(MinHasher(bands=4, rows=3, seed=8).signature(items), signature)
    assert np.array_equal(hasher.signature(items), signature)  # the returned array was not overwritten
    assert (hasher.signature([]) == 2**32 - 1).all()


def test_signature_agreement_estimates_jaccard() -> None:
    hasher = MinHasher(bands=32, rows=16, seed=0)  # 512 values: standard error about 0.02
    a, b = _words("w", 300), _words("w", 200) | _words("v", 100)  # Jaccard 200 / 400
    agreement = float((hasher.signature(a) == hasher.signature(b)).mean())
    assert agreement == pytest.approx(jaccard(frozenset(a), frozenset(b)), abs=0.08)


def test_band_keys_are_per_band_and_salted() -> None:
    hasher = MinHasher(bands=5, rows=2)
    signature = hasher.signature(_words("w", 20))
    keys = hasher.band_keys(signature)
    assert len(keys) == len(set(keys)) == 5
    assert hasher.band_keys(signature) == keys
    salted = hasher.band_keys(signature, salt=b"line")
    assert not set(salted) & set(keys)
    # A signature that differs in band 1 only keeps the other four keys.
    changed = signature.copy()
    changed[2] ^= 1
    assert [x == y for x, y in zip(hasher.band_keys(changed), keys, strict=True)] == [True, False, True, True, True]


def test_candidate_pairs_find_near_duplicates_only() -> None:
    hasher = MinHasher(bands=20, rows=5)
    base = _words("w", 100)
    near = (base - _words("w", 5)) | _words("x", 5)  # Jaccard 95 / 105
    other = _words("y", 100)
    sets = [(0, base), (3, other), (5, near), (9, base)]
    assert hasher.candidate_pairs(sets) == [(0, 5), (0, 9), (5, 9)]
    assert hasher.candidate_pairs([]) == []


@pytest.mark.parametrize(
    ("before", "closing"),
    [(b"int f() {\n  total += compute(values[i", b"]);"),  # innermost first
     (b"int f() {\n  if (ready(x) && y", b");"),
     (b"int f() {\n  g(a);\n  values.", b";"),  # nothing open in the statement: only its end
     (b"const o = { a: f(", b");"),  # stops at a `{`: the code after the cursor closes blocks itself
     (b'g("(", \'[\', /* ( */ a[0], `(\n[`, // (\n  h(', b"));"),  # brackets in literals, comments skipped
     (b"x = a)]; y(", b");")],  # stray closers ignored
)  # fmt: skip
def test_statement_closing_closes_what_the_statement_left_open(before: bytes, closing: bytes) -> None:
    assert statement_closing(before) == closing


def test_open_brackets_are_outermost_first() -> None:
    assert open_brackets(b"f() { g([1, {") == [ord("{"), ord("("), ord("["), ord("{")]
    assert open_brackets(b'"unterminated (\nf(') == [ord("(")]  # a `"` literal ends at its line's end
