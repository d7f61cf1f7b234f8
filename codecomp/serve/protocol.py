"""The wire protocol between the frontend and model containers: typed msgpack messages (see PROTOCOL.md).

Every message is a msgpack map with the protocol version `v` and its `type`; msgspec encodes and
decodes them straight to and from these structs, and a frame that does not fit (not msgpack, another
version, an unknown type, a wrong field) is a `ProtocolError`. Source text travels as raw bytes.
"""

from __future__ import annotations

import msgspec

VERSION = 1


class ProtocolError(ValueError):
    """A message that is not msgpack, not a map, of another protocol version, or of an unknown type."""


class Options(msgspec.Struct, frozen=True):
    """How much work one batch may do; the frontend asks for less under load (smaller answers)."""

    k: int = 3  # candidates per request
    beam: int = 4  # beam width
    max_chars: int = 80  # bytes per line


class WireRequest(msgspec.Struct, frozen=True):
    """One request of a batch. `session` (user, file and language) keys a line model's prefix state;
    `budget_ms` is the time left until the request's deadline when the batch was sent (relative, so the
    clocks of different hosts need not agree): an anytime model stops each request at its own."""

    prefix: bytes
    suffix: bytes
    language: str
    session: str
    budget_ms: float


class WireCandidate(msgspec.Struct, frozen=True, array_like=True):
    """A candidate in a RESULT: the text to insert at the cursor, its natural-log probability under the
    model, and whether it is complete (False for a line cut short). On the wire: [text, log_prob, complete]."""

    text: bytes
    log_prob: float
    complete: bool = True


class _Message(msgspec.Struct, tag_field="type", kw_only=True):
    v: int = VERSION


class Hello(_Message, tag="hello"):
    """Container -> frontend, once connected and loaded; `Heartbeat` (same fields) while idle or between batches."""

    model: str  # the name the frontend serves it under
    family: str  # the checkpoint's model family
    version: str  # a content hash of the checkpoint (it keys the prediction caches)
    pid: int
    host: str


class Heartbeat(Hello, tag="heartbeat"):
    pass


class Predict(_Message, tag="predict"):
    """Frontend -> container: a batch."""

    batch: int
    requests: list[WireRequest]
    options: Options


class Result(_Message, tag="result"):
    """Container -> frontend: per request its candidates, best first, and whether the deadline cut it short."""

    batch: int
    results: list[list[WireCandidate]]
    compute_ms: float
    cut_short: list[bool]


class Error(_Message, tag="error"):
    """Container -> frontend: the batch failed (`batch` None for a frame that could not be read)."""

    batch: int | None
    message: str


class Shutdown(_Message, tag="shutdown"):
    """Frontend -> container: exit cleanly."""


Message = Hello | Heartbeat | Predict | Result | Error | Shutdown

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)
_version = msgspec.msgpack.Decoder(dict[str, object])


def pack(message: Message) -> bytes:
    """Encode one message."""
    return _encoder.encode(message)


def unpack(frame: bytes) -> Message:
    """Decode and check one message."""
    try:
        message = _decoder.decode(frame)
    except msgspec.DecodeError as error:
        raise ProtocolError(_explain(frame, error)) from None
    if message.v != VERSION:
        raise ProtocolError(f"protocol version {message.v!r}, this side speaks {VERSION}")
    return message


def _explain(frame: bytes, error: msgspec.DecodeError) -> str:
    """Say first what a person would check first: msgpack at all, a map, the version, the type."""
    try:
        raw = _version.decode(frame)
    except msgspec.DecodeError:
        return f"not a msgpack map: {error}"
    if raw.get("v") != VERSION:
        return f"protocol version {raw.get('v')!r}, this side speaks {VERSION}"
    return f"bad message: {error}"
