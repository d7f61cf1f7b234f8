"""The checkpoint format and the family registry: schemas, grammar versions, one read per load, clear errors."""

import subprocess
import sys

import pytest
import torch

from codecomp import checkpoint
from codecomp.checkpoint import CheckpointError
from codecomp.data.holes import DEFAULT_TARGET_KINDS
from codecomp.data.tree_vocab import TreeVocab
from codecomp.data.vocab import KIND_SPECIALS, VALUE_SPECIALS, Vocabulary
from codecomp.inference.char_lstm import CharLSTMCompleter
from codecomp.inference.families import FAMILIES, completer_class, load_completer
from codecomp.inference.tree_lstm import TreeLSTMCompleter
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig
from codecomp.models.components.hole_model import HoleModel
from codecomp.parsing import grammar_versions

CHAR_CONFIG = {"embed_dim": 8, "hidden": 16, "layers": 1, "dropout": 0.0, "vocab_size": 260}


def old_style_char_checkpoint(path, **entry):
    """A Char-LSTM checkpoint as codecomp wrote them before the schema number (schema 1)."""
    torch.manual_seed(0)
    network = CharLSTM(CharLSTMConfig(**CHAR_CONFIG))
    description = {"family": "char_lstm", "model_config": CHAR_CONFIG, "languages": ["cpp", "javascript"],
                   "vocab": {"kind": "bytes", "size": 260}, "grammars": grammar_versions(), **entry}  # fmt: skip
    state = {f"model.{k}": v for k, v in network.state_dict().items()}
    torch.save({"state_dict": state, "global_step": 3, "codecomp": description}, path)
    return network


def tree_checkpoint(path):
    """A Tree-LSTM checkpoint written through `describe`, as TreeLSTMModule writes it (schema 2)."""
    values = Vocabulary.from_counts({"add": 5, "print": 4}, 100, specials=VALUE_SPECIALS)
    kinds = Vocabulary.from_counts({"javascript/identifier": 1, "javascript/program": 1}, 100, specials=KIND_SPECIALS)
    vocab = TreeVocab(kinds, values)
    config = {"embed_dim": 8, "hidden": 8, "pointer_dim": 8, "upward_only": False}
    network = HoleModel(len(vocab.kinds), len(vocab.values), **config)
    saved = {"state_dict": {f"model.{k}": v for k, v in network.state_dict().items()}}
    checkpoint.describe(saved, "tree_lstm", config, ["javascript"], vocab.to_json(), target_kinds=DEFAULT_TARGET_KINDS)
    torch.save(saved, path)


def test_an_old_checkpoint_without_a_schema_loads_as_schema_1(tmp_path):
    path = tmp_path / "old.ckpt"
    network = old_style_char_checkpoint(path)
    loaded = checkpoint.load(path)
    assert loaded.description.schema == 1 and loaded.family == "char_lstm"
    assert loaded.description.languages == ("cpp", "javascript") and loaded.description.extra == {}
    assert loaded.state.keys() == network.state_dict().keys()  # the "model." prefix removed
    assert len(loaded.version) == 16 and loaded.version == checkpoint.load(path).version  # a content hash
    completer = load_completer(path)
    assert isinstance(completer, CharLSTMCompleter)
    torch.testing.assert_close(completer.model.state_dict(), network.state_dict())


def test_describe_writes_the_current_schema_and_family_entries(tmp_path):
    path = tmp_path / "tree.ckpt"
    tree_checkpoint(path)
    loaded = checkpoint.load(path)
    assert loaded.description.schema == checkpoint.SCHEMA_VERSION and loaded.family == "tree_lstm"
    assert loaded.description.extra == {"target_kinds": DEFAULT_TARGET_KINDS}
    assert loaded.description.grammars == grammar_versions()
    assert isinstance(load_completer(loaded, window_bytes=512), TreeLSTMCompleter)
    with pytest.raises(ValueError, match="family extras"):
        checkpoint.describe({}, "tree_lstm", {}, [], None, grammars={})
    newer = tmp_path / "newer.ckpt"
    old_style_char_checkpoint(newer, schema=checkpoint.SCHEMA_VERSION + 1)
    with pytest.raises(CheckpointError, match="schema"):
        checkpoint.load(newer)


def test_other_grammar_versions_are_a_clear_error(tmp_path):
    path = tmp_path / "grammar.ckpt"
    old_style_char_checkpoint(path, grammars={**grammar_versions(), "javascript": "0.1.0"})
    with pytest.raises(CheckpointError, match=r"tree-sitter-javascript 0.1.0, but .* pip install"):
        checkpoint.load(path)
    assert checkpoint.load(path, check_grammars=False).family == "char_lstm"
    patched = tmp_path / "patched.ckpt"  # a patch release keeps the node kinds
    major, minor, _ = grammar_versions()["javascript"].split(".")
    old_style_char_checkpoint(patched, grammars={**grammar_versions(), "javascript": f"{major}.{minor}.99"})
    assert checkpoint.load(patched).family == "char_lstm"


def test_an_unknown_family_is_a_clear_error(tmp_path):
    assert set(FAMILIES) == {"char_lstm", "tree_lstm", "ngram"} and completer_class("tree_lstm") is TreeLSTMCompleter
    with pytest.raises(CheckpointError, match="no completer for model family 'gru'; this codecomp knows char_lstm"):
        completer_class("gru")
    path = tmp_path / "gru.ckpt"
    old_style_char_checkpoint(path, family="gru")
    with pytest.raises(CheckpointError, match="'gru'"):
        load_completer(path)


def test_a_container_reads_the_checkpoint_once(tmp_path, monkeypatch):
    from codecomp.serve.container.runners import load_runner

    path = tmp_path / "char.ckpt"
    old_style_char_checkpoint(path)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: calls.append(1) or real_load(*args, **kwargs))
    runner = load_runner(path, max_context=64)
    assert len(calls) == 1
    assert (runner.family, runner.version) == ("char_lstm", checkpoint.load(path).version)


def test_missing_damaged_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_completer(tmp_path / "missing.ckpt")
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(b"PK\x03\x04 and then nothing a zip archive holds")
    with pytest.raises(CheckpointError, match="damaged"):
        checkpoint.load(damaged)
    not_zip = tmp_path / "text.ckpt"
    not_zip.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="damaged or not a torch checkpoint"):
        checkpoint.check_file(not_zip)  # the start-up check, without torch
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a codecomp checkpoint"):
        load_completer(foreign)


def test_the_start_up_check_does_not_load_torch(tmp_path):
    path = tmp_path / "char.ckpt"
    old_style_char_checkpoint(path)
    program = (
        "import sys\nfrom codecomp.checkpoint import check_file\n"
        f"check_file({str(path)!r})\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
