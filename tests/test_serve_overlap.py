"""Trimming a candidate's overlap with the rest of the line after the cursor (codecomp/serve/service/overlap.py)."""

import pytest

from codecomp.serve.protocol import WireCandidate
from codecomp.serve.service.overlap import rest_of_line, trim_candidates, trim_overlap


@pytest.mark.parametrize(
    ("text", "rest", "complete", "inserted"),
    [
        (b"a, b);", b");", True, b"a, b"),  # the whole rest at its end
        (b"a, b);", b");", False, b"a, b"),  # ... even when cut short
        (b"a, b);  ", b");", True, b"a, b"),  # trailing white space is not text to keep
        (b"x)", b");", True, b"x"),  # the start of the rest: `x);`, not `x););`
        (b"x)", b");", False, b"x)"),  # cut short: where it ended says nothing
        (b"oo", b"o(x)", True, b"o"),  # the rest of an identifier: `fo|o(x)` + `oo` -> `foo(x)`
        (b"e", b"e <iostream>", True, b""),  # only repeats what is there: nothing to insert
        (b"a + b", b"* 2;", True, b"a + b"),  # no overlap: as it was
        (b"x.leng", b" > 0", True, b"x.leng"),
        (b"", b");", True, b""),
        (b"abc", b"", True, b"abc"),  # at the end of a line: as it was
        (b"{\n  return x;\n}", b"}", True, b"{\n  return x;\n"),  # several lines: the rest follows the last
    ],
)
def test_trim_overlap(text, rest, complete, inserted):
    assert trim_overlap(text, rest, complete) == inserted


def test_rest_of_line_stops_at_the_line_end():
    assert rest_of_line(b");  \r\nnext();") == b");"
    assert rest_of_line(b"\n);") == b""
    assert rest_of_line(b"") == b""


def test_trim_candidates_keeps_scores_and_completeness():
    candidates = [WireCandidate(b"f(x));", -0.5), WireCandidate(b"g)", -1.0, complete=False)]
    assert trim_candidates(candidates, b");\n}") == [WireCandidate(b"f(x)", -0.5), WireCandidate(b"g)", -1.0, False)]
    assert trim_candidates(candidates, b"\n}") == candidates
