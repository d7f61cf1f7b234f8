"""Windows of the corpus's text shards for the Char-LSTM, read without re-reading sources."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from codecomp.data.char_vocab import encode_document
from codecomp.data.file_lanes import FileLaneBatches
from codecomp.data.shards import TextShard


def split_stream(corpus: Path, split: str, languages: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """All files of a split, each framed by its language's file start and an end of file, in one int16 array
    (the symbols fit, and it halves the memory of int32), and the (files + 1,) offsets of the files in it."""
    parts = [
        encode_document(document, language).astype(np.int16)
        for language in languages
        if (corpus / split / language / "files.json").exists()
        for document in TextShard(corpus / split / language)
    ]
    if not parts:
        raise FileNotFoundError(f"no text shard for {list(languages)} in {corpus / split}: build the corpus first")
    bounds = np.concatenate([[0], np.cumsum([len(part) for part in parts])]).astype(np.int64)
    return np.concatenate(parts), bounds


class WindowDataset(Dataset):
    """Consecutive windows of `seq_len + 1` symbols (inputs and shifted targets) from a stream."""

    def __init__(self, stream: np.ndarray, seq_len: int, offset: int = 0) -> None:
        self.stream, self.seq_len, self.offset = stream, seq_len, offset
        self.count = max(0, (len(stream) - offset - 1) // seq_len)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        start = self.offset + index * self.seq_len
        return torch.from_numpy(self.stream[start : start + self.seq_len + 1].astype(np.int64))


class CharDataModule(pl.LightningDataModule):
    """Windows of the train, valid and test splits.

    With `carry_state` (the default), every split is read as lanes of whole files, each batch row the next window
    of its file (codecomp.data.file_lanes), so the model carries its state across batches and, like evaluation,
    reads files from their start; training deals the files in a new order every epoch, validation and testing
    in one fixed order (both languages from the first batch). Without it, training takes shuffled windows
    from anywhere in the split and every window starts from a zero state.

    Args:
        corpus: a built corpus folder (`data/<recipe>`).
        languages: which languages' shards to read.
        seq_len: symbols per window (the backpropagation-through-time length).
        batch_size: windows per batch.
        num_workers: DataLoader worker processes.
        seed: each epoch's file order (or window offset, without `carry_state`).
        carry_state: batches of consecutive windows of files (see above), flagged where a file starts.
        carry_windows: with `carry_state`, training reads files in pieces of at most this many windows, each
            from a zero state, so that a stretch of steps sees many files (None: whole files). Validation and
            testing read whole files.
    """

    def __init__(
        self,
        corpus: str | Path,
        languages: Sequence[str] = ("cpp", "javascript"),
        seq_len: int = 256,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        carry_state: bool = True,
        carry_windows: int | None = None,
    ) -> None:
        super().__init__()
        self.corpus, self.languages = Path(corpus), tuple(languages)
        self.seq_len, self.batch_size, self.num_workers, self.seed = seq_len, batch_size, num_workers, seed
        self.carry_state, self.carry_windows = carry_state, carry_windows
        self.streams: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # split: (symbols, file offsets)

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "valid", "test"):
            if split not in self.streams:
                self.streams[split] = split_stream(self.corpus, split, self.languages)

    def _share(self) -> tuple[int, int]:
        """(rank, world size): in data-parallel runs (trainer=ddp) each process reads its own share."""
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        rank, world = self._share()
        sampler: DistributedSampler | None = None
        if world > 1:
            sampler = DistributedSampler(dataset, world, rank, shuffle=shuffle, seed=self.seed, drop_last=shuffle)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=shuffle,
            persistent_workers=self.num_workers > 0,
        )

    def _lanes(self, split: str, seed: int | Sequence[int], training: bool) -> DataLoader:
        rank, world = self._share()
        stream, bounds = self.streams[split]
        pieces = self.carry_windows if training else None
        lanes = FileLaneBatches(stream, bounds, self.seq_len, self.batch_size, seed, training, rank, world, pieces)
        # The dataset yields whole batches; persistent workers would keep the first epoch's file order.
        return DataLoader(lanes, batch_size=None, num_workers=self.num_workers)

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        if self.carry_state:
            return self._lanes("train", [self.seed, self._epoch()], training=True)
        offset = int(np.random.default_rng([self.seed, self._epoch()]).integers(self.seq_len))
        return self._loader(WindowDataset(self.streams["train"][0], self.seq_len, offset), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        if self.carry_state:
            return self._lanes(split, self.seed, training=False)
        return self._loader(WindowDataset(self.streams[split][0], self.seq_len), shuffle=False)
