"""CodeTree structure on small inline sources, complete and partial."""

import numpy as np
import pytest

from codecomp.parsing import (
    HOLE,
    NO_VALUE,
    Forest,
    UnknownLanguageError,
    kind_names,
    language_for_path,
    leaf_at,
    level_order,
    mark_hole,
    parse,
)
from codecomp.parsing.languages import parser


def sexp(tree):
    return tree.sexp(kind_names(tree.language).__getitem__)


def kinds(tree):
    names = kind_names(tree.language)
    return [names[int(k)] for k in tree.kinds]


def test_javascript_structure_is_exact():
    tree = parse(b"let x = f(1);", "javascript")
    assert sexp(tree) == (
        "(program (lexical_declaration (variable_declarator (identifier)"
        " (call_expression (identifier) (arguments (number))))))"
    )
    assert kinds(tree) == [
        "program", "lexical_declaration", "let", "variable_declarator", "identifier", "=",
        "call_expression", "identifier", "arguments", "(", "number", ")", ";",
    ]  # fmt: skip
    assert tree.parents.tolist() == [-1, 0, 1, 1, 3, 3, 3, 6, 6, 8, 8, 8, 1]
    assert tree.depth.tolist() == [0, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 5, 2]
    assert tree.height.tolist() == [5, 4, 0, 3, 0, 0, 2, 0, 1, 0, 0, 0, 0]
    leaves = [tree.value(i) for i in np.flatnonzero(tree.is_leaf)]
    assert leaves == ["let", "x", "=", "f", "(", "1", ")", ";"]
    assert tree.values[0] == NO_VALUE
    assert tree.children_of(1).tolist() == [2, 3, 12]
    assert (tree.starts[4], tree.ends[4]) == (4, 5)
    assert tree.error_bytes == 0


def test_cpp_structure_is_exact():
    tree = parse(b"int main() { return a + 1; }", path="main.cc")
    assert tree.language == "cpp"
    assert sexp(tree) == (
        "(translation_unit (function_definition (primitive_type) (function_declarator (identifier) (parameter_list))"
        " (compound_statement (return_statement (binary_expression (identifier) (number_literal))))))"
    )
    named_leaves = [tree.value(i) for i in np.flatnonzero(tree.is_leaf & tree.named)]
    assert named_leaves == ["int", "main", "a", "1"]


def test_matches_tree_sitter_walk():
    source = b"class A { int f(int x) const { return x * 2; } };\ntemplate <typename T> T g(T t) { return t; }\n"
    tree = parse(source, "cpp")
    ts_tree = parser("cpp").parse(source)
    assert len(tree) == ts_tree.root_node.descendant_count
    assert sexp(tree) == _named_only(str(ts_tree.root_node))
    # CSR children agree with parents and are in source order.
    for node in range(len(tree)):
        children = tree.children_of(node)
        assert (tree.parents[children] == node).all()
        assert (np.diff(tree.starts[children]) >= 0).all()
    assert (tree.parents[1:] < np.arange(1, len(tree))).all()


def _named_only(ts_sexp: str) -> str:
    import re

    return re.sub(r"\w+: ", "", ts_sexp)


def test_partial_javascript_keeps_identifiers():
    tree = parse(b"foo(ba", "javascript")
    assert sexp(tree) == "(program (ERROR (identifier) (identifier)))"
    assert tree.error_bytes == 6 and tree.error_share == 1.0
    cursor = leaf_at(tree, 6)
    assert cursor is not None and tree.value(cursor.node) == "ba" and cursor.partial == b"ba"


def test_cut_cpp_with_unclosed_brace_parses():
    source = b"int main() {\n  std::vector<int> values;\n  val"
    tree = parse(source, "cpp")
    identifiers = {tree.value(i) for i in np.flatnonzero(tree.is_leaf & tree.named)}
    assert {"main", "std", "vector", "values", "val"} <= identifiers
    cursor = leaf_at(tree, len(source))
    assert cursor is not None and cursor.partial == b"val"
    cursor = leaf_at(tree, len(source) - 2)  # inside the word: only what is before the cursor counts
    assert cursor is not None and cursor.partial == b"v"


def test_leaf_at_after_whitespace_and_punctuation():
    source = b"a.b( c"
    tree = parse(source, "javascript")
    assert leaf_at(tree, 0) is None
    after_paren = leaf_at(tree, 5)  # "a.b( |c": the leaf before is "(" and no word is typed
    assert after_paren is not None and tree.value(after_paren.node) == "(" and after_paren.partial == b""
    after_dot = leaf_at(tree, 2)
    assert after_dot is not None and tree.value(after_dot.node) == "." and after_dot.partial == b""
    with pytest.raises(ValueError, match="outside the source"):
        leaf_at(tree, len(source) + 1)


def test_byte_offsets_with_multibyte_text():
    source = 'const s = "été"; x'.encode()
    tree = parse(source, "javascript")
    x = leaf_at(tree, len(source))
    assert x is not None and tree.value(x.node) == "x"
    assert tree.starts[x.node] == len(source) - 1  # bytes, not characters: "été" is 5 bytes
    assert "été" in tree.value_table


def test_mark_hole_hides_one_leaf():
    tree = parse(b"a = b;", "javascript")
    b_leaf = next(i for i in np.flatnonzero(tree.is_leaf) if tree.value(i) == "b")
    holed = mark_hole(tree, int(b_leaf))
    assert holed.values[b_leaf] == HOLE and holed.value(int(b_leaf)) is None
    assert tree.value(int(b_leaf)) == "b"  # the original is untouched
    assert (holed.kinds == tree.kinds).all()
    with pytest.raises(ValueError, match="not a leaf"):
        mark_hole(tree, 0)


def test_deep_nesting_needs_no_recursion():
    depth = 20_000
    tree = parse(b"x = " + b"(" * depth + b"1" + b")" * depth + b";", "javascript")
    assert tree.depth.max() > depth and tree.height[0] == tree.depth.max()
    assert sexp(tree).count("(parenthesized_expression") == depth


def test_level_orders_and_forest():
    trees = [parse(b"f(a, b);", "javascript"), parse(b"int x;", "cpp")]
    forest = Forest.from_trees(trees)
    assert len(forest) == sum(len(t) for t in trees)
    assert forest.tree_ptr.tolist() == [0, len(trees[0]), len(forest)]
    assert forest.parents[len(trees[0])] == -1  # the second root
    assert forest.parents[len(trees[0]) + 1] == len(trees[0])
    for height, level in enumerate(forest.by_height):
        assert (forest.height[level] == height).all()
        # bottom-up: every child is in an earlier level than its parent
        has_parent = level[forest.parents[level] >= 0]
        assert (forest.height[forest.parents[has_parent]] > height).all()
    for depth, level in enumerate(forest.by_depth):
        assert (forest.depth[level] == depth).all()
    assert sum(len(level) for level in forest.by_depth) == len(forest)
    assert [g.tolist() for g in level_order(np.array([1, 0, 1, 2]))] == [[1], [0, 2], [3]]


def test_language_inference_and_bad_input():
    assert language_for_path("src/a.MJS") == "javascript"
    assert language_for_path("x/y.hpp") == "cpp"
    with pytest.raises(UnknownLanguageError):
        language_for_path("README.md")
    with pytest.raises(UnknownLanguageError):
        parse(b"x", "python")
    with pytest.raises(TypeError):
        parse("text", "javascript")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        parse(b"x")
