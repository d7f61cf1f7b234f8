"""Training throughput of the Char-LSTM: the LightningModule under a Trainer against a bare PyTorch
loop of the same model, optimizer, gradient clipping and batches, in the same run.

    python -m benchmarks.train_throughput [--hidden 256] [--layers 2] [--precision bf16-mixed] [--steps 40]

Steps after a warm-up are timed; rounds alternate the two so machine noise hits both alike.
Prints characters per second, seconds per step (wall, and CPU time of this process: on a machine shared with
other work the CPU time is the steadier of the two), and Lightning's overhead.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from codecomp.data.char_vocab import PAD_ID
from codecomp.models.char_lstm_module import CharLSTMModule


class _StepTimer(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.started, self.elapsed = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if batch_idx == self.warmup:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.elapsed = time.perf_counter() - self.started


def _batches(steps: int, batch: int, seq_len: int) -> torch.Tensor:
    return torch.randint(0, 256, (steps * batch, seq_len + 1), generator=torch.Generator().manual_seed(0))


def lightning_seconds(hidden: int, layers: int, precision: str, data: torch.Tensor, batch: int, warmup: int) -> float:
    torch.manual_seed(0)
    module = CharLSTMModule(hidden=hidden, layers=layers, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    timer = _StepTimer(warmup)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, gradient_clip_val=1.0, limit_val_batches=0, callbacks=[timer],
        precision=precision,  # type: ignore[arg-type]  # one of the two choices main() accepts
    )  # fmt: skip
    loader = DataLoader(
        TensorDataset(data), batch_size=batch, collate_fn=lambda rows: torch.stack([r[0] for r in rows])
    )
    trainer.fit(module, train_dataloaders=loader)
    return timer.elapsed


def bare_seconds(
    hidden: int, layers: int, precision: str, data: torch.Tensor, batch: int, warmup: int
) -> tuple[float, float]:
    torch.manual_seed(0)
    model = CharLSTMModule(hidden=hidden, layers=layers).model.train()
    bf16 = precision.startswith("bf16")
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    started = cpu_started = 0.0
    for step, start in enumerate(range(0, len(data), batch)):
        if step == warmup:
            started, cpu_started = time.perf_counter(), time.process_time()
        window = data[start : start + batch]
        with autocast():
            logits = model(window[:, :-1])[0].float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1), ignore_index=PAD_ID)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return time.perf_counter() - started, time.process_time() - cpu_started  # wall, CPU (all threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = _batches(args.steps, args.batch, args.seq_len)
    chars = (args.steps - args.warmup) * args.batch * args.seq_len
    bare, lightning, cpu = [], [], []
    model = (args.hidden, args.layers, args.precision)
    for _ in range(args.rounds):
        wall, cpu_seconds = bare_seconds(*model, data, args.batch, args.warmup)
        bare.append(chars / wall)
        cpu.append(cpu_seconds / (args.steps - args.warmup))
        lightning.append(chars / lightning_seconds(*model, data, args.batch, args.warmup))
    b, lt = statistics.median(bare), statistics.median(lightning)
    print(f"hidden={args.hidden} layers={args.layers} {args.precision} batch={args.batch}x{args.seq_len} "
          f"threads={torch.get_num_threads()}")  # fmt: skip
    print(f"bare PyTorch loop   {b:>10,.0f} chars/s  (rounds: {', '.join(f'{x:,.0f}' for x in bare)})")
    print(f"Lightning Trainer   {lt:>10,.0f} chars/s  (rounds: {', '.join(f'{x:,.0f}' for x in lightning)})")
    step_chars = args.batch * args.seq_len
    print(
        f"seconds per step    {step_chars / lt:>10.3f} wall (Lightning), {statistics.median(cpu):.3f} CPU (bare loop)"
    )
    print(f"Lightning overhead  {100 * (b / lt - 1):>9.1f} %")


if __name__ == "__main__":
    main()
