"""Windows of the corpus's text shards for the Char-LSTM, read without re-reading sources."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from codecomp.data.char_vocab import encode_document
from codecomp.data.shards import TextShard


def split_stream(corpus: Path, split: str, languages: Sequence[str]) -> np.ndarray:
    """All files of a split, each framed by its language's file start and an end of file, in one
    int16 array (the symbols fit, and it halves the memory of int32)."""
    parts = [
        encode_document(document, language).astype(np.int16)
        for language in languages
        if (corpus / split / language / "files.json").exists()
        for document in TextShard(corpus / split / language)
    ]
    if not parts:
        raise FileNotFoundError(f"no text shard for {list(languages)} in {corpus / split}: build the corpus first")
    return np.concatenate(parts)


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
    """Train on shuffled windows; validate and test on the valid and test splits' windows in order.

    Args:
        corpus: a built corpus folder (`data/<recipe>`).
        languages: which languages' shards to read.
        seq_len: symbols per window (the backpropagation-through-time length).
        batch_size: windows per batch.
        num_workers: DataLoader worker processes.
        seed: picks each epoch's window offset, so windows start at different bytes across epochs.
    """

    def __init__(
        self,
        corpus: str | Path,
        languages: Sequence[str] = ("cpp", "javascript"),
        seq_len: int = 256,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.corpus, self.languages = Path(corpus), tuple(languages)
        self.seq_len, self.batch_size, self.num_workers, self.seed = seq_len, batch_size, num_workers, seed
        self.streams: dict[str, np.ndarray] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "valid", "test"):
            if split not in self.streams:
                self.streams[split] = split_stream(self.corpus, split, self.languages)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        # Data-parallel runs (trainer=ddp): each process reads its own share of the windows.
        world = self.trainer.world_size if self.trainer is not None else 1
        sampler: DistributedSampler | None = None
        if world > 1:
            assert self.trainer is not None
            rank = self.trainer.global_rank
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

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        offset = int(np.random.default_rng([self.seed, epoch]).integers(self.seq_len))
        return self._loader(WindowDataset(self.streams["train"], self.seq_len, offset), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(WindowDataset(self.streams["valid"], self.seq_len), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(WindowDataset(self.streams["test"], self.seq_len), shuffle=False)
