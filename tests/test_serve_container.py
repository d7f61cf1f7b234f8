"""Model containers without sockets: the wire protocol, the prefix-state cache, the runners, the message core."""

import time

import msgpack
import numpy as np
import pytest
import torch

from codecomp.data.holes import DEFAULT_TARGET_KINDS
from codecomp.data.tree_vocab import TreeVocab
from codecomp.data.vocab import KIND_SPECIALS, VALUE_SPECIALS, Vocabulary
from codecomp.inference.char_lstm import CharLSTMCompleter
from codecomp.inference.tree_lstm import HoleModel, TreeLSTMCompleter
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig
from codecomp.serve import protocol
from codecomp.serve.container.process import CharLSTMRunner, ContainerCore, Options, PrefixStateCache, TreeLSTMRunner

FILE = b"function add(a, b) {\n  return a + b;\n}\nconst total = add(1, 2);\n"


@pytest.fixture
def char_completer():
    torch.manual_seed(0)
    return CharLSTMCompleter(CharLSTM(CharLSTMConfig(embed_dim=8, hidden=16, layers=2)))


def request(prefix, session="ada\0a.js", language="javascript", suffix=b""):
    return {"prefix": prefix, "suffix": suffix, "language": language, "session": session}


def test_protocol_round_trip_and_refusals():
    message = protocol.unpack(protocol.pack(protocol.PREDICT, batch=3, requests=[{"prefix": b"\xff"}]))
    assert message == {"v": protocol.VERSION, "type": "predict", "batch": 3, "requests": [{"prefix": b"\xff"}]}
    with pytest.raises(protocol.ProtocolError, match="version"):
        protocol.unpack(msgpack.packb({"v": 99, "type": "predict"}))
    with pytest.raises(protocol.ProtocolError, match="unknown message type"):
        protocol.unpack(msgpack.packb({"v": protocol.VERSION, "type": "gossip"}))
    with pytest.raises(protocol.ProtocolError, match="map"):
        protocol.unpack(msgpack.packb([1, 2]))
    with pytest.raises(protocol.ProtocolError, match="msgpack"):
        protocol.unpack(b"\xc1")


def test_prefix_state_cache_resumes_from_the_longest_cached_prefix(char_completer):
    cache = PrefixStateCache(sessions=2, per_session=3)
    states = {n: char_completer.encode([FILE[:n]], ["javascript"])[0] for n in (10, 20, 30, 40)}
    assert cache.lookup("s", FILE[:25], max_gap=100) is None
    for n in (10, 20, 30, 40):
        cache.store("s", FILE[:n], states[n])
    state, rest = cache.lookup("s", FILE[:45], max_gap=100)  # typing on: resume from 40
    assert state is states[40] and rest == FILE[40:45]
    state, rest = cache.lookup("s", FILE[:25] + b"XYZ", max_gap=100)  # deleted back to 25, typed XYZ
    assert state is states[20] and rest == FILE[20:25] + b"XYZ"
    assert cache.lookup("s", FILE[:5], max_gap=100) is None  # 10 was dropped: only 3 kept per session
    assert cache.lookup("s", FILE[:60], max_gap=10) is None  # too far ahead: reading afresh is cheaper
    cache.store("t", FILE[:10], states[10])
    cache.store("u", FILE[:10], states[10])
    assert cache.lookup("s", FILE[:45], max_gap=100) is None  # least recently used session evicted


def test_char_runner_with_cached_states_answers_as_if_read_afresh(char_completer):
    runner = CharLSTMRunner(char_completer)
    options = Options(k=2, beam=2, max_chars=6)
    far = time.monotonic() + 60
    cut = FILE.index(b"return") + 3
    first = runner.predict([request(FILE[:cut])], [far], options)
    typed = runner.predict([request(FILE[: cut + 4]), request(FILE[:cut], session="other")], [far, far], options)
    assert runner.states.hits == 1 and runner.states.misses == 2
    again = runner.predict([request(FILE[: cut + 5])], [far], options)  # a batch of warm sessions only
    assert runner.states.hits == 2 and again[0]
    fresh = CharLSTMRunner(char_completer).predict([request(FILE[: cut + 4])], [far], options)
    assert [t for t, _, _ in typed[0]] == [t for t, _, _ in fresh[0]]
    np.testing.assert_allclose([s for _, s, _ in typed[0]], [s for _, s, _ in fresh[0]], atol=1e-4)
    assert [t for t, _, _ in typed[1]] == [t for t, _, _ in first[0]]
    assert all(len(text) <= 6 and b"\n" not in text for text, _, _ in typed[0])


def test_char_runner_stops_at_the_deadline(char_completer):
    runner = CharLSTMRunner(char_completer)
    passed, far = time.monotonic() - 1, time.monotonic() + 60
    stopped, finished = runner.predict(
        [request(FILE[:30]), request(FILE[:40], "bo")], [passed, far], Options(k=1, max_chars=8)
    )
    assert stopped == []  # its deadline had passed: stopped before its first character (the empty line is dropped)
    assert finished and len(finished[0][0]) <= 8  # the other request decoded on


@pytest.fixture
def tree_runner():
    torch.manual_seed(0)
    values = Vocabulary.from_counts({"add": 5, "total": 4, "print": 3}, 100, specials=VALUE_SPECIALS)
    kinds = Vocabulary.from_counts(
        {f"javascript/{k}": 1 for k in ("program", "identifier", "call_expression", "arguments", "number")},
        100, specials=KIND_SPECIALS,
    )  # fmt: skip
    vocab = TreeVocab(kinds, values)
    model = HoleModel(len(vocab.kinds), len(vocab.values), 8, 8, 8, False)
    return TreeLSTMRunner(TreeLSTMCompleter(model, vocab, DEFAULT_TARGET_KINDS), window_bytes=4096)


def test_tree_runner_offers_the_rest_of_the_token_and_nothing_inside_strings(tree_runner):
    prefix = FILE + b"print(tot"
    in_string = request(b'const s = "in a', suffix=b' string";\n')
    far = time.monotonic() + 60
    found, nothing = tree_runner.predict([request(prefix), in_string], [far, far], Options(k=3))
    assert found and found[0][0] == b"al"  # "total" is the only name in reach starting with "tot"
    assert nothing == []


def test_tree_runner_windows_the_document_at_line_boundaries():
    runner = TreeLSTMRunner(completer=None, window_bytes=16)
    before, after = runner._window(b"line one\nline two\nline three", b" end\nmore\nand more\nlast")
    assert before == b"line three"  # cut to the last 16 bytes, then to the next line start
    assert after == b" end\n"  # cut to 8 bytes, then back to a line end
    assert runner._window(b"short", b"tail") == (b"short", b"tail")


class FlakyRunner:
    family = "fake"

    def predict(self, requests, deadlines, options):
        if any(r["prefix"] == b"boom" for r in requests):
            raise ValueError("cannot")
        return [[(r["prefix"][::-1], -1.0, True)][: options.k] for r in requests]


def test_container_core_answers_predict_and_reports_errors():
    core = ContainerCore(FlakyRunner(), "m", "v1")
    hello = protocol.unpack(core.hello())
    assert (hello["type"], hello["model"], hello["family"], hello["version"]) == ("hello", "m", "fake", "v1")
    frame = protocol.pack(protocol.PREDICT, batch=7, requests=[request(b"ab") | {"budget_ms": 50.0}], options={"k": 1})
    result = protocol.unpack(core.handle(frame, time.monotonic()))
    assert result["type"] == "result" and result["batch"] == 7 and result["results"] == [[[b"ba", -1.0, True]]]
    assert result["cut_short"] == [False]
    boom = protocol.pack(protocol.PREDICT, batch=8, requests=[request(b"boom") | {"budget_ms": 50.0}], options={})
    failed = protocol.unpack(core.handle(boom, time.monotonic()))
    assert failed["type"] == "error" and failed["batch"] == 8 and "ValueError: cannot" in failed["message"]
    garbage = protocol.unpack(core.handle(b"\x00garbage", time.monotonic()))
    assert garbage["type"] == "error" and garbage["batch"] is None
    assert core.handle(protocol.pack(protocol.SHUTDOWN), time.monotonic()) is None
