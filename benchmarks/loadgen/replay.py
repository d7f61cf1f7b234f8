"""Load generator: replays simulated editing sessions (`serve/editors.py`) against the completion server.

The trace of requests is replayed open-loop (every request leaves at its scheduled time, whether or not
earlier ones came back), so a slow server sees the queue build up as it would in production instead of the
client politely slowing down.

    python -m benchmarks.loadgen.replay --url http://127.0.0.1:8000 --corpus data/small --editors 32 --duration 20

Given several URLs (frontends sharing their state), each editor's session goes to one of them, always the same.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import re
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.loadgen.editors import Request, TraceConfig, build_trace, documents_from_corpus, scale_trace
from benchmarks.loadgen.http_client import KeepAliveClient, PostClient

logger = logging.getLogger(__name__)

COMPLETIONS_PATH = "/v1/completions"
CACHE_HITS = frozenset({"hit", "shared", "typed", "approx"})  # the service's cache field, all but "miss"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What became of one request.

    Attributes:
        scheduled_s: Send time in the trace, seconds from the start of the replay.
        sent_s: When it actually left; later than `scheduled_s` when the client fell behind.
        latency_s: Client-measured time from send to the full response (or to the failure).
        status: HTTP status, 0 when no response came (timeout, connection error).
        degraded: The server's `degraded` flag (answered with fewer models than asked).
        cache: The server's `cache` field: how each model's answer was found (hit, approx, shared, miss).
        models: The server's per-model states, if any.
        choices: Number of choices returned.
        error: Why the request failed, None when it was answered.
        user: The editor that sent it.
        frontend: Index of the URL it went to (`route`).
    """

    scheduled_s: float
    sent_s: float
    latency_s: float
    status: int
    degraded: bool = False
    cache: dict[str, str] = dataclasses.field(default_factory=dict)
    models: dict[str, str] = dataclasses.field(default_factory=dict)
    choices: int = 0
    error: str | None = None
    user: str = ""
    frontend: int = 0

    @property
    def lag_s(self) -> float:
        """How late the request left against its schedule."""
        return max(0.0, self.sent_s - self.scheduled_s)

    @property
    def answered(self) -> bool:
        return self.status == 200 and self.error is None

    @property
    def shed(self) -> bool:
        return self.status == 503


# ---------------------------------------------------------------------------------------------------- replay


def route(user: str, frontends: int) -> int:
    """Which of `frontends` URLs serves an editor, always the same: `editor-<i>` goes to i mod `frontends` (the
    trace's editors split evenly), any other name by a stable hash (CRC-32, not Python's salted `hash`)."""
    numbered = re.fullmatch(r"editor-(\d+)", user)
    return (int(numbered[1]) if numbered else zlib.crc32(user.encode())) % frontends


async def replay(
    base_url: str | Sequence[str],
    trace: Sequence[Request],
    timeout_s: float = 5.0,
    token: str | None = None,
    client: PostClient | Sequence[PostClient] | None = None,
) -> list[Outcome]:
    """Send the trace's requests open-loop and record what became of each.

    Every request leaves at its scheduled time in its own task, whatever earlier requests are doing; if the
    client itself falls behind (a busy event loop), late requests leave at once and `Outcome.sent_s` records it.

    Args:
        base_url: Server root, e.g. `http://127.0.0.1:8000`, or several (frontends sharing their state): each
            editor's requests go to the one `route` picks.
        trace: Requests, sorted by send time (as `build_trace` returns them).
        timeout_s: Total deadline of one request; a request past it counts as an error (status 0).
        token: Bearer token for the `Authorization` header.
        client: Client bound to the server, or one per URL (tests inject them over fake servers); by default a
            `KeepAliveClient` per URL, closed afterwards.

    Returns:
        One outcome per request, in trace order.
    """
    urls = [base_url] if isinstance(base_url, str) else list(base_url)
    own_client = client is None
    clients = [KeepAliveClient(url) for url in urls] if client is None else _as_list(client)
    if len(clients) != len(urls):
        raise ValueError(f"{len(clients)} clients for {len(urls)} URLs")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    tasks: list[asyncio.Task[Outcome]] = []
    try:
        start = time.monotonic()
        for request in trace:
            delay = start + request.t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            frontend = route(request.user, len(clients))
            tasks.append(asyncio.create_task(_send(clients[frontend], frontend, request, headers, start, timeout_s)))
        outcomes = list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:  # only unfinished when the replay itself was cancelled or failed
            task.cancel()
        if own_client:
            for one in clients:
                await one.aclose()
    late = sum(outcome.lag_s > 0.01 for outcome in outcomes)
    if late:
        logger.warning("%d of %d requests left more than 10 ms late: the client is saturated", late, len(outcomes))
    return outcomes


def _as_list(client: PostClient | Sequence[PostClient]) -> list[PostClient]:
    return list(client) if isinstance(client, Sequence) else [client]


async def _send(
    client: PostClient, frontend: int, request: Request, headers: dict[str, str], start: float, timeout_s: float
) -> Outcome:
    sent = time.monotonic()
    status, error = 0, None
    body: dict[str, Any] = {}
    try:
        payload = json.dumps(request.payload()).encode()
        async with asyncio.timeout(timeout_s):
            status, content = await client.post(COMPLETIONS_PATH, payload, headers)
        if status == 200:
            body = json.loads(content)
            if not isinstance(body, dict):
                raise ValueError(f"expected a JSON object, got {type(body).__name__}")
        else:
            error = content.decode("utf-8", errors="replace")[:200]
    except OSError as exc:  # connection failures, malformed responses, and the deadline's TimeoutError
        error = repr(exc)
    except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
        error, body = f"bad response body: {exc!r}", {}
    models, cache = body.get("models"), body.get("cache")
    return Outcome(
        scheduled_s=request.t,
        sent_s=sent - start,
        latency_s=time.monotonic() - sent,
        status=status,
        degraded=bool(body.get("degraded", False)),
        cache=dict(cache) if isinstance(cache, dict) else {},
        models=dict(models) if isinstance(models, dict) else {},
        choices=len(body.get("choices") or []),
        error=error,
        user=request.user,
        frontend=frontend,
    )


# ---------------------------------------------------------------------------------------------------- summary


def summarize(outcomes: Sequence[Outcome], duration_s: float | None = None) -> dict[str, Any]:
    """Aggregate a replay.

    Args:
        outcomes: What `replay` returned.
        duration_s: Span for the throughput; by default from the first to the last scheduled send.

    Returns:
        Counts (`count`, `answered`, `degraded`, `shed`, `errors`), `throughput` (answered per second),
        `p50_ms`/`p95_ms`/`p99_ms` latency of answered requests (None if none were), `degraded_share` among
        answered requests, `shed_share` (503s) and `error_share` (other failures) among all requests,
        `cache_hit_share` among the models' answers to answered requests, `mean_choices`, and `max_lag_ms` of the
        client's schedule.
    """
    answered = [o for o in outcomes if o.answered]
    count, shed, degraded = len(outcomes), sum(o.shed for o in outcomes), sum(o.degraded for o in answered)
    errors = count - len(answered) - shed
    if duration_s is None:
        duration_s = max(o.scheduled_s for o in outcomes) - min(o.scheduled_s for o in outcomes) if outcomes else 0.0
    latencies_ms = np.array([o.latency_s * 1000 for o in answered])
    p50, p95, p99 = (float(p) for p in np.percentile(latencies_ms, [50, 95, 99])) if answered else (None,) * 3
    share = lambda part, whole: part / whole if whole else 0.0  # noqa: E731
    return {
        "count": count,
        "answered": len(answered),
        "degraded": degraded,
        "shed": shed,
        "errors": errors,
        "throughput": share(len(answered), duration_s),
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "degraded_share": share(degraded, len(answered)),
        "shed_share": share(shed, count),
        "error_share": share(errors, count),
        "cache_hit_share": share(
            sum(how in CACHE_HITS for o in answered for how in o.cache.values()), sum(len(o.cache) for o in answered)
        ),
        "mean_choices": share(sum(o.choices for o in answered), len(answered)),
        "max_lag_ms": max((o.lag_s * 1000 for o in outcomes), default=0.0),
    }


def meets_objective(summary: dict[str, Any], p99_ms: float = 50.0, max_degraded: float = 0.05) -> bool:
    """Whether a replay met the service objective.

    The p99 latency of answered requests must be at most `p99_ms`, and at most `max_degraded` of all requests
    may be degraded, where shed requests (503) and errors count as degraded too: a server must not meet its
    objective by refusing work. An empty replay, or one with nothing answered, does not meet it.
    """
    if not summary["count"] or summary["p99_ms"] is None:
        return False
    degraded = (summary["degraded"] + summary["shed"] + summary["errors"]) / summary["count"]
    return bool(summary["p99_ms"] <= p99_ms and degraded <= max_degraded)


# ---------------------------------------------------------------------------------------------------- CLI


def _format_table(summary: dict[str, Any]) -> str:
    rows = []
    for key, value in summary.items():
        if value is None:
            text = "-"
        elif isinstance(value, float):
            text = f"{value:.3f}" if math.isfinite(value) else str(value)
        else:
            text = str(value)
        rows.append(f"{key:<16} {text:>12}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    """Build a trace from a corpus's test split, replay it against a server and print the summary."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", nargs="+", default=["http://127.0.0.1:8000"], help="server root(s)")
    parser.add_argument("--corpus", type=Path, default=Path("data/small"), help="corpus folder (data/<recipe>)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--languages", nargs="+", default=["javascript", "cpp"])
    parser.add_argument("--editors", type=int, default=32)
    parser.add_argument("--duration", type=float, default=20.0, help="trace length in seconds, before scaling")
    parser.add_argument("--cps", type=float, default=6.0, help="mean typing speed, characters per second")
    parser.add_argument("--debounce", type=float, default=0.15, help="pause in seconds that sends a request")
    parser.add_argument("--rate-factor", type=float, default=1.0, help="compress send times by this factor")
    parser.add_argument("--max-document-bytes", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=5.0, help="per-request deadline in seconds")
    parser.add_argument("--token", default=None, help="bearer token")
    parser.add_argument("--p99-ms", type=float, default=50.0, help="latency objective")
    parser.add_argument("--max-degraded", type=float, default=0.05, help="degraded-share objective")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    documents = documents_from_corpus(args.corpus, args.split, args.languages)
    if not documents:
        parser.error(f"no documents in {args.corpus}/{args.split}")
    config = TraceConfig(
        editors=args.editors,
        chars_per_second=args.cps,
        debounce_s=args.debounce,
        duration_s=args.duration,
        seed=args.seed,
        max_document_bytes=args.max_document_bytes,
    )
    trace = scale_trace(build_trace(documents, config), args.rate_factor)
    logger.info("%d documents, %d requests over %.1f s", len(documents), len(trace), args.duration / args.rate_factor)
    outcomes = asyncio.run(replay(args.url, trace, timeout_s=args.timeout, token=args.token))
    summary = summarize(outcomes, duration_s=args.duration / args.rate_factor)
    summary["meets_objective"] = meets_objective(summary, args.p99_ms, args.max_degraded)
    print(json.dumps(summary, indent=1) if args.json else _format_table(summary))


if __name__ == "__main__":
    main()
