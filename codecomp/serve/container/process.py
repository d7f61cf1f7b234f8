"""A model container: one process that loads a checkpoint through its completer and answers batches.

The container connects a DEALER socket to the frontend's ROUTER (on this host or over TCP from
another), says hello, then answers `predict` batches and sends a heartbeat whenever it is between
batches. Heartbeats come from the same loop that computes, so a container stuck in a batch stops
beating and the frontend's supervisor sees it hung. Run one by hand on another host with
`python -m codecomp.serve.container.process --frontend tcp://HOST:PORT --checkpoint PATH --model NAME`.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Protocol

import torch
import zmq

from codecomp.inference import CompletionRequest, load_checkpoint
from codecomp.inference.char_lstm import CharLSTMCompleter, CharState
from codecomp.inference.tree_lstm import HoleRequest, NoHole, TreeLSTMCompleter
from codecomp.serve import protocol
from codecomp.serve.protocol import WireCandidate
from codecomp.serve.service.cache import digest

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Options:
    """How much work one batch may do; the frontend asks for less under load (smaller answers)."""

    k: int = 3
    beam: int = 4
    max_chars: int = 80

    @classmethod
    def from_wire(cls, options: dict[str, Any]) -> Options:
        return cls(**{f.name: int(options[f.name]) for f in dataclasses.fields(cls) if f.name in options})


class Runner(Protocol):
    family: str

    def predict(
        self, requests: list[dict[str, Any]], deadlines: list[float], options: Options
    ) -> list[list[WireCandidate]]:
        """Candidates per request; `deadlines` are `time.monotonic()` instants an anytime model stops at."""
        ...


class PrefixStateCache:
    """Char-LSTM states of recent prefixes per session, so one more keystroke costs one more character.

    For each session (user, file, language) the states read at the last `per_session` prefixes are
    kept, each with a digest of its prefix (not the prefix: files can be large); a new prefix resumes
    from the longest of them that it still starts with (typing goes on from the newest, a deletion
    from an older one).
    """

    def __init__(self, sessions: int = 1024, per_session: int = 8) -> None:
        self.sessions, self.per_session = sessions, per_session
        self._entries: collections.OrderedDict[str, dict[int, tuple[bytes, CharState]]] = collections.OrderedDict()
        self.hits = self.misses = 0

    def lookup(self, session: str, prefix: bytes, max_gap: int) -> tuple[CharState, bytes] | None:
        """The state of the longest cached prefix of `prefix` within `max_gap` bytes, and the rest to read."""
        states = self._entries.get(session)
        if states is not None:
            self._entries.move_to_end(session)
            for length in sorted(states, reverse=True):
                if len(prefix) - length > max_gap:
                    break
                stored, state = states[length]
                if length <= len(prefix) and digest((prefix[:length],)) == stored:
                    self.hits += 1
                    return state, prefix[length:]
        self.misses += 1
        return None

    def store(self, session: str, prefix: bytes, state: CharState) -> None:
        states = self._entries.pop(session, {})
        states.pop(len(prefix), None)
        states[len(prefix)] = (digest((prefix,)), state)  # dicts keep insertion order: newest last
        for length in list(states)[: -self.per_session]:
            del states[length]
        self._entries[session] = states
        while len(self._entries) > self.sessions:
            self._entries.popitem(last=False)


class CharLSTMRunner:
    """Line completions with incremental state: a known session's prefix is advanced, not re-read."""

    family = "char_lstm"

    def __init__(self, completer: CharLSTMCompleter, states: PrefixStateCache | None = None) -> None:
        self.completer = completer
        self.states = states if states is not None else PrefixStateCache()

    def predict(
        self, requests: list[dict[str, Any]], deadlines: list[float], options: Options
    ) -> list[list[WireCandidate]]:
        sessions = [r["session"] for r in requests]
        resumed = [
            self.states.lookup(s, r["prefix"], self.completer.max_context)
            for s, r in zip(sessions, requests, strict=True)
        ]
        fresh = [i for i, hit in enumerate(resumed) if hit is None]
        encoded = self.completer.encode(
            [requests[i]["prefix"] for i in fresh], [requests[i]["language"] for i in fresh]
        )
        states: list[CharState] = [None] * len(requests)  # type: ignore[list-item]
        for i, state in zip(fresh, encoded, strict=True):
            states[i] = state
        warm = [i for i, hit in enumerate(resumed) if hit is not None]
        advanced = self.completer.advance_many(
            [resumed[i][0] for i in warm],  # type: ignore[index]
            [resumed[i][1] for i in warm],  # type: ignore[index]
        )
        for i, state in zip(warm, advanced, strict=True):
            states[i] = state
        for session, request, state in zip(sessions, requests, states, strict=True):
            self.states.store(session, request["prefix"], state)
        completion_requests = [CompletionRequest(r["prefix"], r["language"], r["suffix"]) for r in requests]
        results = self.completer.complete(
            completion_requests, options.k, options.beam, options.max_chars, deadline=deadlines, states=states
        )
        return [[(c.text, c.log_prob, c.complete) for c in candidates if c.text] for candidates in results]


class TreeLSTMRunner:
    """The token at the cursor, read from a window of whole lines around it (cost bounded in file size)."""

    family = "tree_lstm"

    def __init__(self, completer: TreeLSTMCompleter, window_bytes: int = 4096) -> None:
        self.completer, self.window_bytes = completer, window_bytes

    def predict(
        self, requests: list[dict[str, Any]], deadlines: list[float], options: Options
    ) -> list[list[WireCandidate]]:
        examples, partials, rows = [], [], []
        for row, request in enumerate(requests):
            before, after = self._window(request["prefix"], request["suffix"])
            try:
                example, partial = self.completer.hole_example(
                    HoleRequest(before + after, len(before), request["language"])
                )
            except NoHole:
                continue  # inside a string or comment: no token to offer
            examples.append(example)
            partials.append(partial)
            rows.append(row)
        results: list[list[WireCandidate]] = [[] for _ in requests]
        if examples:
            for row, partial, candidates in zip(
                rows, partials, self.completer.rank(examples, partials, options.k), strict=True
            ):
                results[row] = [
                    (c.text[len(partial) :], c.log_prob, True) for c in candidates if len(c.text) > len(partial)
                ]
        return results

    def _window(self, prefix: bytes, suffix: bytes) -> tuple[bytes, bytes]:
        before = prefix[-self.window_bytes :]
        if len(before) < len(prefix) and b"\n" in before:
            before = before[before.index(b"\n") + 1 :]  # start at a line start
        after = suffix[: self.window_bytes // 2]
        if len(after) < len(suffix) and b"\n" in after:
            after = after[: after.rindex(b"\n") + 1]
        return before, after


def load_runner(checkpoint: str | Path, **settings: Any) -> Runner:
    """The runner for a checkpoint's model family (raises CheckpointError for a bad file)."""
    family = load_checkpoint(checkpoint, None)["codecomp"]["family"]
    if family == CharLSTMRunner.family:
        # A fresh session reads at most this much prefix (training windows are 256 bytes); later
        # keystrokes advance its cached state instead.
        completer = CharLSTMCompleter.from_checkpoint(checkpoint, max_context=settings.pop("max_context", 256))
        return CharLSTMRunner(completer, PrefixStateCache(**settings))
    if family == TreeLSTMRunner.family:
        return TreeLSTMRunner(TreeLSTMCompleter.from_checkpoint(checkpoint), **settings)
    raise ValueError(f"no container for model family {family!r}")


def checkpoint_version(path: str | Path) -> str:
    """A short content hash: cache keys change when the checkpoint does."""
    hasher = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


class ContainerCore:
    """What a container does with one message, apart from sockets (the loop below, or a test's)."""

    def __init__(self, runner: Runner, model: str, version: str, rpc_margin_s: float = 0.003) -> None:
        self.runner, self.model, self.version = runner, model, version
        self.rpc_margin_s = rpc_margin_s  # the answer must still travel back before the deadline

    def hello(self, kind: str = protocol.HELLO) -> bytes:
        return protocol.pack(
            kind, model=self.model, family=self.runner.family, version=self.version, pid=os.getpid(),
            host=socket.gethostname(),
        )  # fmt: skip

    def handle(self, frame: bytes, received_at: float) -> bytes | None:
        """The reply to one frame; None for shutdown."""
        try:
            message = protocol.unpack(frame)
        except protocol.ProtocolError as error:
            return protocol.pack(protocol.ERROR, batch=None, message=str(error))
        if message["type"] == protocol.SHUTDOWN:
            return None
        if message["type"] != protocol.PREDICT:
            return protocol.pack(protocol.ERROR, batch=None, message=f"a container does not take {message['type']}")
        batch = message.get("batch")
        try:
            requests = list(message["requests"])
            deadlines = [received_at + float(r["budget_ms"]) / 1000 - self.rpc_margin_s for r in requests]
            results = self.runner.predict(requests, deadlines, Options.from_wire(message["options"]))
        except Exception as error:  # a bad batch must not take the container down
            log.exception("batch %s failed", batch)
            return protocol.pack(protocol.ERROR, batch=batch, message=f"{type(error).__name__}: {error}")
        now = time.monotonic()
        # An answer with unfinished lines whose deadline has passed was cut short by it.
        cut_short = [now >= d and any(not c[2] for c in r) for d, r in zip(deadlines, results, strict=True)]
        return protocol.pack(
            protocol.RESULT, batch=batch, results=results, compute_ms=(now - received_at) * 1000, cut_short=cut_short
        )


def serve_container(
    frontend: str, checkpoint: str | Path, model: str, replica: str, heartbeat_s: float = 0.2, threads: int = 1,
    exit_with_parent: bool = False, **settings: Any,
) -> None:  # fmt: skip
    """Load the model, connect to the frontend and answer until told to shut down.

    With `exit_with_parent` (a supervised container) it also exits when the process that started it
    is gone, so a frontend killed outright leaves no orphans behind.
    """
    parent = os.getppid()
    torch.set_num_threads(threads)  # replicas share the machine's cores: one thread each unless told
    core = ContainerCore(load_runner(checkpoint, **settings), model, checkpoint_version(checkpoint))
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, replica.encode())
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(frontend)
    sock.send(core.hello())
    last_beat = time.monotonic()
    log.info("container %s (%s) connected to %s", replica, model, frontend)
    try:
        while True:
            if sock.poll(int(heartbeat_s * 1000)):
                frame = sock.recv()
                reply = core.handle(frame, time.monotonic())
                if reply is None:
                    break
                sock.send(reply)
            if time.monotonic() - last_beat >= heartbeat_s:
                if exit_with_parent and os.getppid() != parent:
                    log.warning("container %s: its supervisor is gone; exiting", replica)
                    break
                sock.send(core.hello(protocol.HEARTBEAT))
                last_beat = time.monotonic()
    finally:
        sock.close()
        context.term()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one model container and connect it to a codecomp frontend.")
    parser.add_argument("--frontend", required=True, help="the frontend's container address, tcp://HOST:PORT")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--model", required=True, help="the model name the frontend serves it under")
    parser.add_argument("--replica", default=f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve_container(args.frontend, args.checkpoint, args.model, args.replica, threads=args.threads)


if __name__ == "__main__":
    main()
