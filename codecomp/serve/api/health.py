"""`/v1/health`: Tabby's health state (what its editor clients read on connecting), then ours.

Tabby's clients take the server as ready when this answers 2xx, ask it with POST when GET gets 405, read
`model` (no model: completions are off), `device` and `version.git_describe` (semver-coerced: below
0.9.0 they ask nothing of Tabby's newer endpoints, which codecomp does not have).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from pydantic import BaseModel, Field

from codecomp.serve.api.server import Server


class VersionOut(BaseModel):
    build_date: str = Field(description="the date of the commit running (YYYY-MM-DD), or unknown")
    build_timestamp: str = Field(description="the time of that commit (ISO 8601), or unknown")
    git_sha: str = Field(description="that commit, or unknown outside a git checkout")
    git_describe: str = Field(description="codecomp and its version: `codecomp v0.1.0`")


class ModelHealth(BaseModel):
    family: str
    version: str
    replicas: int = Field(description="live containers")
    queue: int = Field(description="requests waiting")


class StoreHealth(BaseModel):
    backend: str = Field(description="sqlite or redis")
    status: str = Field(description="ok, or degraded while the shared store is unreachable (events buffered)")
    buffered: int = Field(description="feedback events waiting locally for the shared store")


class HealthOut(BaseModel):
    model: str = Field(description="the served models, comma-separated")
    device: str
    arch: str
    cpu_info: str
    cpu_count: int
    cuda_devices: list[str]
    version: VersionOut
    status: str = Field(description="ok, or degraded while a model has no live container")
    models: dict[str, ModelHealth]
    store: StoreHealth


def health_of(server: Server) -> HealthOut:
    models = {
        name: ModelHealth(family=e.family, version=e.version, replicas=e.live_replicas, queue=len(e.queue))
        for name, e in server.endpoints.items()
    }
    ok = all(e.live_replicas > 0 for e in server.endpoints.values())
    degraded, buffered = server.store.health()
    store = StoreHealth(backend=server.store.backend, status="degraded" if degraded else "ok", buffered=buffered)
    return HealthOut(
        model=",".join(models), device="cpu", arch=platform.machine(), cpu_info=platform.processor(),
        cpu_count=os.cpu_count() or 1, cuda_devices=[], version=build_version(), status="ok" if ok else "degraded",
        models=models, store=store,
    )  # fmt: skip


def package_version() -> str:
    try:
        return importlib.metadata.version("codecomp")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def build_version() -> VersionOut:
    """The installed codecomp's version, and the commit of the checkout it runs from when there is one."""
    sha = timestamp = "unknown"
    root = Path(__file__).resolve().parents[3]  # the checkout's root for a source install, else site-packages
    try:
        if (root / ".git").exists():  # only codecomp's own checkout, not a project the environment sits in
            shown = subprocess.run(["git", "log", "-1", "--format=%H %cI"], cwd=root, capture_output=True,
                                   text=True, timeout=5, check=True).stdout.split()  # fmt: skip
            if len(shown) == 2:
                sha, timestamp = shown
    except (OSError, subprocess.SubprocessError):
        pass  # no git: the version alone
    return VersionOut(build_date=timestamp[:10] if sha != "unknown" else "unknown", build_timestamp=timestamp,
                      git_sha=sha, git_describe=f"codecomp v{package_version()}")  # fmt: skip
