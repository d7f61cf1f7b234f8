"""Per-split, per-language corpus shards: source text for character models, CodeTrees for tree models.

A shard is a folder `<corpus>/<split>/<language>/` holding:
    files.json          [{path, project, offset, length}] for every file, in order
    text.bin            the files' bytes, concatenated
    trees/*.npy         the CodeTrees of the files that parse cleanly enough, concatenated
    trees/meta.json     file index of each tree, value table and kind names
Arrays are plain .npy files, so a reader memory-maps them and writing is deterministic.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from codecomp.parsing import CodeTree, kind_names
from codecomp.parsing.codetree import NO_VALUE, children_csr

_NODE_ARRAYS = ("kinds", "named", "values", "parents", "starts", "ends", "depth", "height")


@dataclasses.dataclass(frozen=True)
class ShardFile:
    path: str
    project: str
    text: bytes


def write_text_shard(folder: Path, files: Sequence[ShardFile]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    index, offset = [], 0
    with (folder / "text.bin").open("wb") as out:
        for file in files:
            out.write(file.text)
            index.append({"path": file.path, "project": file.project, "offset": offset, "length": len(file.text)})
            offset += len(file.text)
    (folder / "files.json").write_text(json.dumps(index, indent=0) + "\n")


def write_tree_shard(folder: Path, language: str, trees: Sequence[CodeTree], file_index: Sequence[int]) -> None:
    """Write CodeTrees of one language; `file_index[t]` is tree t's position in files.json."""
    folder = folder / "trees"
    folder.mkdir(parents=True, exist_ok=True)
    table: dict[str, int] = {}
    global_values = []
    for tree in trees:
        local_to_global = np.array([table.setdefault(text, len(table)) for text in tree.value_table] + [NO_VALUE])
        # NO_VALUE (-1) indexes the appended -1, so inner nodes stay NO_VALUE.
        global_values.append(local_to_global[tree.values].astype(np.int32))
    sizes = np.array([len(tree) for tree in trees], dtype=np.int64)
    arrays = {name: _concat([getattr(tree, name) for tree in trees]) for name in _NODE_ARRAYS}
    arrays["values"] = _concat(global_values)
    arrays["tree_ptr"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    arrays["error_bytes"] = np.array([tree.error_bytes for tree in trees], dtype=np.int64)
    arrays["n_bytes"] = np.array([tree.n_bytes for tree in trees], dtype=np.int64)
    arrays["file_index"] = np.asarray(file_index, dtype=np.int64)
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array, allow_pickle=False)
    used_kinds = sorted({int(k) for k in np.unique(arrays["kinds"])})
    names = kind_names(language)
    meta = {"language": language, "value_table": list(table), "kind_names": {str(k): names[k] for k in used_kinds}}
    (folder / "meta.json").write_text(json.dumps(meta, ensure_ascii=False) + "\n")


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)


class TextShard:
    """The files of one split and language, as bytes."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.files = json.loads((self.folder / "files.json").read_text())
        self.text = (
            np.memmap(self.folder / "text.bin", dtype=np.uint8, mode="r") if self._size() else np.zeros(0, np.uint8)
        )

    def _size(self) -> int:
        return (self.folder / "text.bin").stat().st_size

    def __len__(self) -> int:
        return len(self.files)

    def document(self, index: int) -> bytes:
        entry = self.files[index]
        return self.text[entry["offset"] : entry["offset"] + entry["length"]].tobytes()

    def __iter__(self) -> Iterator[bytes]:
        return (self.document(i) for i in range(len(self)))


class TreeShard:
    """The CodeTrees of one split and language; node arrays memory-mapped and shared by all trees.

    `values` index the shard-wide `value_table`; `tree(i)` rebuilds a standalone CodeTree.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder) / "trees"
        meta = json.loads((self.folder / "meta.json").read_text())
        self.language: str = meta["language"]
        self.value_table: list[str] = meta["value_table"]
        self.kind_names: dict[int, str] = {int(k): v for k, v in meta["kind_names"].items()}
        load = lambda name: np.load(self.folder / f"{name}.npy", mmap_mode="r")  # noqa: E731
        self.arrays = {name: load(name) for name in _NODE_ARRAYS}
        self.tree_ptr, self.file_index = load("tree_ptr"), load("file_index")
        self.error_bytes, self.n_bytes = load("error_bytes"), load("n_bytes")

    def __len__(self) -> int:
        return len(self.file_index)

    @property
    def node_count(self) -> int:
        return int(self.tree_ptr[-1])

    def tree(self, index: int) -> CodeTree:
        lo, hi = int(self.tree_ptr[index]), int(self.tree_ptr[index + 1])
        part = {name: np.array(array[lo:hi]) for name, array in self.arrays.items()}
        global_ids = part["values"]
        leaf_ids, local = np.unique(global_ids[global_ids >= 0], return_inverse=True)
        values = np.full(hi - lo, NO_VALUE, dtype=np.int32)
        values[global_ids >= 0] = local
        child_ptr, children = children_csr(part["parents"])
        return CodeTree(
            language=self.language,
            kinds=part["kinds"],
            named=part["named"],
            values=values,
            value_table=tuple(self.value_table[i] for i in leaf_ids.tolist()),
            parents=part["parents"],
            child_ptr=child_ptr,
            children=children,
            starts=part["starts"],
            ends=part["ends"],
            depth=part["depth"],
            height=part["height"],
            error_bytes=int(self.error_bytes[index]),
            n_bytes=int(self.n_bytes[index]),
        )

    def __iter__(self) -> Iterator[CodeTree]:
        return (self.tree(i) for i in range(len(self)))
