"""Model containers without sockets: the prefix-state cache and the runner (the message core: test_serve_protocol)."""

import time

import numpy as np
import pytest
import torch

from codecomp.data.holes import DEFAULT_TARGET_KINDS
from codecomp.data.tree_vocab import TreeVocab
from codecomp.data.vocab import KIND_SPECIALS, VALUE_SPECIALS, Vocabulary
from codecomp.inference.char_lstm import CharLSTMCompleter
from codecomp.inference.prefix_states import PrefixStateCache
from codecomp.inference.tree_lstm import TreeLSTMCompleter
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig
from codecomp.models.components.hole_model import HoleModel
from codecomp.serve.container.process import warm_up
from codecomp.serve.container.runners import CompleterRunner, load_runner
from codecomp.serve.protocol import Options, WireCandidate, WireRequest
from tests.test_checkpoint import old_style_char_checkpoint, tree_checkpoint

FILE = b"function add(a, b) {\n  return a + b;\n}\nconst total = add(1, 2);\n"


@pytest.fixture
def char_completer():
    torch.manual_seed(0)
    return CharLSTMCompleter(CharLSTM(CharLSTMConfig(embed_dim=8, hidden=16, layers=2)))


def request(prefix, session="ada\0a.js", language="javascript", suffix=b""):
    return WireRequest(prefix=prefix, suffix=suffix, language=language, session=session, budget_ms=50.0)


def texts(candidates):
    return [c.text for c in candidates]


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
    runner = CompleterRunner(char_completer, "v1")
    options = Options(k=2, beam=2, max_chars=6)
    far = time.monotonic() + 60
    cut = FILE.index(b"return") + 3
    first = runner.predict([request(FILE[:cut])], [far], options)
    typed = runner.predict([request(FILE[: cut + 4]), request(FILE[:cut], session="other")], [far, far], options)
    states = char_completer.prefix_states
    assert states.hits == 1 and states.misses == 2
    again = runner.predict([request(FILE[: cut + 5])], [far], options)  # a batch of warm sessions only
    assert states.hits == 2 and again[0]
    fresh_completer = CharLSTMCompleter(char_completer.model)
    fresh = CompleterRunner(fresh_completer, "v1").predict([request(FILE[: cut + 4])], [far], options)
    assert texts(typed[0]) == texts(fresh[0])
    np.testing.assert_allclose([c.log_prob for c in typed[0]], [c.log_prob for c in fresh[0]], atol=1e-4)
    assert texts(typed[1]) == texts(first[0])
    assert all(isinstance(c, WireCandidate) and len(c.text) <= 6 and b"\n" not in c.text for c in typed[0])
    runner.predict([request(FILE[: cut + 6], session="")], [far], options)  # no session: nothing kept or looked up
    assert (states.hits, states.misses) == (2, 2)


def test_char_runner_stops_at_the_deadline(char_completer):
    runner = CompleterRunner(char_completer, "v1")
    passed, far = time.monotonic() - 1, time.monotonic() + 60
    stopped, finished = runner.predict(
        [request(FILE[:30]), request(FILE[:40], "bo")], [passed, far], Options(k=1, max_chars=8)
    )
    assert stopped == []  # its deadline had passed: stopped before its first character (the empty line is dropped)
    assert finished and len(finished[0].text) <= 8  # the other request decoded on


def test_tree_runner_offers_the_rest_of_the_token_and_nothing_inside_strings():
    torch.manual_seed(0)
    values = Vocabulary.from_counts({"add": 5, "total": 4, "print": 3}, 100, specials=VALUE_SPECIALS)
    kinds = Vocabulary.from_counts(
        {f"javascript/{k}": 1 for k in ("program", "identifier", "call_expression", "arguments", "number")},
        100, specials=KIND_SPECIALS,
    )  # fmt: skip
    vocab = TreeVocab(kinds, values)
    model = HoleModel(len(vocab.kinds), len(vocab.values), 8, 8, 8, False)
    runner = CompleterRunner(TreeLSTMCompleter(model, vocab, DEFAULT_TARGET_KINDS, window_bytes=4096), "v1")
    in_string = request(b'const s = "in a', suffix=b' string";\n')
    far = time.monotonic() + 60
    found, nothing = runner.predict([request(FILE + b"print(tot"), in_string], [far, far], Options(k=3))
    assert found == [WireCandidate(b"al", found[0].log_prob, True)]  # "total": the only name in reach with "tot"
    assert nothing == []


def test_one_runner_serves_both_families_from_their_checkpoints(tmp_path):
    old_style_char_checkpoint(tmp_path / "char.ckpt")
    tree_checkpoint(tmp_path / "tree.ckpt")
    char = load_runner(tmp_path / "char.ckpt", sessions=4, per_session=2, max_context=64)
    tree = load_runner(tmp_path / "tree.ckpt", window_bytes=32)
    assert (char.family, tree.family) == ("char_lstm", "tree_lstm") and char.version != tree.version
    assert char.completer.max_context == 64 and char.completer.prefix_states.per_session == 2
    assert tree.completer.window_bytes == 32
    far = time.monotonic() + 60
    [lines] = char.predict([request(FILE)], [far], Options(k=2, beam=2, max_chars=4))
    assert all(isinstance(c, WireCandidate) and 0 < len(c.text) <= 4 for c in lines)
    far_away = b"var total = 1;\n" + b"// padding\n" * 4  # out of a 32-byte window
    near, outside = tree.predict(
        [request(b"var total = 1;\nprint(tot"), request(far_away + b"print(tot")], [far, far], Options(k=3)
    )
    assert texts(near) == [b"al"] and outside == []
    with pytest.raises(TypeError, match="window_bytes"):
        load_runner(tmp_path / "char.ckpt", window_bytes=32)  # a setting of the other family


def test_the_warm_up_runs_batches_of_growing_size_with_the_models_options_and_leaves_no_session(char_completer):
    runner = CompleterRunner(char_completer, "v1")
    seen = []
    real_predict = runner.predict

    def predict(requests, deadlines, options):
        seen.append((len(requests), {r.language for r in requests}, {r.session for r in requests}, options))
        return real_predict(requests, deadlines, options)

    runner.predict = predict
    options = Options(k=1, beam=2, max_chars=4)
    warm_up(runner, 5, options)
    assert [size for size, *_ in seen] == [1, 2, 4, 5]
    assert seen[-1][1] == {"cpp", "javascript"} and all(s[2] == {""} and s[3] == options for s in seen)
    assert char_completer.prefix_states.hits == char_completer.prefix_states.misses == 0  # no session looked up
