"""The frontend's share of the RPC on the hot path: typed msgspec messages against plain msgpack maps.

    python -m benchmarks.protocol_codec [--batch 16] [--prefix-bytes 2048]

Per batch, the frontend encodes a `Predict` and decodes a `Result`. The baseline does the same with
`msgpack.packb`/`unpackb` over plain dicts and lists, as the protocol did before its messages were typed
(and, like the old frontend, rebuilds each candidate as a tuple and checks the fields by hand).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import msgpack

from codecomp.serve import protocol
from codecomp.serve.protocol import Options, WireCandidate, WireRequest


def best_of(function: Callable[[], object], repeat: int = 7, number: int = 2000) -> float:
    """Fastest mean time of one call, microseconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            function()
        best = min(best, (time.perf_counter() - started) / number)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prefix-bytes", type=int, default=2048)
    args = parser.parse_args()
    prefix = (b"const total = items.reduce((sum, item) => sum + item.price, 0);\n" * 64)[: args.prefix_bytes]
    requests = [WireRequest(prefix, b"\n}\n", "javascript", f"ada\0file{i}.js\0javascript", 38.5)
                for i in range(args.batch)]  # fmt: skip
    candidates = [[WireCandidate(b"return total;", -0.7, True), WireCandidate(b"return 0;", -1.9, True)]] * args.batch
    result_frame = protocol.pack(
        protocol.Result(batch=1, results=candidates, compute_ms=5.0, cut_short=[False] * args.batch)
    )

    def typed() -> object:
        protocol.pack(protocol.Predict(batch=1, requests=requests, options=Options(k=2, beam=2, max_chars=32)))
        reply = protocol.unpack(result_frame)
        assert isinstance(reply, protocol.Result)
        return [(r, c) for r, c in zip(reply.results, reply.cut_short, strict=True)]

    dict_requests = [{"prefix": r.prefix, "suffix": r.suffix, "language": r.language, "session": r.session,
                      "budget_ms": r.budget_ms} for r in requests]  # fmt: skip

    def plain() -> object:
        msgpack.packb({"v": 1, "type": "predict", "batch": 1, "requests": [dict(r) for r in dict_requests],
                       "options": {"k": 2, "beam": 2, "max_chars": 32}}, use_bin_type=True)  # fmt: skip
        reply = msgpack.unpackb(result_frame, raw=False)
        if not isinstance(reply, dict) or reply.get("v") != 1 or reply.get("type") not in ("result", "error"):
            raise ValueError("bad reply")
        return [
            ([(c[0], c[1], c[2]) for c in r], bool(cut))
            for r, cut in zip(reply["results"], reply["cut_short"], strict=True)
        ]

    typed_us, plain_us = best_of(typed), best_of(plain)
    print(f"batch of {args.batch}, {args.prefix_bytes}-byte prefixes: encode Predict + decode Result per batch")
    print(f"  plain msgpack maps (before): {plain_us:7.1f} us")
    print(f"  typed msgspec structs (now): {typed_us:7.1f} us   ({plain_us / typed_us:.2f}x)")


if __name__ == "__main__":
    main()
