"""Stepwise line decoding (continuous batching) in the completers: rows join mid-decode and get the answers they
would get alone, leave as soon as their answer is known, and keep their own deadlines."""

import math

import numpy as np
import pytest
import torch

from codecomp.data.char_vocab import EOF_ID
from codecomp.inference import char_beams
from codecomp.inference.char_lstm import CharLSTMCompleter
from codecomp.inference.completer import CompletionOptions, CompletionRequest
from codecomp.inference.decoding import StepwiseCompleter
from codecomp.inference.ngram import NGramCompleter
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig
from codecomp.models.ngram import CharNGram

CODE = (b"function total(items) {\n  let sum = 0;\n  for (const item of items) {\n    sum += item.price;\n  }\n"
        b"  return sum;\n}\nmodule.exports = total;\n")  # fmt: skip


def char_completer(endless: bool = False) -> CharLSTMCompleter:
    """A tiny random Char-LSTM; `endless`: it never ends a line, so every row runs to `max_chars`."""
    torch.manual_seed(0)
    model = CharLSTM(CharLSTMConfig(embed_dim=8, hidden=16, layers=2))
    if endless:
        model.head.bias.data[[ord("\n"), EOF_ID]] = -1e9
    return CharLSTMCompleter(model)


def ngram_completer() -> NGramCompleter:
    model = CharNGram(order=4).fit([CODE] * 3)
    return NGramCompleter({"javascript": model, "cpp": model})


def request(prefix: bytes, language: str = "javascript") -> CompletionRequest:
    return CompletionRequest(prefix, b"", language)


def run_out(decoding, answers: dict) -> None:
    while decoding.live:
        decoding.step()
        answers.update(decoding.pop_finished())


def same(got, expected) -> None:
    assert [(c.text, c.complete) for c in got] == [(c.text, c.complete) for c in expected]
    np.testing.assert_allclose([c.log_prob for c in got], [c.log_prob for c in expected], atol=1e-4)


@pytest.mark.parametrize("make", [char_completer, ngram_completer], ids=["char_lstm", "ngram"])
def test_rows_that_join_mid_decode_get_the_answers_they_would_get_alone(make):
    completer = make()
    assert isinstance(completer, StepwiseCompleter)
    options = CompletionOptions(k=2, beam=3, max_chars=12)
    first = request(b"function total(items) {\n  let s")
    later = [request(b"  for (const item of it"), request(b"int x = ", "cpp")]
    if isinstance(completer, NGramCompleter):
        later.append(request(b"x", "python"))  # a language without a model: it leaves at once, with no answer
    decoding = completer.decoding(options)
    [first_row] = decoding.add([first], [math.inf])
    decoding.step()
    decoding.step()
    answers = dict(decoding.pop_finished())
    assert decoding.live == 1 and not answers  # the first row is still decoding when the others join
    rows = decoding.add(later, [math.inf] * len(later))
    run_out(decoding, answers)
    assert decoding.live == 0 and set(answers) == {first_row, *rows}
    for row, alone in zip([first_row, *rows], completer.complete([first, *later], options), strict=True):
        same(answers[row], alone)
    for row, r in zip([first_row, *rows], [first, *later], strict=True):
        same(answers[row], completer.complete([r], options)[0])  # each one alone too
    if isinstance(completer, NGramCompleter):
        assert answers[rows[-1]] == []


def test_a_row_leaves_as_soon_as_it_reaches_the_byte_bound_while_later_ones_go_on():
    decoding = char_completer(endless=True).decoding(CompletionOptions(k=1, beam=2, max_chars=6))
    [early] = decoding.add([request(b"const a = ")], [math.inf])
    for _ in range(3):
        decoding.step()
    [late] = decoding.add([request(b"let b = ")], [math.inf])
    left = []
    for _ in range(3):
        decoding.step()
        left.append([row for row, _ in decoding.pop_finished()])
    assert left == [[], [], [early]] and decoding.live == 1  # after its own 6 bytes, 3 steps before the other's
    answers: dict = {}
    run_out(decoding, answers)
    assert list(answers) == [late] and len(answers[late][0].text) == 6


def test_a_row_leaves_when_its_line_ends_while_a_longer_one_goes_on():
    completer = ngram_completer()
    decoding = completer.decoding(CompletionOptions(k=1, beam=2, max_chars=40))
    short, long = decoding.add([request(CODE[: CODE.index(b" total;")]), request(b"  for (const item of")],
                               [math.inf, math.inf])  # fmt: skip
    answers: dict = {}
    while short not in answers:
        decoding.step()
        answers.update(decoding.pop_finished())
    assert long not in answers and decoding.live == 1
    [line] = answers[short]
    assert line.complete and line.text.endswith(b";")  # a memorised line, ended by its newline
    run_out(decoding, answers)
    assert len(answers[long][0].text) > len(line.text)  # the longer line decoded on after it had left


def test_short_texts_are_read_by_fused_steps_as_the_lstm_reads_them():
    completer = char_completer()
    prefixes = [b"function add(a, b) {\n  return a", b"int main() {", b"x", b"y"]
    languages = ["javascript", "cpp", "javascript", "cpp"]
    texts = [b" + b", b"", b"y", b"z;"]  # up to 4 bytes, of different lengths, one empty: stepwise
    advanced = completer.advance_many(completer.encode(prefixes, languages), texts)
    for prefix, text, language, state in zip(prefixes, texts, languages, advanced, strict=True):
        fresh = completer.encode([prefix + text], [language])[0]
        assert state.length == fresh.length
        torch.testing.assert_close(state.log_probs, fresh.log_probs, atol=1e-5, rtol=0)
        torch.testing.assert_close((state.h, state.c), (fresh.h, fresh.c), atol=1e-5, rtol=0)


def test_a_session_one_keystroke_on_reads_its_new_bytes_in_the_decoding_steps():
    completer, options = char_completer(), CompletionOptions(k=2, beam=3, max_chars=10)
    session = "ada\0a.js\0javascript"
    completer.complete([CompletionRequest(b"function add(a, b) {\n  return a", b"", "javascript", session)], options)
    typed = CompletionRequest(b"function add(a, b) {\n  return a + b", b"", "javascript", session)  # 4 bytes on
    decoding = completer.decoding(options)
    [other] = decoding.add([request(b"let x = ")], [math.inf])
    decoding.step()
    [row] = decoding.add([typed], [math.inf])  # resumed from the session's state, its 4 new bytes not read yet
    assert completer.prefix_states.hits == 1 and decoding.unread_len.tolist() == [0, 4]
    answers: dict = {}
    run_out(decoding, answers)
    fresh = char_completer().complete([CompletionRequest(typed.prefix, b"", "javascript")], options)[0]
    same(answers[row], fresh)  # read in the decoding's steps as a fresh read would have read it
    same(answers[other], completer.complete([request(b"let x = ")], options)[0])
    state, rest = completer.prefix_states.lookup(session, typed.prefix + b";", 256)  # the session kept the state
    assert rest == b";" and state.length == len(typed.prefix)
    torch.testing.assert_close(state.h, completer.encode([typed.prefix], ["javascript"])[0].h, atol=1e-5, rtol=0)


class Clock:
    """A stepped stand-in for the `time` module the decoding reads its deadlines against."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_each_row_keeps_its_own_deadline(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(char_beams, "time", clock)
    decoding = char_completer(endless=True).decoding(CompletionOptions(k=2, beam=2, max_chars=30))
    [hurried] = decoding.add([request(b"const a = ")], [100.5])
    [patient] = decoding.add([request(b"let b = ")], [math.inf])
    for _ in range(3):
        decoding.step()
    [late] = decoding.add([request(b"var c = ")], [99.0])  # joins with its deadline passed
    clock.now = 100.6
    decoding.step()
    answers = dict(decoding.pop_finished())
    assert set(answers) == {hurried, late} and decoding.live == 1
    assert [(len(c.text), c.complete) for c in answers[hurried]] == [(3, False)] * 2  # its best after 3 bytes
    assert [(c.text, c.complete) for c in answers[late]] == [(b"", False)]  # stopped before its first byte
    run_out(decoding, answers)
    assert all(len(c.text) == 30 and not c.complete for c in answers[patient])  # decoded on to the byte bound
