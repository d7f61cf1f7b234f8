"""Batches of consecutive windows of files, for training with the LSTM state carried across batches (truncated
backpropagation through time).

Each batch row is a lane: it reads one file from its start, `seq_len` symbols a batch, then the next file of its
lane. A row whose file starts in this batch is flagged (`reset`): the model starts it from a zero state, as
evaluation and serving read a file; every other row continues from the state the row ended the last batch with.
So the model learns to use context longer than a window, which it gets when a whole file is scored.

Training may cut files into pieces of at most `max_windows` windows, dealt to lanes like files (a piece after a
file's first starts mid-file, from a zero state): with whole files a row reads one file for as many batches as
the file has windows, so a short run would learn from few files; pieces mix many more into every stretch of steps.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from codecomp.data.char_vocab import PAD_ID


class CharBatch(NamedTuple):
    """tokens: (B, T + 1) int64 symbols, inputs `[:, :-1]` and targets `[:, 1:]`, padded with PAD_ID after a
    file's end; reset: (B,) bool, True where the row starts a file (its state starts from zeros)."""

    tokens: torch.Tensor
    reset: torch.Tensor


def assign_lanes(windows: Sequence[int] | np.ndarray, lanes: int, order: Sequence[int] | np.ndarray) -> list[list[int]]:
    """Deal files, in `order`, to `lanes` lanes, each file to the lane with the fewest windows so far: the
    lanes end within one file's windows of each other.

    Args:
        windows: windows per file.
        lanes: how many lanes (batch rows across all processes).
        order: the files' indices in the order they are dealt.

    Returns:
        each lane's files, in reading order.
    """
    heap = [(0, lane) for lane in range(lanes)]
    assigned: list[list[int]] = [[] for _ in range(lanes)]
    for file in order:
        total, lane = heapq.heappop(heap)
        assigned[lane].append(int(file))
        heapq.heappush(heap, (total + int(windows[file]), lane))
    return assigned


def cut_pieces(bounds: np.ndarray, seq_len: int, max_windows: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends, in the stream, of the pieces of every file (the files themselves when `max_windows` is
    None). A piece holds at most `max_windows * seq_len` targets; consecutive pieces of a file share one symbol,
    the last target of one and the first input of the next.

    Args:
        bounds: (files + 1,) offsets of the files in the stream.

    Returns:
        (pieces,) starts and (pieces,) ends, file after file and in order within a file.
    """
    starts, ends = bounds[:-1], bounds[1:]
    if max_windows is None:
        return starts, ends
    span = max_windows * seq_len  # targets per piece
    counts = np.maximum(1, -(-(ends - starts - 1) // span))
    file = np.repeat(np.arange(len(starts)), counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # piece number in its file
    piece_starts = starts[file] + within * span
    return piece_starts, np.minimum(piece_starts + span + 1, ends[file])


class FileLaneBatches(IterableDataset):
    """Batches of consecutive windows, one lane of files (or pieces) per row (see the module docstring).

    Args:
        stream: all files' symbols, each framed by its file start and end of file (int16).
        bounds: (files + 1,) offsets of the files in `stream`.
        seq_len: symbols per window (the truncated backpropagation length).
        batch_size: rows per batch in this process.
        seed: the files' order; the same seed gives the same batches.
        max_windows: cut files into pieces of at most this many windows (see the module docstring); None: whole
            files.
        drop_last: stop when the first lane runs out (training: no padded rows); else go on until the last lane
            ends, with rows of padding for lanes that have ended (evaluation: every window read).
        rank, world_size: this process's share in data-parallel runs: its own lanes, and as many batches
            as every other process.
    """

    def __init__(
        self,
        stream: np.ndarray,
        bounds: np.ndarray,
        seq_len: int,
        batch_size: int,
        seed: int | Sequence[int] = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        max_windows: int | None = None,
    ) -> None:
        self.stream, self.seq_len, self.batch_size = stream, seq_len, batch_size
        self.starts, self.ends = cut_pieces(bounds, seq_len, max_windows)
        lengths = self.ends - self.starts  # symbols per piece; a piece gives length - 1 targets
        self.windows = np.maximum(1, -(-(lengths - 1) // seq_len))
        order = np.random.default_rng(seed).permutation(len(lengths))
        all_lanes = assign_lanes(self.windows, batch_size * world_size, order)
        self.lanes = all_lanes[rank * batch_size : (rank + 1) * batch_size]
        totals = [int(self.windows[lane].sum()) if lane else 0 for lane in all_lanes]
        self.count = (min(totals) if drop_last else 0) or max(totals)  # fewer files than lanes: padded rows

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[CharBatch]:
        # With several loader workers, each builds every batch but yields only its turn: the loader takes the
        # workers' batches in turn, so the batches keep their order.
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        cursors = [self._windows_of(lane) for lane in self.lanes]
        for index in range(self.count):
            tokens = torch.full((self.batch_size, self.seq_len + 1), PAD_ID, dtype=torch.int64)
            reset = torch.ones(self.batch_size, dtype=torch.bool)
            for row, cursor in enumerate(cursors):
                window = next(cursor, None)
                if window is not None:
                    symbols, reset[row] = window
                    tokens[row, : len(symbols)] = torch.from_numpy(symbols.astype(np.int64))
            if index % workers == worker:
                yield CharBatch(tokens, reset)

    def _windows_of(self, pieces: Sequence[int]) -> Iterator[tuple[np.ndarray, bool]]:
        """The lane's windows in reading order: (symbols, whether the window starts its piece)."""
        for piece in pieces:
            start, end = int(self.starts[piece]), int(self.ends[piece])
            for window in range(int(self.windows[piece])):
                first = start + window * self.seq_len
                yield self.stream[first : min(first + self.seq_len + 1, end)], window == 0
