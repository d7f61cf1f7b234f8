"""The wire protocol's typed messages, and the container's message core (no sockets, no model)."""

import time

import msgpack
import pytest

from codecomp.serve import protocol
from codecomp.serve.container.core import ContainerCore
from codecomp.serve.protocol import Options, WireCandidate, WireRequest


def wire(prefix, session="ada\0a.js", budget_ms=50.0):
    return WireRequest(prefix, b"", "javascript", session, budget_ms)


def test_messages_round_trip_as_documented_maps():
    predict = protocol.Predict(batch=3, requests=[wire(b"\xff")], options=Options(k=1))
    frame = protocol.pack(predict)
    assert protocol.unpack(frame) == predict
    raw = msgpack.unpackb(frame)  # what another implementation sees: maps with `v` and `type`, text as bytes
    assert raw["v"] == protocol.VERSION and raw["type"] == "predict" and raw["batch"] == 3
    assert raw["requests"] == [{"prefix": b"\xff", "suffix": b"", "language": "javascript", "session": "ada\0a.js",
                                "budget_ms": 50.0}]  # fmt: skip
    result = protocol.Result(batch=3, results=[[WireCandidate(b"x", -1.5, False)]], compute_ms=2.0, cut_short=[True])
    assert msgpack.unpackb(protocol.pack(result))["results"] == [[[b"x", -1.5, False]]]  # candidates as triples
    assert protocol.unpack(protocol.pack(protocol.Shutdown())) == protocol.Shutdown()


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (msgpack.packb({"v": 99, "type": "predict"}), "version"),
        (msgpack.packb({"v": protocol.VERSION, "type": "gossip"}), "gossip"),
        (msgpack.packb({"v": protocol.VERSION, "type": "hello", "model": "m"}), "missing required field"),
        (
            msgpack.packb(
                {
                    "v": protocol.VERSION,
                    "type": "result",
                    "batch": [1],
                    "results": [],
                    "compute_ms": 1.0,
                    "cut_short": [],
                }
            ),
            "batch",
        ),
        (msgpack.packb([1, 2]), "map"),
        (b"\xc1", "msgpack"),
    ],
)
def test_frames_that_do_not_fit_are_protocol_errors(frame, problem):
    with pytest.raises(protocol.ProtocolError, match=problem):
        protocol.unpack(frame)


class FlakyRunner:
    family = "fake"

    def predict(self, requests, deadlines, options):
        if any(r.prefix == b"boom" for r in requests):
            raise ValueError("cannot")
        return [[WireCandidate(r.prefix[::-1], -1.0, True)][: options.k] for r in requests]


def test_container_core_answers_predict_and_reports_errors():
    core = ContainerCore(FlakyRunner(), "m", "v1")
    hello = protocol.unpack(core.hello())
    assert isinstance(hello, protocol.Hello) and (hello.model, hello.family, hello.version) == ("m", "fake", "v1")
    assert isinstance(protocol.unpack(core.hello(protocol.Heartbeat)), protocol.Heartbeat)
    frame = protocol.pack(protocol.Predict(batch=7, requests=[wire(b"ab")], options=Options(k=1)))
    result = protocol.unpack(core.handle(frame, time.monotonic()))
    assert isinstance(result, protocol.Result) and result.batch == 7
    assert result.results == [[WireCandidate(b"ba", -1.0, True)]] and result.cut_short == [False]
    boom = protocol.pack(protocol.Predict(batch=8, requests=[wire(b"boom")], options=Options()))
    failed = protocol.unpack(core.handle(boom, time.monotonic()))
    assert isinstance(failed, protocol.Error) and failed.batch == 8 and "ValueError: cannot" in failed.message
    garbage = protocol.unpack(core.handle(b"\x00garbage", time.monotonic()))
    assert isinstance(garbage, protocol.Error) and garbage.batch is None
    wrong_way = protocol.unpack(core.handle(core.hello(), time.monotonic()))  # a container takes no hello
    assert isinstance(wrong_way, protocol.Error) and "does not take hello" in wrong_way.message
    assert core.handle(protocol.pack(protocol.Shutdown()), time.monotonic()) is None


class UnfinishedRunner:
    """Every line unfinished, as an anytime model past its deadline leaves them: the prefix is the line."""

    family = "fake"

    def predict(self, requests, deadlines, options):
        return [[WireCandidate(r.prefix, -1.0, False)] for r in requests]


def test_an_answer_is_cut_short_only_where_the_deadline_stopped_a_line_before_the_byte_bound():
    core = ContainerCore(UnfinishedRunner(), "m", "v1")
    late = [wire(b"abcd", budget_ms=0.0), wire(b"ab", budget_ms=0.0)]  # the deadline passed at once
    frame = protocol.pack(protocol.Predict(batch=1, requests=late, options=Options(k=1, max_chars=4)))
    result = protocol.unpack(core.handle(frame, time.monotonic()))
    assert result.cut_short == [False, True]  # 4 bytes: stopped by max_chars; 2 bytes: by the deadline
    in_time = protocol.pack(protocol.Predict(batch=2, requests=[wire(b"ab", budget_ms=5000.0)], options=Options()))
    assert protocol.unpack(core.handle(in_time, time.monotonic())).cut_short == [False]
