"""Starts this host's model containers as processes and restarts any that die or hang.

Processes come from a forkserver that has imported torch and the completers once, so a restart
costs a fork and a checkpoint load (well under the 2 s budget) instead of a fresh interpreter. The
frontend itself never imports the container code (nor torch): the forkserver does, by module name.
Every process started here dies with the frontend, however the frontend dies (`codecomp.serve.lifeline`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import multiprocessing
import time
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any

from codecomp.serve import lifeline
from codecomp.serve.dispatch.dispatcher import Dispatcher
from codecomp.serve.dispatch.metrics import Metrics
from codecomp.serve.protocol import Options

log = logging.getLogger(__name__)
# Imported by the forkserver, never by the frontend: first the one that ties the forkserver to the frontend.
FORKSERVER_MODULE = "codecomp.serve.container.forkserver"
CONTAINER_MODULE = "codecomp.serve.container.process"


@dataclasses.dataclass(frozen=True)
class ContainerSpec:
    model: str
    checkpoint: str
    replicas: int = 1
    threads: int = 1
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # passed to the container's runner
    warmup_batch: int = 0  # before its hello a container answers dummy batches of 1, 2, 4, ... up to this size
    options: Options | None = None  # the model's options, for the warm-up's shapes


@dataclasses.dataclass
class _Slot:
    spec: ContainerSpec
    index: int
    generation: int = 0
    process: BaseProcess | None = None
    identity: bytes = b""
    started: float = 0.0
    joined: bool = False  # it said hello to the frontend at least once
    crashes: int = 0  # consecutive exits soon after start, for back-off
    not_before: float = 0.0


def _context() -> ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([FORKSERVER_MODULE, CONTAINER_MODULE])
    return context


def _run_container(*args: Any, **kwargs: Any) -> None:
    """A container process's entry point (the container module is already loaded in the forkserver)."""
    importlib.import_module(CONTAINER_MODULE).serve_container(*args, **kwargs)


class Supervisor:
    """Keeps `spec.replicas` live processes per spec; dead or silent ones are killed and replaced.

    Args:
        address: the frontend's router address the containers connect to.
        startup_timeout_s: how long a new process may take to say hello before it counts as hung.
    """

    def __init__(
        self, dispatcher: Dispatcher, address: str, specs: list[ContainerSpec], metrics: Metrics,
        heartbeat_s: float = 0.2, check_s: float = 0.05, startup_timeout_s: float = 60.0,
    ) -> None:  # fmt: skip
        self.dispatcher, self.address, self.metrics = dispatcher, address, metrics
        self.heartbeat_s, self.check_s, self.startup_timeout_s = heartbeat_s, check_s, startup_timeout_s
        self.slots = [_Slot(spec, i) for spec in specs for i in range(spec.replicas)]
        self.restarts = 0
        self._context = _context()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start every container. Call it from the event loop's thread: the forkserver dies with the thread
        that starts it (the parent-death signal), and this one lives as long as the frontend."""
        lifeline.mark_parent()
        for slot in self.slots:
            self._spawn(slot)
        self._task = asyncio.create_task(self._loop())

    async def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Until every slot's container has joined the frontend (raises TimeoutError)."""
        give_up = time.monotonic() + timeout_s
        while not all(slot.identity in self.dispatcher.replicas for slot in self.slots):
            failed = [s for s in self.slots if s.crashes and not s.joined]
            if failed:
                raise RuntimeError(
                    f"container of model {failed[0].spec.model!r} ({failed[0].spec.checkpoint}) exited before it "
                    "could serve: see its log above"
                )
            if time.monotonic() > give_up:
                missing = [s.identity.decode() for s in self.slots if s.identity not in self.dispatcher.replicas]
                raise TimeoutError(f"containers not ready after {timeout_s:.0f} s: {missing}")
            await asyncio.sleep(0.05)

    def pids(self) -> dict[str, int]:
        return {slot.identity.decode(): slot.process.pid or 0 for slot in self.slots if slot.process is not None}

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for slot in self.slots:
            if slot.process is not None and slot.process.is_alive():
                slot.process.terminate()
        for slot in self.slots:
            if slot.process is not None:
                await asyncio.to_thread(slot.process.join, 5)
                if slot.process.is_alive():
                    slot.process.kill()

    def _spawn(self, slot: _Slot) -> None:
        slot.generation += 1
        slot.identity = f"{slot.spec.model}-{slot.index}-g{slot.generation}".encode()
        slot.process = self._context.Process(
            target=_run_container,
            args=(self.address, slot.spec.checkpoint, slot.spec.model, slot.identity.decode()),
            kwargs={
                "heartbeat_s": self.heartbeat_s,
                "threads": slot.spec.threads,
                "exit_with_parent": True,
                "warmup_batch": slot.spec.warmup_batch,
                "options": slot.spec.options,
                **slot.spec.settings,
            },
            name=f"codecomp-container-{slot.identity.decode()}",
            daemon=True,
        )
        slot.process.start()
        slot.started, slot.joined = time.monotonic(), False

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            now = time.monotonic()
            for slot in self.slots:
                self._check(slot, now)

    def _check(self, slot: _Slot, now: float) -> None:
        process = slot.process
        if process is None:  # waiting out a back-off
            if now >= slot.not_before:
                self._spawn(slot)
            return
        if slot.identity in self.dispatcher.replicas:
            slot.joined, slot.crashes = True, 0
        if not process.is_alive():
            reason = f"process exited with code {process.exitcode}"
        elif slot.joined and slot.identity not in self.dispatcher.replicas:
            reason = "stopped beating"  # the frontend dropped it for silence: it is hung
        elif not slot.joined and now - slot.started > self.startup_timeout_s:
            reason = f"no hello within {self.startup_timeout_s:.0f} s"
        else:
            return
        log.warning("container %s: %s; restarting", slot.identity.decode(), reason)
        self.dispatcher.lose(slot.identity, reason)
        if process.is_alive():
            process.kill()
        process.join(1)
        self.restarts += 1
        self.metrics.restarts.labels(slot.spec.model).inc()
        if slot.joined:
            self._spawn(slot)
        else:  # it never came up (a bad checkpoint, say): back off instead of spinning
            slot.crashes += 1
            slot.process, slot.not_before = None, now + min(30.0, 0.5 * 2**slot.crashes)
