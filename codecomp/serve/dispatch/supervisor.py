"""Starts this host's model containers as processes and restarts any that die or hang.

Processes come from a forkserver that has imported torch and the completers once, so a restart
costs a fork and a checkpoint load (well under the 2 s budget) instead of a fresh interpreter. The
frontend itself never imports the container code (nor torch): the forkserver does, by module name.
Every process started here dies with the frontend, however the frontend dies (`codecomp.serve.lifeline`).
A container that fails before it could serve says why through a queue (`errors`), so that start-up and
hot reloads (`dispatch/reload.py`, which starts a new version's containers beside the old ones) report it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import itertools
import logging
import multiprocessing
import time
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from multiprocessing.queues import SimpleQueue
from typing import Any

from codecomp.checkpoint import CheckpointError, load
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
class Slot:
    """One replica's place: the process filling it now, replaced when it dies."""

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


def _run_container(errors: SimpleQueue[tuple[str, str]], family: str, *args: Any, **kwargs: Any) -> None:
    """A container process's entry point (the container module is already loaded in the forkserver); puts
    (identity, why) on `errors` when it fails, `family` (when known) being the one it must hold."""
    checkpoint, identity = args[1], args[3]
    try:
        importlib.import_module(CONTAINER_MODULE).serve_container(*args, **kwargs)
    except Exception as error:
        errors.put((identity, _why(error, checkpoint, family)))
        raise


def _why(error: Exception, checkpoint: str, family: str) -> str:
    """What a person should read: a checkpoint of another family fails with whatever its completer makes of the
    model's settings (a TypeError), so on that path only the file is read again to name its family."""
    if isinstance(error, CheckpointError):
        return str(error)
    if family:
        try:
            load(checkpoint, family=family, check_grammars=False)
        except CheckpointError as wrong:
            return str(wrong)
        except Exception:  # the original error says more
            pass
    return f"{type(error).__name__}: {error}"


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
        self.slots = [Slot(spec, i) for spec in specs for i in range(spec.replicas)]
        self.staged: list[Slot] = []  # a reload's new containers, until they take over or are killed
        self.restarts = 0
        self.errors: dict[bytes, str] = {}  # why a container failed, by identity
        self._context = _context()
        self._errors: SimpleQueue[tuple[str, str]] = self._context.SimpleQueue()
        self._generations = itertools.count(1)  # identities are never reused, across slots and reloads
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
                why = self.errors.get(failed[0].identity, "see its log above")
                raise RuntimeError(
                    f"container of model {failed[0].spec.model!r} ({failed[0].spec.checkpoint}) exited before it "
                    f"could serve: {why}"
                )
            if time.monotonic() > give_up:
                missing = [s.identity.decode() for s in self.slots if s.identity not in self.dispatcher.replicas]
                raise TimeoutError(f"containers not ready after {timeout_s:.0f} s: {missing}")
            await asyncio.sleep(0.05)

    def pids(self) -> dict[str, int]:
        return {slot.identity.decode(): slot.process.pid or 0 for slot in self.slots if slot.process is not None}

    async def stop_watching(self) -> None:
        """No more restarts (the frontend is stopping: its dispatcher lets every container go)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def stop(self) -> None:
        await self.stop_watching()
        await self.stop_slots([*self.slots, *self.staged])

    async def stop_slots(self, slots: list[Slot], timeout_s: float = 5.0) -> None:
        """Stop these containers (told to shut down already, or not): TERM, then KILL after `timeout_s`."""
        for slot in slots:
            if slot.process is not None and slot.process.is_alive():
                slot.process.terminate()
        for slot in slots:
            if slot.process is not None:
                await asyncio.to_thread(slot.process.join, timeout_s)
                if slot.process.is_alive():
                    slot.process.kill()
                    await asyncio.to_thread(slot.process.join, 1)

    # -- hot reload ----------------------------------------------------------------------------------

    def spec(self, model: str) -> ContainerSpec | None:
        """The spec `model`'s containers run (after a reload: the new checkpoint's)."""
        return next((slot.spec for slot in self.slots if slot.spec.model == model), None)

    def stage(self, model: str, checkpoint: str) -> list[Slot]:
        """Places for `model`'s replicas on `checkpoint`, beside the serving ones; `launch` starts each."""
        spec = self.spec(model)
        assert spec is not None, model
        slots = [Slot(dataclasses.replace(spec, checkpoint=checkpoint), i) for i in range(spec.replicas)]
        self.staged += slots
        return slots

    def launch(self, slot: Slot, family: str) -> None:
        """Start a staged slot's container; `family`: the model family its checkpoint must hold ("": any)."""
        self._spawn(slot, family)

    def failure(self, slot: Slot) -> str | None:
        """Why a launched staged container is out (None while it runs); call it until it said hello."""
        self._read_errors()
        if slot.process is None:
            return None
        if not slot.process.is_alive():
            why = self.errors.get(slot.identity, "see its log")
            return f"its container exited with code {slot.process.exitcode}: {why}"
        if time.monotonic() - slot.started > self.startup_timeout_s:
            return f"its container did not say hello within {self.startup_timeout_s:.0f} s"
        return None

    def adopt(self, model: str, slots: list[Slot]) -> list[Slot]:
        """Supervise the staged `slots` as `model`'s containers from now on; returns the old slots (no longer
        restarted: the caller stops them)."""
        old = [slot for slot in self.slots if slot.spec.model == model]
        self.slots = [slot for slot in self.slots if slot.spec.model != model] + slots
        self.staged = [slot for slot in self.staged if slot not in slots]
        return old

    async def discard(self, slots: list[Slot]) -> None:
        """Kill a failed reload's containers."""
        self.staged = [slot for slot in self.staged if slot not in slots]
        await self.stop_slots(slots, timeout_s=1.0)

    def _spawn(self, slot: Slot, family: str = "") -> None:
        self.errors.pop(slot.identity, None)
        slot.generation = next(self._generations)
        slot.identity = f"{slot.spec.model}-{slot.index}-g{slot.generation}".encode()
        slot.process = self._context.Process(
            target=_run_container,
            args=(self._errors, family, self.address, slot.spec.checkpoint, slot.spec.model, slot.identity.decode()),
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
            self._read_errors()
            now = time.monotonic()
            for slot in self.slots:
                self._check(slot, now)

    def _read_errors(self) -> None:
        while not self._errors.empty():
            identity, why = self._errors.get()
            self.errors[identity.encode()] = why
            log.error("container %s failed: %s", identity, why)

    def _check(self, slot: Slot, now: float) -> None:
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
