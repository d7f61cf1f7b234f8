"""codecomp-eval on the fixture corpus: metrics against the n-gram baseline, deterministic; any corpus scored,
with baselines fitted on the corpus the checkpoint was trained on; nothing written outside the run folder."""

import json
import logging
import shutil

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from codecomp.checkpoint import load
from codecomp.evaluate import CONFIG_DIR, evaluate, print_report
from codecomp.evaluation.corpora import CorpusError
from codecomp.evaluation.line_completion import common_prefix_length, line_metrics, sample_line_tasks
from codecomp.inference import CheckpointError
from codecomp.train import train
from tests.test_train import TREE_TINY, compose_train


@pytest.fixture(autouse=True)
def elsewhere(tmp_path_factory, monkeypatch):
    """Every test here runs in an empty working directory, which must stay empty: an evaluation writes only under
    the run folder it is given (before, TensorBoard went to ./logs/tensorboard/eval, the user's logs/)."""
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    yield
    assert not list(cwd.iterdir()), f"written outside the run folder: {sorted(p.name for p in cwd.iterdir())}"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, fixture_corpus):
    folder = tmp_path_factory.mktemp("tiny")
    overrides = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                 "test_after_fit=false"]  # fmt: skip
    train(compose_train(folder, fixture_corpus, overrides))
    return folder / "checkpoints" / "last.ckpt"


def eval_config(checkpoint, corpus, extra=()):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[
            f"ckpt_path={checkpoint}", f"corpus={corpus}", "ngram.order=3", "next_char.positions=300",
            "line_completion.positions=6", "line_completion.max_chars=12", *extra,
        ])  # fmt: skip
    return OmegaConf.to_object(cfg)  # the EvalConfig that codecomp-eval's main hands to evaluate


def test_metrics_against_the_baseline_are_written_and_deterministic(tiny_checkpoint, fixture_corpus, tmp_path):
    cfg = eval_config(tiny_checkpoint, fixture_corpus)
    first = evaluate(cfg, tmp_path / "one")
    second = evaluate(cfg, tmp_path / "two")
    assert first["languages"] == second["languages"]
    written = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert written["languages"] == first["languages"] and written["split"] == "test"
    assert (written["family"], written["task"]) == ("char_lstm", "line")
    assert (written["corpus"], written["fit_corpus"], written["fit_corpus_from"]) == (
        str(fixture_corpus), str(fixture_corpus), "checkpoint")  # fmt: skip
    assert list((tmp_path / "one" / "tensorboard").glob("events.out.tfevents.*"))  # in the run folder
    for language in ("cpp", "javascript"):
        result = first["languages"][language]
        assert set(result["model"]) == {"bpc", "next_char_accuracy", "exact_match", "edit_similarity", "chars_saved"}
        assert result["model"]["bpc"] > 0 and result["baseline"]["bpc"] > 0
        assert result["ratio"]["bpc"] == pytest.approx(result["model"]["bpc"] / result["baseline"]["bpc"])
        assert 0 <= result["model"]["edit_similarity"] <= 100
        assert result["counts"]["line_tasks"] == 6 and result["counts"]["files"] == 2
    print_report(first)


def test_a_corpus_with_only_a_test_split_is_scored_with_baselines_fit_on_the_training_corpus(
    tiny_checkpoint, fixture_corpus, tmp_path
):
    other = tmp_path / "other"  # a corpus built only for testing: one split, one language
    shutil.copytree(fixture_corpus / "test" / "cpp", other / "test" / "cpp")
    assert load(tiny_checkpoint).description.corpus == {"name": fixture_corpus.name, "path": str(fixture_corpus)}
    report = evaluate(eval_config(tiny_checkpoint, other), tmp_path / "other-run")
    assert (report["corpus"], report["fit_corpus"], report["fit_corpus_from"]) == (
        str(other), str(fixture_corpus), "checkpoint")  # fmt: skip
    assert list(report["languages"]) == ["cpp"]  # the languages the scored split has
    assert f"fit on {fixture_corpus}/train" in report["languages"]["cpp"]["baseline_name"]
    # the same files and the same fitted baseline as scoring the training corpus's own test split
    same = evaluate(eval_config(tiny_checkpoint, fixture_corpus, ["languages=[cpp]"]), tmp_path / "own-run")
    assert same["languages"] == report["languages"]
    print_report(report)


def test_missing_corpora_are_clear_errors(tiny_checkpoint, fixture_corpus, tmp_path, caplog):
    with pytest.raises(CorpusError, match=r"train split of .*nope \(the fit_corpus given\), which has no cpp"):
        evaluate(eval_config(tiny_checkpoint, fixture_corpus, [f"fit_corpus={tmp_path / 'nope'}"]), tmp_path / "a")
    with pytest.raises(CorpusError, match="no split 'valid'"):
        evaluate(eval_config(tiny_checkpoint, tmp_path / "empty", ["split=valid"]), tmp_path / "b")
    # A checkpoint from before the corpus was recorded: the corpus scored is fitted, and the run says so.
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    del checkpoint["codecomp"]["corpus"]
    torch.save(checkpoint, tmp_path / "old.ckpt")
    shutil.copytree(fixture_corpus / "test", tmp_path / "test-only" / "test")
    with caplog.at_level(logging.WARNING), pytest.raises(CorpusError, match=r"\(the corpus scored\)"):
        evaluate(eval_config(tmp_path / "old.ckpt", tmp_path / "test-only"), tmp_path / "c")
    assert "does not record the corpus it was trained on" in caplog.text


def test_completer_settings_reach_the_completer(tiny_checkpoint, fixture_corpus, tmp_path):
    with pytest.raises(TypeError, match="window_bytes"):  # a Tree-LSTM setting given to a Char-LSTM
        evaluate(eval_config(tiny_checkpoint, fixture_corpus, ["+completer.window_bytes=64"]), tmp_path / "out")


def test_missing_checkpoint_is_a_clear_error(fixture_corpus, tmp_path):
    cfg = eval_config(tmp_path / "nope.ckpt", fixture_corpus)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        evaluate(cfg, tmp_path / "out")


def test_line_tasks_and_metrics():
    documents = [b"int a = 1;\n  return value + 2;\n}\n", b"x\n"]
    tasks = sample_line_tasks(documents, count=10, seed=0)
    assert len(tasks) == 2  # the two lines with at least 8 non-blank bytes
    for task in tasks:
        line_end = documents[task.document].index(b"\n", len(task.prefix))
        assert task.prefix + task.target == documents[task.document][:line_end] and task.target
    assert sample_line_tasks(documents, 10, seed=0) == tasks
    assert common_prefix_length(b"abcd", b"abxx") == 2
    metrics = line_metrics([b"return x;", b"foo"], [b"return x;", b"bar"])
    assert metrics["exact_match"] == 50.0 and metrics["chars_saved"] == pytest.approx(100 * 9 / 12)


@pytest.fixture(scope="module")
def tiny_tree_checkpoints(tmp_path_factory, fixture_corpus):
    paths = []
    for upward in ("false", "true"):
        folder = tmp_path_factory.mktemp("tree")
        overrides = ["trainer.max_epochs=2", "test_after_fit=false", f"model.upward_only={upward}"]
        train(compose_train(folder, fixture_corpus, overrides, TREE_TINY))
        paths.append(folder / "checkpoints" / "last.ckpt")
    return paths


def test_hole_metrics_against_baselines_and_ablation(tiny_tree_checkpoints, fixture_corpus, tmp_path):
    model, ablation = tiny_tree_checkpoints
    cfg = eval_config(model, fixture_corpus, [f"holes.ablation_ckpt_path={ablation}", "holes.per_language=12"])
    report = evaluate(cfg, tmp_path / "holes")
    assert (report["family"], report["task"]) == ("tree_lstm", "token")
    assert (report["fit_corpus"], report["fit_corpus_from"]) == (str(fixture_corpus), "checkpoint")
    assert evaluate(cfg, tmp_path / "again")["languages"] == report["languages"]  # deterministic
    for language in ("cpp", "javascript"):
        result = report["languages"][language]
        assert result["holes"] == 12 and 0 <= result["target_oov_rate"] <= 100
        assert 0 <= result["member_access_share"] <= 100 and result["partly_typed_share"] == 0
        for context in ("whole_file", "editor", "prefix"):
            systems = result[context]
            assert {"model", "upward_only", "file_frequency", "train_frequency"} <= set(systems)
            for name in ("model", "upward_only", "file_frequency", "train_frequency"):
                scores = systems[name]
                assert 0 <= scores["top1"] <= scores["top5"] <= 100 and 0 <= scores["mrr"] <= 1
                assert sum(k["holes"] for k in scores["by_kind"].values()) == 12
                positions = scores["by_position"]  # member accesses (after `.`, `->`, `::`) apart
                assert set(positions) == {"member_access", "other"}
                assert positions["member_access"]["holes"] + positions["other"]["holes"] == 12
                assert positions["member_access"]["holes"] == round(result["member_access_share"] * 12 / 100)
        # every name in reach of the whole file is in reach of its prefix too, not the other way round
        assert result["whole_file"]["copyable_share"] >= result["editor"]["copyable_share"]
        assert result["editor"]["copyable_share"] >= result["prefix"]["copyable_share"]
    print_report(report)
    written = json.loads((tmp_path / "holes" / "metrics.json").read_text())
    assert written["settings"]["holes"]["contexts"] == ["whole_file", "editor", "prefix"]


def test_hole_contexts_and_typed_prefixes_are_chosen(tiny_tree_checkpoints, fixture_corpus, tmp_path):
    overrides = ["holes.per_language=8", "holes.contexts=[editor]", "holes.partial_rate=1.0", "languages=[cpp]"]
    report = evaluate(eval_config(tiny_tree_checkpoints[0], fixture_corpus, overrides), tmp_path / "typed")
    result = report["languages"]["cpp"]
    assert "editor" in result and "whole_file" not in result and "prefix" not in result
    assert result["partly_typed_share"] > 0  # targets of two or more characters, partly typed
    print_report(report)
