"""Training through the real Hydra configs, shrunk: fast_dev_run, checkpoints, resume, sweeps."""

import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from codecomp.checkpoint import SCHEMA_VERSION
from codecomp.inference import CompletionOptions, CompletionRequest
from codecomp.inference.families import load_completer
from codecomp.train import CONFIG_DIR, train

TINY = ["model.hidden=16", "model.module.embed_dim=8", "model.datamodule.seq_len=32", "model.datamodule.batch_size=4"]
TREE_TINY = ["model=tree_lstm", "model.hidden=8", "model.module.embed_dim=8", "model.module.pointer_dim=8",
             "model.datamodule.node_budget=400"]  # fmt: skip


def compose_train(tmp_path, corpus, overrides=(), tiny=TINY):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[*tiny, f"data.corpus={corpus}", *overrides],
            return_hydra_config=True,
        )
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            cfg.ckpt_dir = str(tmp_path / "checkpoints")
            cfg.logger.tensorboard.save_dir = str(tmp_path / "tensorboard")
            cfg.trainer.default_root_dir = str(tmp_path)
            cfg.trainer.enable_progress_bar = False
            cfg.callbacks.progress_bar = None
    return cfg


@pytest.mark.parametrize(
    ("experiment", "tiny", "metric"),
    [(None, TINY, "val/bpc"), ("char_lstm_quick", TINY, "val/bpc"), ("tree_lstm_quick", TREE_TINY[1:], "val/top1"),
     ("tree_lstm_upward_quick", TREE_TINY[1:], "val/top1"), (None, TREE_TINY, "val/top1")],
)  # fmt: skip
def test_fast_dev_run(tmp_path, fixture_corpus, experiment, tiny, metric):
    overrides = ["debug=fast_dev_run"] + ([f"experiment={experiment}"] if experiment else [])
    result = train(compose_train(tmp_path, fixture_corpus, overrides, tiny))
    assert result["metrics"]["train/loss"] > 0 and metric in result["metrics"]


def test_checkpoint_describes_itself_and_training_resumes(tmp_path, fixture_corpus):
    overrides = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                 "trainer.log_every_n_steps=1"]  # fmt: skip
    result = train(compose_train(tmp_path, fixture_corpus, overrides))
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_file() and (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert "test/bpc" in result["metrics"]
    checkpoint = torch.load(last, weights_only=True)  # loads with no config and no code from the file
    assert checkpoint["global_step"] == 3
    assert checkpoint["codecomp"]["model_config"]["hidden"] == 16
    assert checkpoint["codecomp"]["languages"] == ["cpp", "javascript"]
    assert set(checkpoint["codecomp"]["grammars"]) == {"tree-sitter", "cpp", "javascript"}
    assert checkpoint["codecomp"]["schema"] == SCHEMA_VERSION
    assert checkpoint["codecomp"]["corpus"] == {"name": fixture_corpus.name, "path": str(fixture_corpus)}
    completer = load_completer(last)  # the family the module wrote names the completer
    assert completer.family == "char_lstm"
    [candidates] = completer.complete([CompletionRequest(b"var x = ", b"", "javascript")], CompletionOptions(k=1))
    assert candidates

    train(compose_train(tmp_path, fixture_corpus, [*overrides, "trainer.max_epochs=2"]))
    assert torch.load(last, weights_only=True)["global_step"] == 6  # continued from step 3, not from 0

    events = EventAccumulator(str(next((tmp_path / "tensorboard").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/bpc", "val/loss", "val/bpc"} <= scalars
    assert any(tag.startswith("lr-") for tag in scalars)
    assert "val/samples/text_summary" in events.Tags()["tensors"]


def test_overfit_one_batch_drives_the_loss_down(tmp_path, fixture_corpus):
    result = train(
        compose_train(
            tmp_path,
            fixture_corpus,
            ["debug=overfit", "trainer.max_epochs=150", "model.hidden=64", "model.module.dropout=0"],
        )
    )
    assert result["metrics"]["train/loss"] < 2.0  # from ln(260) = 5.6 nats at the start


def test_multirun_sweep_gives_each_setting_its_own_run(tmp_path, fixture_corpus):
    command = [
        sys.executable, "-m", "codecomp.train", "-m", "model.hidden=8,12", "debug=fast_dev_run",
        *TINY[1:], f"data.corpus={fixture_corpus}", f"hydra.sweep.dir={tmp_path}/sweep",
        f"logger.tensorboard.save_dir={tmp_path}/tb", f"ckpt_dir={tmp_path}/ckpt", "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == ["0", "1"]
    assert "model.hidden=8" in done.stderr + done.stdout and "model.hidden=12" in done.stderr + done.stdout
