"""Data-parallel training: each process gets its own, equally long share of the batches, and `trainer=ddp` runs
both models with two CPU processes (gloo), launched as users launch it."""

import ast
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from codecomp.data.char_datamodule import CharDataModule
from codecomp.data.tree_datamodule import NodeBudgetBatchSampler
from tests.test_train import TINY, TREE_TINY

TRAIN = Path(sys.executable).parent / "codecomp-train"  # the console script, as users run it


@pytest.mark.parametrize("shuffle", [False, True])
def test_tree_batches_are_shared_out_evenly_across_processes(shuffle):
    sizes = np.random.default_rng(0).integers(1, 50, size=101)
    whole = NodeBudgetBatchSampler(sizes, budget=120, shuffle=shuffle, seed=3)
    shares = [list(NodeBudgetBatchSampler(sizes, 120, shuffle, seed=3, rank=r, world_size=3)) for r in range(3)]
    assert [len(share) for share in shares] == [-(-len(whole) // 3)] * 3  # as many steps in every process
    assert sorted(map(tuple, whole)) == sorted({tuple(b) for share in shares for b in share})  # every batch


class _Trainer:  # what a DataModule reads of its Trainer here
    def __init__(self, rank: int, world_size: int) -> None:
        self.global_rank, self.world_size, self.current_epoch = rank, world_size, 0


@pytest.mark.parametrize("stage", ["train", "val"])
def test_char_windows_are_shared_out_across_processes(fixture_corpus, stage):
    def windows(rank: int) -> tuple[list[int], int]:
        module = CharDataModule(fixture_corpus, seq_len=32, batch_size=4, carry_state=False)
        module.trainer = _Trainer(rank, 2)  # type: ignore[assignment]
        module.setup()
        loader: DataLoader = getattr(module, f"{stage}_dataloader")()
        return list(loader.sampler), len(loader.dataset)  # type: ignore[arg-type]

    (first, count), (second, _) = windows(0), windows(1)
    assert len(first) == len(second) >= count // 2  # as many steps in each process
    assert len(set(first) & set(second)) <= 1  # disjoint shares, but for a window that evens out an odd count


@pytest.mark.parametrize("stage", ["train", "val"])
def test_char_file_lanes_are_shared_out_across_processes(fixture_corpus, stage):
    def lanes(rank: int) -> tuple[list[int], int]:
        module = CharDataModule(fixture_corpus, seq_len=32, batch_size=2)  # lanes of whole files (carry_state)
        module.trainer = _Trainer(rank, 2)  # type: ignore[assignment]
        module.setup()
        loader: DataLoader = getattr(module, f"{stage}_dataloader")()
        return [f for lane in loader.dataset.lanes for f in lane], len(loader)  # type: ignore[attr-defined]

    (first, steps), (second, other_steps) = lanes(0), lanes(1)
    assert steps == other_steps > 0  # as many steps in each process
    assert first and second and not set(first) & set(second)  # disjoint shares of the files


@pytest.mark.slow  # two launches of two processes each: about a minute on two CPU cores
@pytest.mark.parametrize(
    ("name", "tiny", "metric"), [("char_lstm", TINY, "val/bpc"), ("tree_lstm", TREE_TINY, "val/top1")]
)
def test_ddp_fast_dev_run_with_two_cpu_processes(tmp_path, fixture_corpus, name, tiny, metric):
    command = [
        str(TRAIN), "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "debug=fast_dev_run", *tiny,
        f"data.corpus={fixture_corpus}", f"hydra.run.dir={tmp_path}/run", f"logger.tensorboard.save_dir={tmp_path}/tb",
        f"ckpt_dir={tmp_path}/ckpt", f"trainer.default_root_dir={tmp_path}", "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "distributed_backend=gloo" in output and "Starting with 2 processes" in output
    # Each process logs its own metrics: training saw different batches, validation was averaged over both.
    finals = [ast.literal_eval(m) for m in re.findall(r"metrics: (\{.*\})", output)]
    assert len(finals) == 2, output[-3000:]
    assert finals[0]["train/loss"] != finals[1]["train/loss"]
    assert finals[0][metric] == finals[1][metric]
    print(f"{name}: DDP fast_dev_run in {time.monotonic() - started:.1f} s")
