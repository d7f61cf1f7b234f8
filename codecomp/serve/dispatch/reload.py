"""Hot reload: a model's checkpoint replaced while it serves, without a request failed or late because of it.

    check the file (torch-free), hash it: the version the new containers will announce
    -> start the new version's containers beside the serving ones, one after another (forkserver; warm-up
       before their hello)
    -> once every new replica said hello, one step of the event loop switches the model to them
    -> the old replicas answer the batches they hold, then exit

Anything wrong before the switch (a missing or damaged file, a container that fails to load it, a checkpoint
of another family or made with other grammar versions, no hello within the supervisor's start-up timeout)
kills the new containers and refuses the reload: the old version never stopped serving. Caches never mix
versions: answers carry the version that computed them and are stored under it (`service/completion.py`).
The selection and correction state is keyed by model name, not by version (`service/learning.py`), so the
new version starts from the weights the old one had earned.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from pathlib import Path

import zmq

from codecomp.checkpoint import CheckpointError, check_file
from codecomp.serve import protocol
from codecomp.serve.dispatch.dispatcher import Dispatcher, Replica
from codecomp.serve.dispatch.supervisor import Slot, Supervisor

log = logging.getLogger(__name__)


class ReloadRefused(RuntimeError):
    """The reload did not happen (the old version keeps serving); `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Reloaded:
    model: str
    checkpoint: str
    version: str  # now served
    previous: str  # served before
    changed: bool  # False: the file holds the version already served, and nothing was done
    seconds: float  # from the request to the old containers' exit


def file_version(path: str | Path) -> str:
    """The version `codecomp.checkpoint.load` gives a checkpoint: a hash of its bytes (16 hex digits), computed
    here without torch (tests/test_hot_reload.py checks that the two agree)."""
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=8).hexdigest()


class Reloader:
    """Replaces the checkpoint of a supervised model while it serves; one reload of a model at a time.

    Args:
        drain_timeout_s: how long old replicas may take to answer the batches they hold (their requests'
            deadlines bound it); past it, their batches go back to the queue for the new replicas.
    """

    def __init__(self, dispatcher: Dispatcher, supervisor: Supervisor, drain_timeout_s: float = 10.0) -> None:
        self.dispatcher, self.supervisor, self.drain_timeout_s = dispatcher, supervisor, drain_timeout_s
        self._busy: set[str] = set()

    async def reload(self, model: str, checkpoint: str | None = None) -> Reloaded:
        """Serve `model` from `checkpoint` (None: the file it serves from now, read again).

        Raises:
            ReloadRefused: 404 no such model; 409 a reload of it is under way; 422 the checkpoint was refused
                (the old version keeps serving).
        """
        spec = self.supervisor.spec(model)
        if spec is None:
            served = ", ".join(sorted(self.dispatcher.endpoints))
            raise ReloadRefused(404, f"no model {model!r} with supervised containers here (served: {served})")
        if model in self._busy:  # checked and marked in one step: a second request cannot slip in between
            raise ReloadRefused(409, f"a reload of {model!r} is under way; try again when it is done")
        self._busy.add(model)
        try:
            return await self._reload(model, checkpoint or spec.checkpoint)
        finally:
            self._busy.discard(model)

    async def reload_changed(self) -> list[Reloaded]:
        """Reload every model whose checkpoint file now holds another version (SIGHUP); refusals are logged."""
        done = []
        for model in list(self.dispatcher.endpoints):
            if self.supervisor.spec(model) is None:
                continue
            try:
                done.append(await self.reload(model))
            except ReloadRefused as refused:
                log.error("reload of %s refused: %s", model, refused)
        return done

    async def _reload(self, model: str, path: str) -> Reloaded:
        started = time.monotonic()
        endpoint = self.dispatcher.endpoints[model]
        previous = endpoint.version
        try:
            check_file(path)
            version = await asyncio.to_thread(file_version, path)
        except (CheckpointError, OSError) as error:
            raise ReloadRefused(422, f"model {model!r}: {error}; the old version keeps serving") from None
        if version == previous:
            log.info("%s: %s holds version %s, already served", model, path, version)
            return Reloaded(model, path, version, previous, False, time.monotonic() - started)
        log.info("%s: reloading from %s (version %s, was %s)", model, path, version, previous)
        endpoint.staging = version  # the dispatcher holds hellos of this version apart until `promote`
        slots = self.supervisor.stage(model, path)
        try:
            await self._until_ready(model, path, slots)
        except BaseException:
            self.unstage(model)
            await self.supervisor.discard(slots)
            raise
        # No await between these two: the switch is one step of the event loop.
        old_replicas = self.promote(model)
        old_slots = self.supervisor.adopt(model, slots)
        await self.retire(old_replicas)
        await self.supervisor.stop_slots(old_slots)
        took = time.monotonic() - started
        log.info("%s: version %s serves; the old containers are gone (%.2f s)", model, version, took)
        return Reloaded(model, path, version, previous, True, took)

    async def _until_ready(self, model: str, path: str, slots: list[Slot]) -> None:
        """Start the new containers one after another (each one more process competing with the serving replicas
        for the cores), until every one has said hello; raises ReloadRefused when one fails or holds another
        family."""
        endpoint = self.dispatcher.endpoints[model]
        launched: list[Slot] = []
        seen: set[bytes] = set()
        while True:
            seen.update(endpoint.staged)
            if len(launched) < len(slots) and all(slot.identity in endpoint.staged for slot in launched):
                self.supervisor.launch(slots[len(launched)], endpoint.family)
                launched.append(slots[len(launched)])
            for slot in launched:
                replica = endpoint.staged.get(slot.identity)
                why = None
                if replica is not None and endpoint.family and replica.family != endpoint.family:
                    why = f"it holds a {replica.family!r} model, and {model!r} serves {endpoint.family!r}"
                elif replica is None and slot.identity in seen:
                    why = "its container stopped beating after its hello"
                elif replica is None:
                    why = self.supervisor.failure(slot)
                if why is not None:
                    raise ReloadRefused(422, f"model {model!r}: {path} refused ({why}); the old version keeps serving")
            if len(endpoint.staged) == len(slots):
                return
            await asyncio.sleep(0.05)

    def unstage(self, model: str) -> None:
        """Forget a failed reload's replicas (the supervisor kills their processes)."""
        endpoint = self.dispatcher.endpoints[model]
        for identity in endpoint.staged:
            self.dispatcher.replicas.pop(identity, None)
        self.dispatcher.retired.update(endpoint.staged)
        endpoint.staged.clear()
        endpoint.staging = ""

    def promote(self, model: str) -> list[Replica]:
        """Switch `model` to its staged replicas in one step of the event loop; returns the old replicas.

        From here on, every batch is taken by a new replica (the queue is the model's, so requests waiting in it
        go to them too). An old replica takes no new request; those it holds are still answered (it stays in the
        dispatcher's `replicas` until `retire`), or retried on a new replica if it is lost meanwhile.
        """
        endpoint = self.dispatcher.endpoints[model]
        old = list(endpoint.replicas.values())
        for replica in old:
            replica.alive = False  # its worker stops once its requests in flight are answered
            if replica.worker is not None and not replica.busy:
                replica.worker.cancel()  # idle in the queue
        endpoint.replicas, endpoint.staged = endpoint.staged, {}
        endpoint.version, endpoint.staging = endpoint.staging, ""
        for replica in endpoint.replicas.values():
            endpoint.family = replica.family
            self.dispatcher.start_worker(endpoint, replica)
        endpoint.replicas_changed()
        self.dispatcher.metrics.replicas.labels(model).set(endpoint.live_replicas)
        log.info("%s now serves version %s (%d replicas)", model, endpoint.version, endpoint.live_replicas)
        return old

    async def retire(self, replicas: list[Replica]) -> None:
        """Once the old `replicas` have answered the requests they hold (or `drain_timeout_s` passed: then those go
        back to the queue), tell them to exit and forget them."""
        dispatcher = self.dispatcher
        give_up = time.monotonic() + self.drain_timeout_s
        while time.monotonic() < give_up and any(r.identity in dispatcher.replicas and dispatcher.holds(r)
                                                 for r in replicas):  # fmt: skip
            await asyncio.sleep(0.005)
        for replica in replicas:
            dispatcher.retired.add(replica.identity)
            if dispatcher.replicas.get(replica.identity) is replica:
                with contextlib.suppress(zmq.ZMQError):
                    await dispatcher.transport.send(replica.identity, protocol.pack(protocol.Shutdown()))
                dispatcher.lose(replica.identity, "retired by a reload")
