"""Corpus recipes: which packages, versions, sub-folders and splits make a corpus."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

from codecomp.parsing import LANGUAGES

SPLITS = ("train", "valid", "test")
REGISTRIES = ("npm", "deb")


class RecipeError(ValueError):
    """A recipe that cannot be built as written."""


@functools.cache
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """`*` and `?` stay inside one folder, `**/` spans zero or more folders, `/**` ends in anything."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def glob_match(path: str, pattern: str) -> bool:
    return _glob_regex(pattern).fullmatch(path) is not None


def matches_any(path: str, patterns: Sequence[str]) -> bool:
    return any(glob_match(path, pattern) for pattern in patterns)


@dataclasses.dataclass(frozen=True)
class PackageSpec:
    """One registry package of a recipe (see conf/recipe/small.yaml for the keys)."""

    name: str
    registry: str
    version: str
    language: str
    split: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    root: str = ""
    inner_archive: str = ""
    family: str = ""
    max_file_bytes: int | None = None
    project_depth: int = 0
    project_splits: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"package {self.name!r}"
        if self.registry not in REGISTRIES:
            raise RecipeError(f"{where}: registry must be one of {REGISTRIES}, not {self.registry!r}")
        if self.language not in LANGUAGES:
            raise RecipeError(f"{where}: language must be one of {LANGUAGES}, not {self.language!r}")
        for split in (self.split, *self.project_splits):
            if split not in SPLITS:
                raise RecipeError(f"{where}: split must be one of {SPLITS}, not {split!r}")
        if not self.include:
            raise RecipeError(f"{where}: `include` lists no pattern")
        if self.project_splits and not self.project_depth:
            raise RecipeError(f"{where}: `project_splits` needs `project_depth`")

    def locate(self, member: str) -> str | None:
        """The path of an archive member relative to `root` if the recipe keeps it, else None."""
        root = self.root.strip("/")
        if root:
            if not member.startswith(root + "/"):
                return None
            member = member[len(root) + 1 :]
        if matches_any(member, self.include) and not matches_any(member, self.exclude):
            return member
        return None

    def project_of(self, relative_path: str) -> str:
        """The project a kept file belongs to: the package, or a sub-folder of it."""
        if not self.project_depth:
            return self.name
        parts = relative_path.split("/")[: self.project_depth]
        return "/".join([self.name, *parts])

    def split_of(self, project: str) -> str:
        sub_project = project[len(self.name) + 1 :]
        for split, projects in self.project_splits.items():
            if sub_project in projects:
                return split
        return self.split


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    packages: tuple[PackageSpec, ...]

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Recipe:
        """Build from a plain mapping (the Hydra `recipe` node), checking it as a whole."""
        packages = []
        for entry in config.get("packages") or []:
            fields = dict(entry)
            for key in ("include", "exclude"):
                fields[key] = tuple(fields.get(key) or ())
            fields["version"] = str(fields.get("version", ""))
            fields["project_splits"] = {k: tuple(v) for k, v in (fields.get("project_splits") or {}).items()}
            try:
                packages.append(PackageSpec(**fields))
            except TypeError as error:
                raise RecipeError(f"package {fields.get('name')!r}: {error}") from None
        recipe = cls(name=str(config["name"]), packages=tuple(packages))
        recipe._check()
        return recipe

    def _check(self) -> None:
        if not self.packages:
            raise RecipeError(f"recipe {self.name!r} lists no package")
        seen: set[tuple[str, str]] = set()
        family_split: dict[str, str] = {}
        for package in self.packages:
            key = (package.registry, package.name)
            if key in seen:
                raise RecipeError(f"package {package.name!r} is listed twice")
            seen.add(key)
            if package.family:
                split = family_split.setdefault(package.family, package.split)
                if split != package.split:
                    raise RecipeError(
                        f"family {package.family!r} spans splits {split!r} and {package.split!r}: "
                        "forks of one code base must share a split"
                    )
