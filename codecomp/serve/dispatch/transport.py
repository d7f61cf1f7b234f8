"""The frontend's side of the RPC transport: `send / receive / close` over frames addressed to peers.

`ZmqRouter` is the real one: a ZeroMQ ROUTER socket that containers (DEALER sockets, on this host or
another) connect to. `InProcessRouter` is the same interface over asyncio queues, for tests.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import zmq
import zmq.asyncio


class RouterTransport(Protocol):
    async def send(self, peer: bytes, frame: bytes) -> None: ...

    async def receive(self) -> tuple[bytes, bytes]:
        """The next (peer identity, frame) from any connected container."""
        ...

    def close(self) -> None: ...


class ZmqRouter:
    """A ROUTER socket bound at `address` (e.g. `tcp://127.0.0.1:5570`, or port 0 for any free port)."""

    def __init__(self, address: str) -> None:
        self.context = zmq.asyncio.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a frame to a gone peer fails loudly, not silently
        if address.endswith(":0"):
            port = self.socket.bind_to_random_port(address[: address.rindex(":")])
            address = f"{address[: address.rindex(':')]}:{port}"
        else:
            self.socket.bind(address)
        self.address = address

    async def send(self, peer: bytes, frame: bytes) -> None:
        await self.socket.send_multipart([peer, frame])

    async def receive(self) -> tuple[bytes, bytes]:
        peer, frame = await self.socket.recv_multipart()
        return peer, frame

    def close(self) -> None:
        self.socket.close()
        self.context.term()


class InProcessRouter:
    """The router interface over asyncio queues; `connect` gives a container-side endpoint."""

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
        self._peers: dict[bytes, asyncio.Queue[bytes]] = {}

    def connect(self, identity: bytes) -> InProcessDealer:
        self._peers[identity] = asyncio.Queue()
        return InProcessDealer(identity, self._inbox, self._peers[identity])

    async def send(self, peer: bytes, frame: bytes) -> None:
        if peer not in self._peers:
            raise zmq.ZMQError(zmq.EHOSTUNREACH, f"no peer {peer!r}")
        await self._peers[peer].put(frame)

    async def receive(self) -> tuple[bytes, bytes]:
        return await self._inbox.get()

    def close(self) -> None:
        self._peers.clear()


class InProcessDealer:
    """A container's end of an `InProcessRouter`."""

    def __init__(self, identity: bytes, outbox: asyncio.Queue[tuple[bytes, bytes]], inbox: asyncio.Queue[bytes]):
        self.identity, self._outbox, self._inbox = identity, outbox, inbox

    async def send(self, frame: bytes) -> None:
        await self._outbox.put((self.identity, frame))

    async def receive(self) -> bytes:
        return await self._inbox.get()
