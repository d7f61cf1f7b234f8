"""Lanes of whole files for truncated backpropagation through time: consecutive windows per batch row, flags where
a file starts, shares for data-parallel processes, and the module carrying (and resetting) its state."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from codecomp.data.char_datamodule import CharDataModule
from codecomp.data.char_vocab import PAD_ID, bos_id
from codecomp.data.file_lanes import CharBatch, FileLaneBatches, assign_lanes, cut_pieces
from codecomp.models.char_lstm_module import CharLSTMModule

LENGTHS = [9, 3, 14, 2, 7, 11, 5]  # symbols per file, framing included


def files_stream() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Files whose symbols name them: file f holds 20 * f + 0, 1, 2, ... (all below PAD_ID)."""
    files = [np.arange(n, dtype=np.int16) + 20 * f for f, n in enumerate(LENGTHS)]
    bounds = np.concatenate([[0], np.cumsum(LENGTHS)])
    return files, np.concatenate(files), bounds


def read_rows(batches: list[CharBatch], seq_len: int) -> list[list[list[int]]]:
    """Each row's files, rebuilt from its windows: a window overlaps the next by the one symbol that is both
    the last input's target and the next window's first input."""
    rows: list[list[list[int]]] = [[] for _ in range(len(batches[0].reset))]
    for batch in batches:
        for row, (tokens, reset) in enumerate(zip(batch.tokens.tolist(), batch.reset.tolist(), strict=True)):
            symbols = [s for s in tokens if s != PAD_ID]
            if not symbols:
                continue
            if reset:
                rows[row].append(symbols)
            else:
                assert rows[row], "a row continued a file it never started"
                assert rows[row][-1][-1] == symbols[0]  # the next window starts where the last one ended
                rows[row][-1].extend(symbols[1:])
    return rows


@pytest.mark.parametrize("seq_len", [1, 4, 20])
def test_each_row_reads_its_files_whole_in_consecutive_windows(seq_len):
    files, stream, bounds = files_stream()
    lanes = FileLaneBatches(stream, bounds, seq_len, batch_size=3, seed=5, drop_last=False)
    batches = list(lanes)
    assert len(batches) == len(lanes) and all(b.tokens.shape == (3, seq_len + 1) for b in batches)
    rows = read_rows(batches, seq_len)
    read = sorted(tuple(f) for row in rows for f in row)
    assert read == sorted(tuple(f.tolist()) for f in files)  # every file once, whole and in order
    for row, lane in zip(rows, lanes.lanes, strict=True):
        assert [f[0] // 20 for f in row] == lane  # the row reads its lane's files in order


def test_pieces_of_files_are_read_from_a_fresh_state_and_join_up_into_the_files():
    files, stream, bounds = files_stream()
    lanes = FileLaneBatches(stream, bounds, 3, batch_size=2, seed=1, drop_last=False, max_windows=2)
    pieces = [piece for row in read_rows(list(lanes), 3) for piece in row]
    assert all(len(piece) - 1 <= 2 * 3 for piece in pieces)  # at most 2 windows of 3 targets
    for f, file in enumerate(files):
        own = sorted((p for p in pieces if p[0] // 20 == f), key=lambda p: p[0])
        joined = own[0] + [s for piece in own[1:] for s in piece[1:]]  # pieces share their edge symbol
        assert joined == file.tolist()


def test_training_stops_with_the_first_lane_and_the_order_changes_with_the_seed():
    _, stream, bounds = files_stream()
    lanes = FileLaneBatches(stream, bounds, 4, batch_size=3, seed=[0, 0])
    totals = [int(lanes.windows[lane].sum()) for lane in lanes.lanes]
    assert len(lanes) == min(totals) and max(totals) - min(totals) <= max(lanes.windows)  # balanced lanes
    assert all(bool(row.any()) for row in (b.tokens != PAD_ID for b in lanes))  # no row of padding only
    orders = {tuple(map(tuple, FileLaneBatches(stream, bounds, 4, 3, seed=[0, epoch]).lanes)) for epoch in range(4)}
    assert len(orders) > 1


def test_cut_pieces_covers_every_target_once():
    bounds = np.array([0, 9, 12, 26])
    starts, ends = cut_pieces(bounds, seq_len=2, max_windows=2)  # 4 targets a piece
    assert starts.tolist() == [0, 4, 9, 12, 16, 20, 24] and ends.tolist() == [5, 9, 12, 17, 21, 25, 26]
    assert [a.tolist() for a in cut_pieces(bounds, 2, None)] == [[0, 9, 12], [9, 12, 26]]


def test_assign_lanes_deals_each_file_to_the_shortest_lane():
    assert assign_lanes([5, 1, 1, 1, 1, 2], lanes=2, order=range(6)) == [[0], [1, 2, 3, 4, 5]]


def test_processes_read_disjoint_lanes_for_as_many_steps():
    _, stream, bounds = files_stream()
    shares = [FileLaneBatches(stream, bounds, 4, 2, seed=1, drop_last=False, rank=r, world_size=2) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1])
    files = [f for share in shares for lane in share.lanes for f in lane]
    assert sorted(files) == list(range(len(LENGTHS)))


def test_loader_workers_keep_the_batch_order():
    _, stream, bounds = files_stream()
    lanes = FileLaneBatches(stream, bounds, 3, 2, seed=2, drop_last=False)
    alone = list(DataLoader(lanes, batch_size=None))
    workers = list(DataLoader(lanes, batch_size=None, num_workers=2))
    assert len(alone) == len(workers) == len(lanes)
    for one, other in zip(alone, workers, strict=True):
        assert torch.equal(one.tokens, other.tokens) and torch.equal(one.reset, other.reset)


def test_datamodule_validates_both_languages_from_the_first_batches(fixture_corpus):
    module = CharDataModule(fixture_corpus, seq_len=32, batch_size=4)
    module.setup()
    first = next(iter(module.val_dataloader()))
    assert isinstance(first, CharBatch) and bool(first.reset.all())
    starts = {int(t) for t in first.tokens[:, 0]}  # each row starts a file with its language's file start
    assert {bos_id("cpp"), bos_id("javascript")} <= starts


def _loss(model, tokens: torch.Tensor, state=None) -> tuple[torch.Tensor, tuple]:
    logits, state = model(tokens[:, :-1], state)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none"), state


def test_module_carries_the_state_across_batches_and_resets_it_where_a_file_starts():
    torch.manual_seed(0)
    module = CharLSTMModule(embed_dim=8, hidden=16, layers=2).eval()  # eval: no dropout, so losses compare
    text = torch.randint(0, 256, (2, 9))
    first, second = text[:, :5], text[:, 4:]  # consecutive windows: the second starts with the first's last symbol
    module.model_step(CharBatch(first, torch.tensor([True, True])), "val")
    loss, count = module.model_step(CharBatch(second, torch.tensor([False, True])), "val")

    whole, _ = _loss(module.model, text[:1])  # row 0 continues: as if the whole text were read at once
    fresh, _ = _loss(module.model, second[1:])  # row 1 starts a file: from zeros
    expected = torch.cat([whole.view(1, -1)[:, 4:], fresh.view(1, -1)]).mean()
    torch.testing.assert_close(loss, expected)
    assert count == 8
    assert set(module.carried) == {"val"} and module.carried["val"][0].shape == (2, 2, 16)
    assert not module.carried["val"][0].requires_grad  # gradients stop at the batch edge

    module.on_validation_epoch_start()  # a new epoch starts from zeros
    assert "val" not in module.carried


def test_plain_windows_start_from_zeros_and_carry_nothing():
    torch.manual_seed(0)
    module = CharLSTMModule(embed_dim=8, hidden=16, layers=1).eval()
    tokens = torch.randint(0, 256, (3, 7))
    loss, count = module.model_step(tokens, "train")
    torch.testing.assert_close(loss, _loss(module.model, tokens)[0].mean())
    assert count == 18 and not module.carried
