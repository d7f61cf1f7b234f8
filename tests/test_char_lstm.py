"""Char-LSTM network and completer: incremental state, batching, beam search, deadlines, checkpoints."""

import time

import numpy as np
import pytest
import torch

from codecomp.data.char_vocab import EOF_ID, VOCAB_SIZE, encode_document
from codecomp.inference import CheckpointError, CompletionOptions, CompletionRequest
from codecomp.inference.char_lstm import CharLSTMCompleter
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig

PREFIX = b"function add(a, b) {\n  return a"


@pytest.fixture
def completer():
    torch.manual_seed(0)
    return CharLSTMCompleter(CharLSTM(CharLSTMConfig(embed_dim=16, hidden=32, layers=2)))


def test_forward_shapes():
    model = CharLSTM(CharLSTMConfig(embed_dim=8, hidden=16, layers=2))
    logits, (h, c) = model(torch.zeros(3, 5, dtype=torch.long))
    assert logits.shape == (3, 5, VOCAB_SIZE) and h.shape == c.shape == (2, 3, 16)


def test_fused_step_matches_the_lstm():
    torch.manual_seed(0)
    model = CharLSTM(CharLSTMConfig(embed_dim=8, hidden=16, layers=2)).eval()
    tokens = torch.tensor([[258, 5, 9], [259, 7, 1]])
    log_probs, state = model.encode(tokens[:, :2], torch.tensor([2, 2]))
    torch.testing.assert_close(log_probs, torch.log_softmax(model(tokens[:, :2])[0][:, -1], -1))
    stepped, (h, c) = model.step(tokens[:, 2], state)
    logits, (h_ref, c_ref) = model(tokens)
    torch.testing.assert_close(stepped, torch.log_softmax(logits[:, -1], -1), atol=1e-5, rtol=0)
    torch.testing.assert_close((h, c), (h_ref, c_ref), atol=1e-5, rtol=0)


def test_incremental_state_equals_encoding_from_scratch(completer):
    state = completer.encode([PREFIX], ["javascript"])[0]
    advanced = completer.advance(completer.advance(state, b" +"), b" b")
    fresh = completer.encode([PREFIX + b" + b"], ["javascript"])[0]
    assert advanced.length == fresh.length == len(PREFIX) + 4
    torch.testing.assert_close(advanced.log_probs, fresh.log_probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(advanced.h, fresh.h, atol=1e-5, rtol=0)
    torch.testing.assert_close(advanced.c, fresh.c, atol=1e-5, rtol=0)


def test_batched_advance_matches_encoding_from_scratch(completer):
    prefixes = [PREFIX, b"int main() {", b"x"]
    languages = ["javascript", "cpp", "javascript"]
    texts = [b" + b", b"", b"yz = 1;\n"]  # different lengths, one empty
    advanced = completer.advance_many(completer.encode(prefixes, languages), texts)
    for prefix, text, language, state in zip(prefixes, texts, languages, advanced, strict=True):
        fresh = completer.encode([prefix + text], [language])[0]
        assert state.length == fresh.length
        torch.testing.assert_close(state.log_probs, fresh.log_probs, atol=1e-5, rtol=0)
        torch.testing.assert_close(state.h, fresh.h, atol=1e-5, rtol=0)


def test_batched_encoding_matches_one_at_a_time(completer):
    prefixes = [b"x", PREFIX, b"int main() {", b"a" * 300]
    languages = ["javascript", "javascript", "cpp", "cpp"]
    batched = completer.encode(prefixes, languages)
    for prefix, language, state in zip(prefixes, languages, batched, strict=True):
        alone = completer.encode([prefix], [language])[0]
        torch.testing.assert_close(state.log_probs, alone.log_probs, atol=1e-5, rtol=0)


def test_long_prefix_keeps_only_its_tail(completer):
    completer.max_context = 16
    one, other = completer.encode(
        [b"// one header\n" * 9 + PREFIX, b"/* another */\n" * 5 + PREFIX], ["javascript"] * 2
    )
    torch.testing.assert_close(one.log_probs, other.log_probs)  # only the last 16 bytes were read
    assert one.length == len(PREFIX) + 14 * 9


def test_beam_search_bounds_and_order(completer):
    requests = [CompletionRequest(PREFIX, b"", "javascript"), CompletionRequest(b"int x = ", b"", "cpp")]
    results = completer.complete(requests, CompletionOptions(k=3, beam=4, max_chars=5))
    assert len(results) == 2
    for candidates in results:
        assert 1 <= len(candidates) <= 3
        assert all(len(c.text) <= 5 and b"\n" not in c.text for c in candidates)
        scores = [c.log_prob for c in candidates]
        assert scores == sorted(scores, reverse=True)
        assert len({c.text for c in candidates}) == len(candidates)
    assert completer.complete([], CompletionOptions(k=1)) == []
    with pytest.raises(ValueError):
        CompletionOptions(k=0)


def reference_beam_search(completer, request, k, beam_size, max_chars):
    """The same search one hypothesis at a time, with `advance` in plain Python: what `complete` batches."""
    state = completer.encode([request.prefix], [request.language])[0]
    live, finished = [(b"", 0.0, state)], []
    for _ in range(max_chars):
        expansions = sorted(
            ((score + float(hyp.log_probs[symbol]), text, symbol, hyp) for text, score, hyp in live
             for symbol in range(EOF_ID + 1)), key=lambda e: -e[0],
        )[: 2 * beam_size]  # fmt: skip
        kept = []
        for score, text, symbol, hyp in expansions:
            if symbol in (ord("\n"), EOF_ID):
                finished.append((text, score, True))
            elif len(kept) < beam_size:
                kept.append((text + bytes([symbol]), score, completer.advance(hyp, bytes([symbol]))))
        done = sorted((s for _, s, _ in finished), reverse=True)
        live = kept
        if len(done) >= k and done[k - 1] >= max(s for _, s, _ in kept):
            live = []
        if not live:
            break
    finished += [(text, score, False) for text, score, _ in live]
    best, seen = [], set()
    for text, score, complete in sorted(finished, key=lambda f: -f[1]):
        if text not in seen:
            seen.add(text)
            best.append((text, score, complete))
    return best[:k]


def test_batched_beam_search_matches_the_reference(completer):
    requests = [CompletionRequest(PREFIX, b"", "javascript"), CompletionRequest(b"int x = ", b"", "cpp"),
                CompletionRequest(b"x", b"", "javascript")]  # fmt: skip
    for k, beam_size, max_chars in [(3, 4, 6), (1, 1, 5), (2, 3, 4)]:
        results = completer.complete(requests, CompletionOptions(k, beam_size, max_chars))
        for request, candidates in zip(requests, results, strict=True):
            expected = reference_beam_search(completer, request, k, beam_size, max_chars)
            assert [(c.text, c.complete) for c in candidates] == [(t, f) for t, _, f in expected]
            np.testing.assert_allclose([c.log_prob for c in candidates], [s for _, s, _ in expected], atol=1e-4)


def test_past_deadline_returns_partial_answers(completer):
    requests = [CompletionRequest(PREFIX, b"", "javascript")] * 4
    results = completer.complete(requests, CompletionOptions(k=2, max_chars=80), [time.monotonic() - 1] * 4)
    # No decoding step fits before a deadline already passed: the best so far is the empty line.
    assert [[(c.text, c.complete) for c in candidates] for candidates in results] == [[(b"", False)]] * 4


def test_each_request_stops_at_its_own_deadline(completer):
    requests = [CompletionRequest(PREFIX, b"", "javascript"), CompletionRequest(b"int x = ", b"", "cpp")]
    options = CompletionOptions(k=2, max_chars=6)
    late, on_time = completer.complete(requests, options, [time.monotonic() - 1, time.monotonic() + 60])
    assert [(c.text, c.complete) for c in late] == [(b"", False)]  # stopped before its first character
    alone = completer.complete(requests[1:], options)[0]
    assert [(c.text, c.complete) for c in on_time] == [(c.text, c.complete) for c in alone]  # the other went on


def test_learns_and_completes_a_line():
    torch.manual_seed(0)
    model = CharLSTM(CharLSTMConfig(embed_dim=16, hidden=64, layers=1, dropout=0.0))
    line = b"console.log(hello);\n"
    tokens = torch.from_numpy(encode_document(line * 8, "javascript"))[None]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        logits, _ = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits[0], tokens[0, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    completer = CharLSTMCompleter(model)
    [candidates] = completer.complete(
        [CompletionRequest(line * 3 + b"console.l", b"", "javascript")], CompletionOptions(k=1)
    )
    assert candidates[0].text == b"og(hello);" and candidates[0].complete


def test_score_matches_the_forward_pass(completer):
    documents = [b"let a = 1;\n", b"int main() { return 0; }\n" * 3, b"x"]
    scored = completer.score(documents, "javascript", batch_size=2, chunk=7)
    for document, (bits, correct) in zip(documents, scored, strict=True):
        tokens = torch.from_numpy(encode_document(document, "javascript"))[None]
        log_probs = torch.log_softmax(completer.model(tokens[:, :-2])[0][0], -1)  # predicts every byte
        expected = -log_probs.gather(-1, tokens[0, 1:-1, None])[:, 0] / np.log(2)
        assert bits.shape == (len(document),) and correct.shape == (len(document),)
        np.testing.assert_allclose(bits, expected.detach().numpy(), atol=1e-4)
        assert (correct == (log_probs.argmax(-1) == tokens[0, 1:-1]).numpy()).all()
    assert EOF_ID not in encode_document(b"ab", "cpp")[:-1]


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        CharLSTMCompleter.from_checkpoint(tmp_path / "missing.ckpt")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="damaged"):
        CharLSTMCompleter.from_checkpoint(garbage)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a codecomp checkpoint"):
        CharLSTMCompleter.from_checkpoint(foreign)
    other = tmp_path / "other.ckpt"
    torch.save({"codecomp": {"family": "tree_lstm"}}, other)
    with pytest.raises(CheckpointError, match="holds a 'tree_lstm' model, not 'char_lstm'"):
        CharLSTMCompleter.from_checkpoint(other)


def test_score_cuts_long_files_into_pieces_read_after_their_context(completer):
    document = bytes(range(32, 127)) * 3  # 285 bytes: pieces of 100 bytes, each after 20 bytes of context
    short_context = CharLSTMCompleter(completer.model, max_context=20)
    pieced = short_context.score([document, b"ab"], "cpp", batch_size=3, chunk=16, piece_bytes=100)
    whole = completer.score([document, b"ab"], "cpp")
    assert pieced[0][0].shape == (len(document),) and pieced[1][0].shape == (2,)
    np.testing.assert_allclose(pieced[0][0][:100], whole[0][0][:100], atol=1e-4)  # the first piece: from the file start
    np.testing.assert_allclose(pieced[1][0], whole[1][0], atol=1e-4)
    for start in (100, 200):  # the later ones: as the completer reads a prefix longer than max_context
        tokens = torch.frombuffer(bytearray(document[start - 20 : start + 100]), dtype=torch.uint8).long()[None]
        log_probs = torch.log_softmax(completer.model(tokens[:, :-1])[0][0], -1)
        expected = -log_probs.gather(-1, tokens[0, 1:, None])[:, 0] / np.log(2)
        end = min(start + 100, len(document))
        np.testing.assert_allclose(pieced[0][0][start:end], expected[19:].detach().numpy(), atol=1e-4)
    seen: list[int] = []
    completer.score([document, b"ab"], "cpp", piece_bytes=100, progress=seen.append)
    assert sum(seen) == len(document) + 2  # progress counts every byte scored once
