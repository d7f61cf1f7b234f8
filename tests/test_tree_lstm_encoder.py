"""The level-batched BiTreeEncoder against its per-node recursive reference, on real parsed code."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from benchmarks.tree_lstm_reference import reference_encode
from codecomp.data.tree_batch import TreeBatch
from codecomp.models.components.tree_lstm import BiTreeEncoder, ChildSumCell, TopDownCell
from codecomp.parsing import CodeTree, parse

N_KINDS, N_VALUES, EMBED, HIDDEN = 97, 53, 8, 12

CPP = [
    b"int main() { return 0; }",
    b"#include <vector>\nint sum(const std::vector<int>& v) {\n  int s = 0;\n  for (int x : v) s += x;\n"
    b"  return s;\n}\n",
    b"template <typename T> struct Box { T value; T get() const { return value; } };\n",
    b"int f(int a) { if (a > 1) { return f(a - 1) * a; } else { return 1; } }",
]
JAVASCRIPT = [
    b"const x = 1;",
    b"function add(a, b) {\n  return a + b;\n}\nconsole.log(add(1, 2));\n",
    b"class A { constructor() { this.items = [1, 2, 3].map((v) => v * 2); } }\n",
    b"if (ready) { go(() => { let y = {k: [1, {z: 2}]}; }); }",
]


def _ids(tree: CodeTree) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic stand-in vocabulary: kinds modulo the table, values shifted (HOLE -> padding 0)."""
    return tree.kinds.astype(np.int64) % N_KINDS, np.clip(tree.values.astype(np.int64) + 2, 0, N_VALUES - 1)


def _batch(trees: list[CodeTree]) -> TreeBatch:
    ids = [_ids(tree) for tree in trees]
    return TreeBatch.from_trees(trees, [k for k, _ in ids], [v for _, v in ids])


def _encoder(upward_only: bool = False, seed: int = 0) -> BiTreeEncoder:
    torch.manual_seed(seed)
    return BiTreeEncoder(N_KINDS, N_VALUES, EMBED, HIDDEN, upward_only=upward_only).double()


@pytest.fixture(scope="module")
def trees() -> list[CodeTree]:
    return [parse(source, "cpp") for source in CPP] + [parse(source, "javascript") for source in JAVASCRIPT]


@pytest.mark.parametrize("index", range(len(CPP) + len(JAVASCRIPT)))
def test_batched_equals_reference_per_tree(trees, index):
    encoder, tree = _encoder(), trees[index]
    batched = encoder(_batch([tree]))
    assert batched.shape == (len(tree), 2 * HIDDEN) and encoder.output_dim == 2 * HIDDEN
    torch.testing.assert_close(batched, reference_encode(encoder, *_ids(tree), tree), atol=1e-5, rtol=0)


def test_forest_slices_equal_references(trees):
    assert len({int(tree.height[0]) for tree in trees}) > 3  # trees of different heights share levels
    encoder, batch = _encoder(), _batch(trees)
    out = encoder(batch)
    assert out.shape == (sum(map(len, trees)), 2 * HIDDEN) and batch.n_trees == len(trees)
    ptr = batch.tree_ptr.tolist()
    for t, tree in enumerate(trees):
        torch.testing.assert_close(
            out[ptr[t] : ptr[t + 1]], reference_encode(encoder, *_ids(tree), tree), atol=1e-5, rtol=0
        )


def test_float32_matches_reference(trees):
    encoder = _encoder().float()
    out = encoder(_batch(trees[:2]))
    expected = torch.cat([reference_encode(encoder, *_ids(tree), tree) for tree in trees[:2]])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_upward_only_is_first_half(trees):
    both, up = _encoder(), _encoder(upward_only=True, seed=1)
    missing, unexpected = up.load_state_dict(both.state_dict(), strict=False)
    assert not missing and all(key.startswith("down.") for key in unexpected)
    batch = _batch(trees)
    up_out = up(batch)
    assert up.output_dim == HIDDEN and up_out.shape == (len(batch), HIDDEN)
    torch.testing.assert_close(up_out, both(batch)[:, :HIDDEN], atol=1e-12, rtol=0)
    torch.testing.assert_close(up_out[: len(trees[0])], reference_encode(up, *_ids(trees[0]), trees[0]))


def test_gradients_reach_every_parameter_and_match_reference(trees):
    encoder, chosen = _encoder(), [trees[1], trees[5]]
    weights = torch.randn(
        sum(map(len, chosen)), 2 * HIDDEN, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    (encoder(_batch(chosen)) * weights).sum().backward()
    batched = {name: p.grad.clone() for name, p in encoder.named_parameters()}
    for name, grad in batched.items():
        assert grad is not None and grad.abs().sum() > 0, name
    assert batched["value_embed.weight"][0].abs().sum() == 0  # padding row
    encoder.zero_grad()
    (torch.cat([reference_encode(encoder, *_ids(tree), tree) for tree in chosen]) * weights).sum().backward()
    for name, p in encoder.named_parameters():
        torch.testing.assert_close(batched[name], p.grad, atol=1e-8, rtol=1e-6, msg=name)


def test_tree_deeper_than_the_recursion_limit():
    limit = sys.getrecursionlimit()
    tree = parse(b"int x = " + b"(" * limit + b"1" + b")" * limit + b";", "cpp")
    assert int(tree.height[0]) > limit
    encoder, batch = _encoder(), _batch([tree, parse(b"int y;", "cpp")])
    expected = reference_encode(encoder, *_ids(tree), tree)
    assert sys.getrecursionlimit() == limit  # restored
    torch.testing.assert_close(encoder(batch)[: len(tree)], expected, atol=1e-5, rtol=0)


def test_single_node_tree():
    tree = parse(b"", "cpp")  # an empty translation_unit: one node
    assert len(tree) == 1
    encoder, batch = _encoder(), _batch([tree])
    assert batch.up_sizes == [1] and batch.down_sizes == [1]
    torch.testing.assert_close(encoder(batch), reference_encode(encoder, *_ids(tree), tree))
    mixed = _batch([tree, parse(b"int x;", "cpp"), tree])  # single nodes beside a deeper tree
    assert mixed.tree_ptr.tolist()[-1] == len(mixed) and encoder(mixed).shape == (len(mixed), 2 * HIDDEN)


def test_schedule(trees):
    batch = _batch(trees)
    parents, levels = batch.parents, len(batch.up_sizes)
    chunks: list[dict[int, torch.Tensor]] = []  # per level: reader level -> the rows it reads
    for h, nodes in enumerate(batch.by_height):
        readers, splits = batch.up_readers[h], batch.up_splits[h]
        assert readers == sorted(readers) and readers[0] > h and readers[-1] <= levels and min(splits) > 0
        chunks.append(dict(zip(readers, nodes.split(splits), strict=True)))
        children = batch.up_children[h]
        assert torch.equal(parents[children], nodes[batch.up_parent_row[h]])  # rows point at the parents
        if h:  # the children arrive as the chunks of lower levels, in level order
            assert torch.equal(torch.cat([parts[h] for parts in chunks[:h] if h in parts]), children)
    roots = sum(len(parts.get(levels, [])) for parts in chunks)
    assert int((parents < 0).sum()) == len(trees) == roots == batch.down_sizes[0]
    by_depth = batch.by_depth
    for d, nodes in enumerate(by_depth):  # inner nodes first, then leaves
        inner = batch.down_inner_sizes[d]
        assert not batch.is_leaf[nodes[:inner]].any() and batch.is_leaf[nodes[inner:]].all()
    for d, nodes in enumerate(by_depth[1:]):
        above = by_depth[d][: batch.down_inner_sizes[d]]  # the inner nodes above: the parents, each once
        assert torch.equal(parents[nodes], above[batch.down_parent_index[d + 1]])
        assert set(above.tolist()) == set(parents[nodes].tolist())
    pairs = torch.stack([batch.input_kinds, batch.input_values], 1)  # distinct inputs
    assert len(pairs.unique(dim=0)) == len(pairs)
    assert torch.equal(batch.input_kinds[batch.up_input], batch.kind_ids[batch.up_perm])
    assert torch.equal(batch.input_values[batch.down_input], batch.value_ids[batch.down_perm])


def test_child_sum_cell_by_hand():
    torch.manual_seed(0)
    cell = ChildSumCell(3, 2).double()
    x = torch.randn(3, 3, dtype=torch.float64)  # rows: parent, leaf a, leaf b
    W_i, W_o, W_u = cell.W_iou.weight.chunk(3)
    b_i, b_o, b_u = cell.W_iou.bias.chunk(3)
    U_i, U_o, U_u = cell.U_iou.weight.chunk(3)
    W_f, b_f, U_f = cell.W_f.weight, cell.W_f.bias, cell.U_f.weight

    def leaf(x_j):
        i, o, u = torch.sigmoid(W_i @ x_j + b_i), torch.sigmoid(W_o @ x_j + b_o), torch.tanh(W_u @ x_j + b_u)
        return o * torch.tanh(i * u), i * u

    (h_a, c_a), (h_b, c_b) = leaf(x[1]), leaf(x[2])
    h_sum = h_a + h_b
    i = torch.sigmoid(W_i @ x[0] + U_i @ h_sum + b_i)
    o = torch.sigmoid(W_o @ x[0] + U_o @ h_sum + b_o)
    u = torch.tanh(W_u @ x[0] + U_u @ h_sum + b_u)
    f_a, f_b = torch.sigmoid(W_f @ x[0] + U_f @ h_a + b_f), torch.sigmoid(W_f @ x[0] + U_f @ h_b + b_f)
    c = i * u + f_a * c_a + f_b * c_b
    h = o * torch.tanh(c)

    none = torch.zeros(0, 2, dtype=torch.float64)
    leaves_h, leaves_c = cell(x[1:], none, none, torch.zeros(0, dtype=torch.int64))
    torch.testing.assert_close(leaves_h, torch.stack([h_a, h_b]))
    torch.testing.assert_close(leaves_c, torch.stack([c_a, c_b]))
    root_h, root_c = cell(x[:1], leaves_h, leaves_c, torch.zeros(2, dtype=torch.int64))
    torch.testing.assert_close(root_h[0], h)
    torch.testing.assert_close(root_c[0], c)


def test_fast_level_steps_equal_the_cells():
    torch.manual_seed(0)
    up, down = ChildSumCell(3, 4).double(), TopDownCell(3, 4).double()
    x, h_up = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    child_h, child_c = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 4, dtype=torch.float64)
    parent = torch.tensor([0, 0, 1, 2, 2, 2, 4])
    none = torch.zeros(0, 4, dtype=torch.float64)
    iou_in, f_in = up.project_inputs(x)
    torch.testing.assert_close(
        up.level(iou_in.clone(), f_in[parent], child_h, child_c, parent), up(x, child_h, child_c, parent)
    )
    torch.testing.assert_close(up.leaf(iou_in.clone()), up(x, none, none, torch.zeros(0, dtype=torch.int64)))
    parent_h, parent_c = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    index = torch.tensor([0, 1, 1, 0, 1])  # five children of two parents
    gates = down.add_up_(down.project_inputs(x), h_up)
    expected = down(x, h_up, (parent_h[index], parent_c[index]))
    torch.testing.assert_close(down.level(gates + down.project_parents(parent_h)[index], parent_c[index]), expected)
    torch.testing.assert_close(down.level(gates.clone(), None), down(x, h_up, None))


def test_batch_checks_its_arguments(trees):
    kinds, values = _ids(trees[0])
    with pytest.raises(ValueError):
        TreeBatch.from_trees([], [], [])
    with pytest.raises(ValueError):
        TreeBatch.from_trees([trees[0]], [kinds[:-1]], [values])
    with pytest.raises(ValueError, match="too large"):  # their pair keys would overflow int64
        TreeBatch.from_trees([trees[0]], [kinds + 2**40], [values + 2**40])
    with pytest.raises(ValueError, match=">= 0"):
        TreeBatch.from_trees([trees[0]], [kinds], [np.full_like(values, -1)])


@pytest.mark.gpu
def test_cuda_matches_cpu(trees):
    encoder, batch = _encoder().float(), _batch(trees)
    expected = encoder(batch)
    out = encoder.cuda()(batch.to("cuda"))
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), expected, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())
