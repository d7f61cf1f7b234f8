"""Read the kept source files out of fetched archives, streaming, without unpacking to disk."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import tarfile
from collections.abc import Callable, Iterator

from codecomp.data_prep.fetch import Archive
from codecomp.data_prep.recipe import PackageSpec, glob_match


@dataclasses.dataclass(frozen=True)
class ArchiveFile:
    """A kept file: its path relative to the package's `root`, and its bytes (None when it is
    larger than the size bound, which is then all we need to know about it)."""

    path: str
    size: int
    data: bytes | None


def archive_files(package: PackageSpec, archive: Archive, max_bytes: int) -> Iterator[ArchiveFile]:
    """The files of `archive` that `package` keeps, in archive order."""
    if archive.registry == "npm":
        with tarfile.open(archive.path, mode="r:gz") as tar:
            # npm tarballs hold one top folder, usually `package/`; paths are relative to it.
            yield from _kept(tar, package, max_bytes, strip=lambda name: name.split("/", 1)[-1])
        return
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(archive.path)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            if not package.inner_archive:
                yield from _kept(tar, package, max_bytes, strip=_strip_dot)
            else:
                for member in tar:
                    if member.isfile() and glob_match(_strip_dot(member.name), package.inner_archive):
                        inner = tar.extractfile(member)
                        assert inner is not None
                        with tarfile.open(fileobj=io.BytesIO(inner.read()), mode="r:*") as inner_tar:
                            yield from _kept(inner_tar, package, max_bytes, strip=_strip_dot)
        proc.stdout.read()  # drain, so dpkg-deb exits cleanly
    if proc.returncode != 0:
        raise RuntimeError(f"dpkg-deb could not read {archive.path.name} (exit {proc.returncode})")


def _strip_dot(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def _kept(
    tar: tarfile.TarFile, package: PackageSpec, max_bytes: int, strip: Callable[[str], str]
) -> Iterator[ArchiveFile]:
    for member in tar:
        if not member.isfile():  # links, folders and devices carry no source of their own
            continue
        path = package.locate(strip(member.name))
        if path is None:
            continue
        if member.size > max_bytes:
            yield ArchiveFile(path, member.size, None)
            continue
        handle = tar.extractfile(member)
        assert handle is not None
        yield ArchiveFile(path, member.size, handle.read())
