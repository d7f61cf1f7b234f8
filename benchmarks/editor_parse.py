"""How damaged the tree is at editor-like holes, with and without closing the statement being typed.

    python -m benchmarks.editor_parse [--corpus data/small] [--split test] [--holes 300]

The holes are those `codecomp-eval` scores (`hole_eval.sample_eval_holes`, same seed): in the editor setting
the file is cut from the hole to the end of its statement, and the placeholder stands at the cursor. Per
language, the share of holes whose placeholder lies under an ERROR node and the ERROR nodes per tree, parsed
as the text is (`cut=False`) and with the statement's open brackets closed and `;` added (`cut=True`,
`codecomp/text/brackets.py`), and the share where no identifier parses at the cursor at all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from codecomp.data.hole_settings import cursor_text, parse_at_cursor
from codecomp.data.holes import DEFAULT_TARGET_KINDS
from codecomp.evaluation.hole_eval import sample_eval_holes
from codecomp.parsing import CodeTree, kind_names


def under_error(tree: CodeTree, leaf: int) -> bool:
    names = kind_names(tree.language)
    node = leaf
    while node >= 0:
        if names[int(tree.kinds[node])] == "ERROR":
            return True
        node = int(tree.parents[node])
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("data/small"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--holes", type=int, default=300, help="per language, as codecomp-eval's holes.per_language")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{args.corpus} [{args.split}], editor-like holes: placeholder under ERROR / ERROR nodes per tree")
    for language in DEFAULT_TARGET_KINDS:
        holes = sample_eval_holes(args.corpus, args.split, language, DEFAULT_TARGET_KINDS, args.holes, args.seed)
        row = [f"{language:<11}{len(holes):>4} holes"]
        for cut in (False, True):
            damaged, errors, missing = [], [], 0
            for hole in holes:
                text, cursor = cursor_text(hole.document, hole.start, "editor", hole.cut_end)
                parsed = parse_at_cursor(text[:cursor], text[cursor:], language, cut=cut)
                if parsed is None:
                    missing += 1
                    continue
                tree, leaf = parsed
                damaged.append(under_error(tree, leaf))
                names = kind_names(language)
                errors.append(sum(names[int(k)] == "ERROR" for k in tree.kinds))
            row.append(
                f"{'closed' if cut else 'as typed'}: {np.mean(damaged):6.1%} / {np.mean(errors):4.1f}"
                f" (no identifier parses: {missing})"
            )
        print("   ".join(row))


if __name__ == "__main__":
    main()
