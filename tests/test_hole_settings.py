"""Hole settings: editor-like and prefix holes built from a file (C++ and JavaScript), the training mix and its
loss, and the context a completer serves for the settings its model learnt."""

from typing import Any

import numpy as np
import pytest
import torch

from codecomp import checkpoint
from codecomp.data.hole_settings import (
    PLACEHOLDER,
    SETTINGS,
    HoleSettings,
    cursor_text,
    is_member_access,
    parse_at_cursor,
    sample_partial,
    statement_end,
)
from codecomp.data.holes import (
    DEFAULT_TARGET_KINDS,
    collate_holes,
    cursor_example,
    make_holes,
    sample_examples,
    target_leaves,
)
from codecomp.data.tree_datamodule import TreeHoleDataModule
from codecomp.data.tree_vocab import TreeVocab
from codecomp.data.vocab import KIND_SPECIALS, VALUE_SPECIALS, Vocabulary
from codecomp.inference.completer import CompletionOptions, CompletionRequest
from codecomp.inference.families import load_completer
from codecomp.inference.tree_lstm import HoleRequest, TreeLSTMCompleter
from codecomp.models.components.hole_head import target_probability
from codecomp.models.components.hole_model import HoleModel
from codecomp.models.tree_lstm_module import TreeLSTMModule
from codecomp.parsing import kind_names, parse

CPP = b"""#include <vector>
int total(const std::vector<int>& values, Node* node) {
  int sum = 0;
  for (int i = 0; i < 3; ++i) {
    sum += values.size() + node->count;
  }
  return std::max(sum, 0);
}
"""
JS = b"""function weigh(items, scale) {
  let total = 0;
  for (const item of items) {
    total += item.weight * scale;
  }
  return total;
}
"""


def leaf(tree, text, nth=0):
    """The nth target leaf whose text is `text`."""
    return [int(n) for n in target_leaves(tree, DEFAULT_TARGET_KINDS) if tree.value(int(n)) == text][nth]


def kind_of(tree, node):
    return kind_names(tree.language)[int(tree.kinds[node])]


def made(example):
    assert example is not None, "the placeholder did not parse as an identifier"
    return example


@pytest.mark.parametrize(
    ("target", "nth", "typed_text", "access"),
    [("size", 0, b"    sum += values.", True),  # `values.` in a loop: the rest of the statement goes
     ("count", 0, b"    sum += values.size() + node->", True),
     ("max", 0, b"  return std::", True),
     ("sum", 0, b"  int ", False)],
)  # fmt: skip
def test_cpp_editor_holes_cut_the_rest_of_the_statement_and_keep_the_code_after(target, nth, typed_text, access):
    tree = parse(CPP, "cpp")
    node = leaf(tree, target, nth)
    start = int(tree.starts[node])
    text, cursor = cursor_text(CPP, start, "editor", statement_end(tree, node))
    assert text[:cursor].endswith(typed_text)
    line_end = CPP.index(b"\n", start)
    assert text[cursor:] == CPP[line_end:]  # these statements end their line: the code after is all kept
    assert is_member_access(CPP, start) == access
    example = made(cursor_example(tree, CPP, node, "editor"))
    assert example.setting == "editor" and example.targets == (target,)
    hole = int(example.holes[0])
    assert example.tree.value(hole) is None  # hidden from the model
    assert int(example.tree.starts[hole]) == start  # the placeholder at the cursor
    assert kind_of(example.tree, hole) == kind_of(tree, node)  # `field_identifier` after `.`, `->`
    assert example.tree.error_bytes == 0  # the statement closed at the cursor: a tree like finished code's


def test_a_hole_in_a_loop_header_cuts_the_whole_loop():
    tree = parse(CPP, "cpp")
    node = leaf(tree, "i", 1)  # `i < 3`
    text, cursor = cursor_text(CPP, int(tree.starts[node]), "editor", statement_end(tree, node))
    assert text[:cursor].endswith(b"for (int i = 0; ") and text[cursor:].startswith(b"\n  return std::max")
    # As typed, the open `for (` swallows the code after it into ERROR; closed (`for (int i = 0; X);`), none.
    assert parse_at_cursor(text[:cursor], text[cursor:], "cpp")[0].error_bytes > 0
    assert parse_at_cursor(text[:cursor], text[cursor:], "cpp", cut=True)[0].error_bytes == 0


def test_javascript_editor_hole_with_a_partial_identifier():
    tree = parse(JS, "javascript")
    node = leaf(tree, "weight")
    start = int(tree.starts[node])
    text, cursor = cursor_text(JS, start, "editor", statement_end(tree, node), partial=b"we")
    assert text[:cursor].endswith(b"total += item.we") and text[cursor:] == b"\n  }\n  return total;\n}\n"
    example = made(cursor_example(tree, JS, node, "editor", partial=b"we"))
    assert example.partials == (b"we",) and example.targets == ("weight",)
    assert kind_of(example.tree, int(example.holes[0])) == "property_identifier"
    # The completer reads the same text as the same tree: what is typed is replaced by the placeholder.
    vocab = tiny_vocab()
    completer = TreeLSTMCompleter(HoleModel(len(vocab.kinds), len(vocab.values), 8, 8, 8, False), vocab,
                                  DEFAULT_TARGET_KINDS)  # fmt: skip
    served, partial = completer.hole_example(HoleRequest(text, cursor, "javascript", cut=True))
    assert partial == b"we"
    np.testing.assert_array_equal(served.tree.kinds, example.tree.kinds)
    assert served.holes.tolist() == example.holes.tolist()


def test_prefix_holes_and_partials():
    tree = parse(JS, "javascript")
    node = leaf(tree, "scale", 1)
    text, cursor = cursor_text(JS, int(tree.starts[node]), "prefix", 0, partial=b"sc")
    assert text.endswith(b"total += item.weight * sc") and cursor == len(text)
    example = made(cursor_example(tree, JS, node, "prefix", window_bytes=40))
    assert example.tree.n_bytes <= 40 + len(PLACEHOLDER + b";")  # whole lines within the window, then closed
    rng = np.random.default_rng(0)
    partials = [sample_partial("weight", 1.0, rng) for _ in range(50)]
    assert {len(p) for p in partials} == {1, 2, 3, 4, 5} and all(b"weight".startswith(p) for p in partials)
    assert sample_partial("weight", 0.0, rng) == b"" and sample_partial("i", 1.0, rng) == b""
    assert not is_member_access(b"f(...args", 6)


def test_settings_are_checked_normalised_and_drawn_by_share():
    settings = HoleSettings.create({"whole_file": 2, "editor": 2, "prefix": 0}, 0.5, 1024)
    assert settings.shares == {"whole_file": 0.5, "editor": 0.5} and settings.served_context == "editor"
    assert HoleSettings.from_json(settings.to_json()) == settings
    assert HoleSettings.from_json(None).served_context == "whole_file"  # checkpoints from before
    assert HoleSettings.create({"prefix": 1}).served_context == "prefix"
    with pytest.raises(ValueError, match="unknown hole settings"):
        HoleSettings.create({"editr": 1})
    with pytest.raises(ValueError, match="positive sum"):
        HoleSettings.create({"editor": 0})
    rng = np.random.default_rng(0)
    draws = [settings.draw(rng) for _ in range(400)]
    assert 150 < draws.count("editor") < 250 and set(draws) == {"whole_file", "editor"}
    tree = parse(CPP, "cpp")
    editor = HoleSettings.create({"editor": 1})
    [example] = sample_examples(tree, CPP, editor, DEFAULT_TARGET_KINDS, 0.15, 32, rng)
    assert example.setting == "editor" and len(example.holes) == 1
    [example] = sample_examples(tree, None, editor, DEFAULT_TARGET_KINDS, 0.15, 32, rng)
    assert example.setting == "whole_file"  # no text at hand: the holes of the tree itself
    several = sample_examples(tree, CPP, editor, DEFAULT_TARGET_KINDS, 0.15, 32, rng, cursor_holes=4)
    assert len(several) == 4 and all(e.setting == "editor" and len(e.holes) == 1 for e in several)
    assert len({int(e.tree.starts[int(e.holes[0])]) for e in several}) == 4  # distinct cursors


def test_the_datamodule_mixes_settings_and_the_loss_weighs_them_by_share(fixture_corpus):
    shares = {"whole_file": 0.5, "editor": 0.3, "prefix": 0.2}
    datamodule = TreeHoleDataModule(fixture_corpus, node_budget=400, hole_settings=shares, partial_rate=0.5,
                                    hole_window_bytes=1024)  # fmt: skip
    datamodule.setup()
    dataset = datamodule.datasets["train"]
    examples = [example for i in range(len(dataset)) for example in dataset[i]]
    settings = {example.setting for example in examples}
    assert settings == {"whole_file", "editor", "prefix"}, settings
    assert all(len(e.holes) == 1 for e in examples if e.setting != "whole_file")
    batch = collate_holes(examples, datamodule.vocab, DEFAULT_TARGET_KINDS)
    assert len(batch.partials) == len(batch.targets) == len(batch.hole_setting)
    assert any(batch.partials) and all(
        t.encode().startswith(p) for t, p in zip(batch.targets, batch.partials, strict=True)
    )

    module = TreeLSTMModule(
        str(fixture_corpus), hidden=8, embed_dim=8, pointer_dim=8, hole_settings=shares, partial_rate=0.5
    )
    loss, scores = module.model_step(batch)
    probability, reachable = target_probability(scores, batch.target_ids, batch.pair_hole, batch.pair_match,
                                                module.vocab.values.unk_id)  # fmt: skip
    nll = -torch.log(probability)
    means = {name: nll[reachable & (batch.hole_setting == SETTINGS.index(name))].mean() for name in shares}
    expected = sum(shares[name] * means[name] for name in shares) / sum(shares.values())
    torch.testing.assert_close(loss, expected)
    saved: dict[str, Any] = {}
    module.on_save_checkpoint(saved)
    assert saved["codecomp"]["hole_settings"] == {"shares": shares, "partial_rate": 0.5, "window_bytes": None}


def test_several_cursor_holes_per_file_reach_the_batches(fixture_corpus):
    shares = {"whole_file": 0.5, "editor": 0.5}
    one, four = (TreeHoleDataModule(fixture_corpus, node_budget=400, hole_settings=shares, hole_window_bytes=1024,
                                    cursor_holes=k) for k in (1, 4))  # fmt: skip
    for datamodule in (one, four):
        datamodule.setup()
    editor_holes = []
    for datamodule in (one, four):
        batches = list(datamodule.train_dataloader())
        editor_holes.append(sum(int((b.hole_setting == SETTINGS.index("editor")).sum()) for b in batches))
    assert editor_holes[1] > 2 * editor_holes[0] > 0
    assert four.datasets["train"].sizes.sum() > one.datasets["train"].sizes.sum()  # batches planned for them


def tiny_vocab():
    values = Vocabulary.from_counts({"values": 5, "size": 4, "push_back": 3}, 100, specials=VALUE_SPECIALS)
    kinds = Vocabulary.from_counts({"cpp/identifier": 1, "javascript/identifier": 1}, 100, specials=KIND_SPECIALS)
    return TreeVocab(kinds, values)


def tiny_tree_checkpoint(path, **extra):
    vocab = tiny_vocab()
    config: dict[str, Any] = {"embed_dim": 8, "hidden": 8, "pointer_dim": 8, "upward_only": False}
    network = HoleModel(len(vocab.kinds), len(vocab.values), **config)
    saved = {"state_dict": {f"model.{k}": v for k, v in network.state_dict().items()}}
    checkpoint.describe(
        saved, "tree_lstm", config, ["cpp"], vocab.to_json(), target_kinds=DEFAULT_TARGET_KINDS, **extra
    )
    torch.save(saved, path)
    return path


def test_an_editor_trained_model_is_served_the_statement_cut_and_the_code_after(tmp_path):
    settings = HoleSettings.create({"whole_file": 0.5, "editor": 0.5}, 0.5, 1024)
    path = tiny_tree_checkpoint(tmp_path / "editor.ckpt", hole_settings=settings.to_json())
    assert isinstance(load_completer(path), TreeLSTMCompleter)  # the family registry's way in
    completer = TreeLSTMCompleter.from_checkpoint(path)
    assert (completer.context, completer.window_bytes) == ("editor", 1024)  # the context and window it learnt
    assert TreeLSTMCompleter.from_checkpoint(path, window_bytes=None).window_bytes is None
    whole = TreeLSTMCompleter.from_checkpoint(path, context="whole_file")
    assert (whole.context, whole.window_bytes) == ("whole_file", None)

    prefix = b"int f(std::vector<int> values) {\n  int n = 0;\n  for (int v : values) {\n    n += values."
    edited = b"size();\n  }\n  return n;\n}\n"  # a member being replaced mid-line: the rest of its statement goes
    assert completer.served_suffix(prefix + b"si", b"ze();\n  }\n", "cpp") == b"\n  }\n"
    assert completer.served_suffix(prefix, edited, "cpp") == b"\n  }\n  return n;\n}\n"
    assert completer.served_suffix(prefix, b"\n  }\n", "cpp") == b"\n  }\n"  # at a line's end: nothing to cut
    assert completer.served_suffix(prefix, b"); g(x);\n", "cpp") == b" g(x);\n"  # the next statement stays
    completer.context = "prefix"
    assert completer.served_suffix(prefix, edited, "cpp") == b""
    completer.context = "whole_file"
    assert completer.served_suffix(prefix, edited, "cpp") == edited
    completer.context = "editor"
    [candidates] = completer.complete([CompletionRequest(prefix, edited, "cpp")], CompletionOptions(k=10))
    assert b"values" in [c.text for c in candidates]  # the name in the file, copied by the pointer
    example, _ = completer.hole_example(HoleRequest(prefix + b"\n  }\n  return n;\n}\n", len(prefix), "cpp"))
    assert kind_of(example.tree, int(example.holes[0])) == "field_identifier"


def test_a_checkpoint_without_hole_settings_is_served_the_whole_file(tmp_path):
    path = tiny_tree_checkpoint(tmp_path / "old.ckpt")
    assert TreeLSTMCompleter.from_checkpoint(path).context == "whole_file"
    with pytest.raises(ValueError, match="unknown context"):
        TreeLSTMCompleter.from_checkpoint(path, context="suffix")


def test_make_holes_keeps_given_targets():
    tree = parse(b"var x = y;", "javascript")
    example = make_holes(tree, np.array([leaf(tree, "y")]), ("z",), "editor", (b"",))
    assert example.targets == ("z",) and example.setting == "editor"
