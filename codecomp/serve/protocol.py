"""The wire protocol between the frontend and model containers: msgpack maps, versioned (see PROTOCOL.md)."""

from __future__ import annotations

from typing import Any

import msgpack

VERSION = 1
# Message types; who sends them.
HELLO = "hello"  # container -> frontend, once connected and loaded
HEARTBEAT = "heartbeat"  # container -> frontend, every heartbeat interval while idle or between batches
PREDICT = "predict"  # frontend -> container: a batch
RESULT = "result"  # container -> frontend: the batch's candidates
ERROR = "error"  # container -> frontend: the batch failed, or a message could not be read
SHUTDOWN = "shutdown"  # frontend -> container: exit cleanly

TYPES = {HELLO, HEARTBEAT, PREDICT, RESULT, ERROR, SHUTDOWN}

WireCandidate = tuple[bytes, float, bool]  # (text to insert, log-probability, complete) in a RESULT


class ProtocolError(ValueError):
    """A message that is not msgpack, not a map, of another protocol version, or of an unknown type."""


def pack(kind: str, **fields: Any) -> bytes:
    """Encode one message; every message carries the protocol version `v` and its `type`."""
    return msgpack.packb({"v": VERSION, "type": kind, **fields}, use_bin_type=True)


def unpack(frame: bytes) -> dict[str, Any]:
    """Decode and check one message."""
    try:
        message = msgpack.unpackb(frame, raw=False)
    except (msgpack.UnpackException, ValueError) as error:
        raise ProtocolError(f"not a msgpack message: {error}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a map")
    if message.get("v") != VERSION:
        raise ProtocolError(f"protocol version {message.get('v')!r}, this side speaks {VERSION}")
    if message.get("type") not in TYPES:
        raise ProtocolError(f"unknown message type {message.get('type')!r}")
    return message
