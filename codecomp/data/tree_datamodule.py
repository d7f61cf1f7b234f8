"""Hole-prediction batches from the corpus's tree shards, for the Tree-LSTM."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, Sampler

from codecomp.data.hole_settings import HoleSettings
from codecomp.data.holes import DEFAULT_TARGET_KINDS, HoleExample, collate_examples, sample_examples
from codecomp.data.shards import TextShard, TreeShard
from codecomp.data.tree_vocab import TreeVocab


class HoleDataset(Dataset):
    """The trees of some shards, each with freshly sampled holes of a setting drawn by share (`settings`).

    Holes depend on (seed, epoch, index) only: validation keeps `epoch` at 0 and so sees the same
    holes every time; training moves to a new epoch and sees new ones. Editor and prefix holes read the
    files' text (`texts`, the text shards beside the tree shards) and parse it cut at the cursor.
    """

    def __init__(
        self,
        shards: Sequence[TreeShard],
        target_kinds: Mapping[str, Sequence[str]],
        mask_rate: float,
        max_holes: int,
        max_nodes: int,
        seed: int,
        settings: HoleSettings | None = None,
        texts: Sequence[TextShard] | None = None,
        cursor_holes: int = 1,
    ) -> None:
        self.shards, self.target_kinds, self.cursor_holes = list(shards), target_kinds, cursor_holes
        self.mask_rate, self.max_holes, self.seed, self.epoch = mask_rate, max_holes, seed, 0
        self.settings = settings or HoleSettings()
        self.texts = list(texts) if texts is not None else None
        self.items = [
            (s, t) for s, shard in enumerate(self.shards) for t in range(len(shard))
            if shard.tree_ptr[t + 1] - shard.tree_ptr[t] <= max_nodes
        ]  # fmt: skip
        self.sizes = np.array([self._expected_nodes(s, t) for s, t in self.items], dtype=np.int64)

    def _expected_nodes(self, shard: int, tree: int) -> int:
        """The nodes the file's examples hold on average: the whole tree for whole_file holes, `cursor_holes`
        windows of it for editor and prefix holes (batches are planned by node count before settings are drawn)."""
        nodes = int(self.shards[shard].tree_ptr[tree + 1] - self.shards[shard].tree_ptr[tree])
        if self.texts is None:
            return nodes
        window = self.settings.window_bytes
        n_bytes = int(self.shards[shard].n_bytes[tree])
        seen = 1.0 if window is None else min(1.0, 1.5 * window / max(n_bytes, 1))  # share of the file a window holds
        cursor_share = 1.0 - self.settings.shares.get("whole_file", 0.0)
        return round(nodes * ((1.0 - cursor_share) + cursor_share * self.cursor_holes * seen))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> list[HoleExample]:
        shard, tree = self.items[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        code_tree = self.shards[shard].tree(tree)
        document = None
        if self.texts is not None and set(self.settings.shares) != {"whole_file"}:
            document = self.texts[shard].document(int(self.shards[shard].file_index[tree]))
        return sample_examples(
            code_tree, document, self.settings, self.target_kinds, self.mask_rate, self.max_holes, rng,
            self.cursor_holes,
        )  # fmt: skip


class NodeBudgetBatchSampler(Sampler[list[int]]):
    """Batches of trees of similar size whose node counts add up to at most `budget` (a tree larger
    than the budget is a batch of its own); batch order shuffled per epoch when `shuffle`.

    In a data-parallel run process `rank` of `world_size` takes every world_size-th batch of the same order
    (the same seed and epoch everywhere), the first batches repeated so that every process gets as many (as
    DistributedSampler pads): no process waits at the gradient all-reduce for one that ran out.
    """

    def __init__(
        self, sizes: np.ndarray, budget: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.sizes, self.budget, self.shuffle, self.seed, self.epoch = sizes, budget, shuffle, seed, 0
        self.rank, self.world_size = rank, world_size
        self.batches: list[list[int]] = []
        batch: list[int] = []
        total = 0
        for index in np.argsort(sizes, kind="stable").tolist():
            if batch and total + sizes[index] > budget:
                self.batches.append(batch)
                batch, total = [], 0
            batch.append(index)
            total += int(sizes[index])
        if batch:
            self.batches.append(batch)

    def __len__(self) -> int:
        return -(-len(self.batches) // self.world_size)  # this process's share, rounded up

    def __iter__(self) -> Iterator[list[int]]:
        order = np.arange(len(self.batches))
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch]).shuffle(order)
        shares = np.resize(order, len(self) * self.world_size)  # repeats from the start to fill every share
        return (self.batches[i] for i in shares[self.rank :: self.world_size].tolist())


class TreeHoleDataModule(pl.LightningDataModule):
    """Args:
    corpus: a built corpus folder; languages: whose tree shards to read (one model for all).
    target_kinds: leaf kinds per language that become holes (identifiers by default).
    mask_rate, max_holes: the share of a tree's target leaves hidden per example, and a bound.
    max_nodes: larger trees are left out of training and validation.
    node_budget: nodes per batch.
    hole_settings: per hole setting (`whole_file`, `editor`, `prefix`), the share of files that get holes of
        it (and its share of the loss); None: whole_file only. See `codecomp.data.hole_settings`.
    partial_rate: share of editor and prefix holes whose token is partly typed.
    hole_window_bytes: editor and prefix holes read whole lines within this many bytes before the cursor (half
        as many after), like the server's window; None: the whole file.
    cursor_holes: a file drawn for editor or prefix holes gives this many, at distinct leaves, each parsed apart.
    """

    def __init__(
        self,
        corpus: str | Path,
        languages: Sequence[str] = ("cpp", "javascript"),
        target_kinds: Mapping[str, Sequence[str]] | None = None,
        mask_rate: float = 0.15,
        max_holes: int = 32,
        max_nodes: int = 20000,
        node_budget: int = 20000,
        num_workers: int = 0,
        seed: int = 0,
        hole_settings: Mapping[str, float] | None = None,
        partial_rate: float = 0.0,
        hole_window_bytes: int | None = None,
        cursor_holes: int = 1,
    ) -> None:
        super().__init__()
        self.cursor_holes = cursor_holes
        self.hole_settings = HoleSettings.create(hole_settings, partial_rate, hole_window_bytes)
        self.corpus, self.languages = Path(corpus), list(languages)
        self.target_kinds = {k: tuple(v) for k, v in (target_kinds or DEFAULT_TARGET_KINDS).items()}
        self.mask_rate, self.max_holes, self.max_nodes = mask_rate, max_holes, max_nodes
        self.node_budget, self.num_workers, self.seed = node_budget, num_workers, seed
        self.datasets: dict[str, HoleDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        self.vocab = TreeVocab.from_corpus(self.corpus, self.languages)
        for split in ("train", "valid", "test"):
            folders = [self.corpus / split / lang for lang in self.languages
                       if (self.corpus / split / lang / "trees").exists()]  # fmt: skip
            if not folders:
                raise FileNotFoundError(f"no tree shard in {self.corpus / split}: build the corpus first")
            self.datasets[split] = HoleDataset(
                [TreeShard(folder) for folder in folders], self.target_kinds, self.mask_rate, self.max_holes,
                self.max_nodes, self.seed, self.hole_settings, [TextShard(folder) for folder in folders],
                self.cursor_holes,
            )  # fmt: skip

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        sampler = NodeBudgetBatchSampler(dataset.sizes, self.node_budget, shuffle, self.seed, rank, world)
        if shuffle and self.trainer is not None:
            dataset.epoch = sampler.epoch = self.trainer.current_epoch
        collate = functools.partial(collate_examples, vocab=self.vocab, target_kinds=self.target_kinds)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
