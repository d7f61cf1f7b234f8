"""Fetch package archives with the registries' own clients, into a cache that makes re-runs offline."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from codecomp.data_prep.recipe import PackageSpec

log = logging.getLogger(__name__)


class FetchError(RuntimeError):
    """A package that could not be fetched, with the client's own message."""


@dataclasses.dataclass(frozen=True)
class Archive:
    """A fetched archive and what the manifest records about it."""

    path: Path
    registry: str
    name: str
    requested_version: str
    version: str  # the version actually fetched (Debian point releases replace old versions)
    sha256: str

    def manifest_entry(self) -> dict[str, str]:
        return {
            "registry": self.registry,
            "name": self.name,
            "requested_version": self.requested_version,
            "version": self.version,
            "sha256": self.sha256,
            "file": self.path.name,
        }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(package: PackageSpec, cache_dir: Path) -> Archive:
    """The package's archive from the cache, fetching it first if absent or damaged."""
    folder = cache_dir / package.registry
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{package.name}={package.version}".replace("/", "+")
    suffix = ".tgz" if package.registry == "npm" else ".deb"
    archive_path, record_path = folder / (stem + suffix), folder / (stem + ".json")
    if archive_path.exists() and record_path.exists():
        record = json.loads(record_path.read_text())
        if sha256_of(archive_path) == record["sha256"]:
            return Archive(
                archive_path, package.registry, package.name, package.version, record["version"], record["sha256"]
            )
        log.warning("cached %s does not match its recorded sha256; fetching it again", archive_path.name)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        if package.registry == "npm":
            downloaded, version = _npm_pack(package, Path(scratch))
        else:
            downloaded, version = _apt_download(package, Path(scratch))
        os.replace(downloaded, archive_path)
    archive = Archive(archive_path, package.registry, package.name, package.version, version, sha256_of(archive_path))
    record_path.write_text(json.dumps({"version": version, "sha256": archive.sha256}, indent=1) + "\n")
    return archive


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which(command[0]) is None:
        raise FetchError(f"`{command[0]}` is not installed; it is needed to fetch packages")
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def _npm_pack(package: PackageSpec, scratch: Path) -> tuple[Path, str]:
    result = _run(["npm", "pack", f"{package.name}@{package.version}", "--json", "--silent"], scratch)
    if result.returncode != 0:
        raise FetchError(f"npm pack {package.name}@{package.version} failed: {result.stderr.strip()[-500:]}")
    info = json.loads(result.stdout)[0]
    return scratch / info["filename"], info["version"]


_apt_lists_updated = False


def _apt_download(package: PackageSpec, scratch: Path) -> tuple[Path, str]:
    """`apt-get download NAME=VERSION`, updating the package lists once and falling back to the
    current version when a point release has replaced the pinned one."""
    global _apt_lists_updated
    attempts = [f"{package.name}={package.version}", f"{package.name}={package.version}", package.name]
    errors = []
    for attempt, spec in enumerate(attempts):
        if attempt == 1:
            if _apt_lists_updated:
                continue
            log.info("apt-get update (package lists may be missing or stale)")
            _run(["apt-get", "update", "-qq"], scratch)
            _apt_lists_updated = True
        result = _run(["apt-get", "download", "-qq", spec], scratch)
        debs = sorted(scratch.glob("*.deb"))
        if result.returncode == 0 and debs:
            if spec == package.name:
                log.warning("%s=%s is gone from the mirror; using the current version", package.name, package.version)
            version = _run(["dpkg-deb", "-f", str(debs[0]), "Version"], scratch).stdout.strip()
            return debs[0], version
        errors.append(result.stderr.strip()[-300:])
    raise FetchError(f"apt-get download {package.name} failed: {' | '.join(errors)}")
