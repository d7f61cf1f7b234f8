"""Hole prediction: vocabularies, holes and pointer pairs, the completer at a cursor, and learning to copy."""

import numpy as np
import pytest
import torch

from codecomp.data.holes import DEFAULT_TARGET_KINDS, collate_holes, make_holes, sample_holes, target_leaves
from codecomp.data.tree_vocab import TreeVocab
from codecomp.data.vocab import KIND_SPECIALS, VALUE_SPECIALS, Vocabulary
from codecomp.inference.completer import CompletionOptions, CompletionRequest
from codecomp.inference.tree_lstm import HoleRequest, TreeLSTMCompleter, window
from codecomp.models.components.hole_head import target_probability
from codecomp.models.components.hole_model import HoleModel, rank_holes
from codecomp.parsing import parse


@pytest.fixture(scope="module")
def vocab():
    values = Vocabulary.from_counts({"use": 5, "print": 4, "1": 3, "x": 2}, 100, specials=VALUE_SPECIALS)
    kinds = Vocabulary.from_counts(
        {f"javascript/{k}": 1 for k in ("program", "expression_statement", "identifier", "call_expression",
                                         "arguments", "number", "variable_declaration", "variable_declarator")},
        100, specials=KIND_SPECIALS,
    )  # fmt: skip
    return TreeVocab(kinds, values)


def holes_at(tree, texts):
    leaves = target_leaves(tree, DEFAULT_TARGET_KINDS)
    return np.array([leaf for leaf in leaves if tree.value(int(leaf)) in texts])


def test_vocabulary_merges_languages(fixture_corpus):
    vocab = TreeVocab.from_corpus(fixture_corpus, ["cpp", "javascript"])
    assert "javascript/identifier" in vocab.kinds and "cpp/identifier" in vocab.kinds
    assert "alphaAlpha" in vocab.values and "zzUniqueTestNameAlpha" not in vocab.values  # train split only
    assert TreeVocab.from_json(vocab.to_json()).value_words == vocab.value_words


def test_encode_hides_holes_and_non_values(vocab):
    tree = parse(b"var x = 1; use(x); // note", "javascript")
    example = make_holes(tree, holes_at(tree, {"use"}))
    kinds, values = vocab.encode(example.tree)
    words = [vocab.value_words[v] for v in values]
    assert example.targets == ("use",)
    assert words[int(example.holes[0])] == "[HOLE]"
    assert "use" not in words and words.count("x") == 2 and "1" in words
    assert words[0] == "[EMPTY]"  # inner nodes, keywords and the comment carry no value
    assert kinds[0] == vocab.kinds.id("javascript/program")


def test_sampled_holes_are_target_leaves_and_reproducible():
    tree = parse(b"function f(a, b) { return a.length + b.size + c; }", "javascript")
    one = sample_holes(tree, DEFAULT_TARGET_KINDS, 0.5, 10, np.random.default_rng(3))
    two = sample_holes(tree, DEFAULT_TARGET_KINDS, 0.5, 10, np.random.default_rng(3))
    assert one.holes.tolist() == two.holes.tolist() and len(one.holes) == 4  # half of the 8 target leaves
    assert set(one.targets) <= {"f", "a", "b", "length", "size", "c"}
    assert all(one.tree.value(int(h)) is None for h in one.holes)


def test_pointer_pairs_match_the_hidden_text(vocab):
    tree = parse(b"var zeta = 1; print(zeta, omega);", "javascript")
    second_zeta = holes_at(tree, {"zeta"})[1:]
    batch = collate_holes([make_holes(tree, second_zeta)], vocab, DEFAULT_TARGET_KINDS)
    assert batch.targets == ["zeta"] and batch.target_ids.tolist() == [vocab.values.unk_id]
    assert batch.occurrence_texts == ["zeta", "print", "omega"]
    assert batch.pair_match.tolist() == [True, False, False]
    scores = HoleModel(len(vocab.kinds), len(vocab.values), 8, 8, 8, False)(batch)
    probability, reachable = target_probability(
        scores, batch.target_ids, batch.pair_hole, batch.pair_match, vocab.values.unk_id
    )
    assert reachable.all() and (probability > 0).all()  # out of the vocabulary, but copyable
    unreachable = collate_holes([make_holes(tree, holes_at(tree, {"omega"}))], vocab, DEFAULT_TARGET_KINDS)
    scores = HoleModel(len(vocab.kinds), len(vocab.values), 8, 8, 8, False)(unreachable)
    probability, reachable = target_probability(
        scores, unreachable.target_ids, unreachable.pair_hole, unreachable.pair_match, vocab.values.unk_id
    )
    assert not reachable.any() and (probability == 0).all()


def test_words_by_prefix(vocab):
    for prefix in ("", "p", "pr", "print", "printx", "u", "1", "z"):
        expected = sorted(i for i, word in enumerate(vocab.value_words) if word.startswith(prefix))
        assert sorted(vocab.ids_starting_with(prefix)) == expected
    assert vocab.ids_starting_with("pr") == [vocab.values.id("print")]


def test_completer_places_the_hole_at_the_cursor(vocab):
    completer = TreeLSTMCompleter(HoleModel(len(vocab.kinds), len(vocab.values), 8, 8, 8, False), vocab,
                                  DEFAULT_TARGET_KINDS)  # fmt: skip
    document = b"var counter = 1;\nprint(cou"
    example, partial = completer.hole_example(HoleRequest(document, len(document), "javascript"))
    assert partial == b"cou" and example.tree.value(int(example.holes[0])) is None
    middle = b"var counter = 1;\nprint(counter);"
    example, partial = completer.hole_example(HoleRequest(middle, middle.index(b"nter);"), "javascript"))
    assert partial == b"cou"  # the rest of the word under the cursor is replaced too
    [candidates] = completer.complete_holes([HoleRequest(document, len(document), "javascript")], k=5)
    assert candidates and all(c.text.startswith(b"cou") for c in candidates)
    assert [c.text for c in candidates] == [b"counter"]  # the only name in reach starting with "cou"
    with pytest.raises(ValueError, match="outside the document"):
        completer.hole_example(HoleRequest(document, len(document) + 1, "javascript"))
    with pytest.raises(ValueError, match="identifier"):
        completer.hole_example(HoleRequest(b'var s = "in a string', 15, "javascript"))


FILE = b"function add(a, b) {\n  return a + b;\n}\nconst total = add(1, 2);\n"


def test_complete_offers_the_rest_of_the_token_and_nothing_inside_strings(vocab):
    completer = TreeLSTMCompleter(HoleModel(len(vocab.kinds), len(vocab.values), 8, 8, 8, False), vocab,
                                  DEFAULT_TARGET_KINDS, window_bytes=4096)  # fmt: skip
    requests = [CompletionRequest(FILE + b"print(tot", b")", "javascript"),
                CompletionRequest(b'const s = "in a', b' string";\n', "javascript"),
                CompletionRequest(FILE + b"print(total", b"", "javascript")]  # fmt: skip
    found, in_string, typed = completer.complete(requests, CompletionOptions(k=3))
    assert [(c.text, c.complete) for c in found] == [(b"al", True)]  # "total": the only name in reach with "tot"
    assert in_string == []
    assert typed == []  # all of "total" is typed: nothing left to insert


def test_the_window_is_whole_lines_around_the_cursor(vocab):
    before, after = window(b"line one\nline two\nline three", b" end\nmore\nand more\nlast", 16)
    assert before == b"line three"  # cut to the last 16 bytes, then to the next line start
    assert after == b" end\n"  # cut to 8 bytes, then back to a line end
    assert window(b"short", b"tail", 16) == (b"short", b"tail")
    completer = TreeLSTMCompleter(HoleModel(len(vocab.kinds), len(vocab.values), 8, 8, 8, False), vocab,
                                  DEFAULT_TARGET_KINDS, window_bytes=24)  # fmt: skip
    far = b"var counter = 1;\n" + b"// padding\n" * 4 + b"print(cou"  # the declaration is out of the window
    example, partial = completer.hole_example(HoleRequest(far, len(far), "javascript"))
    assert partial == b"cou" and "counter" not in [example.tree.value(i) for i in range(len(example.tree))]
    request = CompletionRequest(far, b"", "javascript")
    assert completer.complete([request], CompletionOptions(k=3)) == [[]]
    completer.window_bytes = None  # the whole document: the declaration is in reach again
    assert [c.text for c in completer.complete([request], CompletionOptions(k=3))[0]] == [b"nter"]


def test_learns_to_copy_names_it_has_never_seen():
    """Unseen names (all out of the vocabulary) can only be predicted by the pointer."""
    rng = np.random.default_rng(0)
    values = Vocabulary.from_counts({"print": 10}, 100, specials=VALUE_SPECIALS)
    names = ["program", "expression_statement", "identifier", "call_expression", "arguments", "number",
             "variable_declaration", "variable_declarator", "var", "=", ";", "(", ")", ","]  # fmt: skip
    kinds = Vocabulary.from_counts({f"javascript/{k}": 1 for k in names}, 100, specials=KIND_SPECIALS)
    vocab = TreeVocab(kinds, values)

    def example():
        a, b = ("n" + "".join(rng.choice(list("abcdefgh"), 6)) for _ in range(2))
        tree = parse(f"var {a} = 1; var {b} = 2; print({a});".encode(), "javascript")
        return make_holes(tree, holes_at(tree, {a})[1:])  # the use of `a`, after both declarations

    torch.manual_seed(0)
    model = HoleModel(len(kinds), len(values), 16, 32, 32, False)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(60):
        batch = collate_holes([example() for _ in range(16)], vocab, DEFAULT_TARGET_KINDS)
        scores = model(batch)
        probability, _ = target_probability(scores, batch.target_ids, batch.pair_hole, batch.pair_match, values.unk_id)
        loss = -torch.log(probability).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    batch = collate_holes([example() for _ in range(50)], vocab, DEFAULT_TARGET_KINDS)
    with torch.no_grad():
        ranked = rank_holes(model.eval()(batch), batch, vocab, k=1)
    accuracy = np.mean([c[0][0] == t for c, t in zip(ranked, batch.targets, strict=True)])
    assert accuracy > 0.9  # chance is 1/2 (the two declared names; `print` is in the vocabulary)
