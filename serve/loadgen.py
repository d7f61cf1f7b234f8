"""Load generator: replays simulated editing sessions against the completion server.

Each simulated editor retypes a held-out file from some line start, one character at a time, with human-like
inter-key gaps. When the user pauses for longer than the editor's debounce, the editor asks for a completion,
exactly as an IDE plugin would. The resulting trace of requests is replayed open-loop (every request leaves at
its scheduled time, whether or not earlier ones came back), so a slow server sees the queue build up as it would
in production instead of the client politely slowing down.

    python -m serve.loadgen --url http://127.0.0.1:8000 --corpus data/small --editors 32 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import random
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from codecomp.data.shards import TextShard

logger = logging.getLogger(__name__)

COMPLETIONS_PATH = "/v1/completions"
CACHE_HITS = frozenset({"hit", "approx", "shared"})
# Relative mean gap after each kind of character, before normalising to the configured typing speed: people
# type within a word quickly and stop to think between words, more after punctuation, most at the end of a line.
_GAP_WEIGHT_LETTER = 1.0
_GAP_WEIGHT_SPACE = 1.6
_GAP_WEIGHT_PUNCT = 2.0
_GAP_WEIGHT_NEWLINE = 4.0
_PUNCTUATION = frozenset("(){}[];,.:=<>+-*/&|!?\"'`")


@dataclasses.dataclass
class TraceConfig:
    """How the simulated editors type.

    Attributes:
        editors: Concurrent simulated users.
        chars_per_second: Mean typing speed of each editor.
        debounce_s: A request is sent when the gap before the next keystroke exceeds this (a pause), this long
            after the last keystroke.
        duration_s: Length of the trace; requests scheduled later are dropped.
        seed: Seed of the trace; the same seed and documents give the same trace.
        max_document_bytes: Longer documents are cut at the last line end within this many bytes, which bounds
            request payloads. None keeps documents whole.
        gap_sigma: Shape (log-space standard deviation) of the lognormal inter-key gap.
        start_within_s: Editors start typing at uniform times in [0, start_within_s); None: within one mean
            gap. A benchmark that leaves out a warm-up spreads the starts over it.
    """

    editors: int = 32
    chars_per_second: float = 6.0
    debounce_s: float = 0.15
    duration_s: float = 20.0
    seed: int = 0
    max_document_bytes: int | None = None
    gap_sigma: float = 0.8
    start_within_s: float | None = None


@dataclasses.dataclass(frozen=True)
class Request:
    """One completion request of a trace.

    The document text is shared by all requests on it and the prefix and suffix are cut on demand, so a long
    trace costs one copy of each document rather than one per request.

    Attributes:
        t: Send time, seconds from the start of the trace.
        user: The editor that sends it (`editor-<i>`).
        language: `javascript` or `cpp`.
        document: Index of the document in the list given to `build_trace`.
        position: Cursor position (characters) in the document.
        text: The whole document.
    """

    t: float
    user: str
    language: str
    document: int
    position: int
    text: str = dataclasses.field(repr=False)

    @property
    def prefix(self) -> str:
        """The document up to the cursor."""
        return self.text[: self.position]

    @property
    def suffix(self) -> str:
        """The document from the end of the cursor's line: the lines below, which already exist."""
        line_end = self.text.find("\n", self.position)
        return self.text[line_end:] if line_end >= 0 else ""

    def payload(self) -> dict[str, Any]:
        """The JSON body of the request."""
        return {
            "language": self.language,
            "segments": {"prefix": self.prefix, "suffix": self.suffix},
            "user": self.user,
        }


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


# ---------------------------------------------------------------------------------------------------- traces


def documents_from_corpus(
    corpus: Path, split: str = "test", languages: Sequence[str] = ("javascript", "cpp"), min_bytes: int = 200
) -> list[tuple[str, bytes]]:
    """Read the files of a corpus split as `(language, bytes)` documents.

    Args:
        corpus: The corpus folder (`data/<recipe>`).
        split: Which split; the held-out `test` split by default, so no model has trained on the replayed text.
        languages: Languages to read; a language without a shard is skipped with a warning.
        min_bytes: Shorter files are skipped (too little to type).

    Returns:
        The documents, in shard order, language by language. Files that are not valid UTF-8 are skipped.
    """
    documents = []
    for language in languages:
        folder = Path(corpus) / split / language
        if not (folder / "files.json").exists():
            logger.warning("no %s shard at %s", language, folder)
            continue
        skipped = 0
        for text in TextShard(folder):
            if len(text) < min_bytes:
                continue
            try:
                text.decode("utf-8")
            except UnicodeDecodeError:
                skipped += 1
                continue
            documents.append((language, text))
        if skipped:
            logger.info("%s: skipped %d files that are not UTF-8", folder, skipped)
    return documents


def build_trace(documents: Sequence[tuple[str, bytes]], config: TraceConfig | None = None) -> list[Request]:
    """Simulate `config.editors` users typing the documents and collect their completion requests.

    Each editor picks a document and a line start, then types the following characters one at a time with
    lognormal inter-key gaps whose mean over the document is `1 / chars_per_second`; gaps are longer after
    whitespace, punctuation and line ends. A gap longer than the debounce sends a request `debounce_s` after
    the last keystroke. At the end of a document the editor picks another one.

    Args:
        documents: `(language, utf-8 bytes)` pairs; undecodable or empty documents are skipped.
        config: The simulation; defaults to `TraceConfig()`.

    Returns:
        The requests of all editors, sorted by send time. Deterministic for given documents and seed.
    """
    config = config or TraceConfig()
    if config.chars_per_second <= 0 or config.debounce_s < 0:
        raise ValueError("chars_per_second must be positive and debounce_s non-negative")
    texts = [(i, language, _decode(raw, config.max_document_bytes)) for i, (language, raw) in enumerate(documents)]
    texts = [entry for entry in texts if entry[2]]
    if not texts:
        raise ValueError("build_trace needs at least one non-empty UTF-8 document")
    prepared: dict[int, _Document] = {}  # shared by editors, built the first time one picks a document
    requests: list[Request] = []
    for editor in range(config.editors):
        # One generator per editor (string seeds hash deterministically), so adding editors leaves the
        # others' sessions unchanged and the request rate grows in proportion.
        rng = random.Random(f"{config.seed}/{editor}")
        requests.extend(_editor_session(editor, rng, texts, prepared, config))
    requests.sort(key=lambda r: (r.t, r.user))
    return requests


def scale_trace(trace: Sequence[Request], factor: float) -> list[Request]:
    """Compress the trace's send times by `factor` (2 sends the same requests at twice the rate)."""
    if factor <= 0:
        raise ValueError(f"factor must be positive, got {factor}")
    return [dataclasses.replace(request, t=request.t / factor) for request in trace]


def _decode(raw: bytes, max_bytes: int | None) -> str:
    if max_bytes is not None and len(raw) > max_bytes:
        cut = raw.rfind(b"\n", 0, max_bytes)
        raw = raw[: cut + 1] if cut >= 0 else raw[:max_bytes]
        # A hard cut may split a multi-byte character; dropping the partial tail keeps the text valid.
        return raw.decode("utf-8", errors="ignore")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return ""


@dataclasses.dataclass(frozen=True)
class _Document:
    """A document ready to type: where lines start and the mean gap after each character."""

    line_starts: list[int]
    gaps: list[float]

    @classmethod
    def prepare(cls, text: str, chars_per_second: float) -> _Document:
        line_starts = [0, *(i + 1 for i, c in enumerate(text) if c == "\n" and i + 1 < len(text))]
        weights = [_gap_weight(c) for c in text]
        # Normalise so the mean gap over the document is 1 / chars_per_second whatever its mix of characters.
        scale = len(weights) / (sum(weights) * chars_per_second)
        return cls(line_starts, [w * scale for w in weights])


def _gap_weight(char: str) -> float:
    if char == "\n":
        return _GAP_WEIGHT_NEWLINE
    if char.isspace():
        return _GAP_WEIGHT_SPACE
    if char in _PUNCTUATION:
        return _GAP_WEIGHT_PUNCT
    return _GAP_WEIGHT_LETTER


def _editor_session(
    editor: int,
    rng: random.Random,
    texts: list[tuple[int, str, str]],
    prepared: dict[int, _Document],
    config: TraceConfig,
) -> Iterator[Request]:
    user = f"editor-{editor}"
    # A lognormal with log-sd sigma has mean exp(mu + sigma^2 / 2): this mu makes the multiplier's mean 1.
    mu = -(config.gap_sigma**2) / 2
    # Editors do not all start typing at the same instant.
    t = rng.uniform(0.0, config.start_within_s or 1.0 / config.chars_per_second)
    while t < config.duration_s:
        index, language, text = texts[rng.randrange(len(texts))]
        if index not in prepared:
            prepared[index] = _Document.prepare(text, config.chars_per_second)
        document = prepared[index]
        pos = rng.choice(document.line_starts)
        while pos < len(text) and t < config.duration_s:
            # The keystroke at time t types text[pos]; the gap after it depends on what was typed.
            gap = document.gaps[pos] * rng.lognormvariate(mu, config.gap_sigma)
            pos += 1
            if gap > config.debounce_s and t + config.debounce_s < config.duration_s:
                yield Request(t + config.debounce_s, user, language, index, pos, text)
            t += gap


# ---------------------------------------------------------------------------------------------------- client


class PostClient(Protocol):
    """What `replay` sends with: POSTs to one server.

    `post` returns the status and the raw body, and raises `OSError` (e.g. `ConnectionError`) when no response came.
    """

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]: ...

    async def aclose(self) -> None: ...


class _ClosedBeforeResponse(ConnectionResetError):
    """The connection closed before the first byte of the response."""


class KeepAliveClient:
    """A minimal keep-alive HTTP/1.1 client for JSON POSTs over `asyncio.open_connection`.

    Why not httpx: it costs about 2 ms of CPU per request, and the benchmark runs the load generator on the same
    2-core machine as the server, so at 200 requests/s the client alone took a third of the machine and fell
    behind its schedule. This writes each request in one piece and parses the response by hand, at a fraction
    of that. It keeps a pool of idle connections (as many as were ever in flight at once), reads bodies by
    `Content-Length`, chunked, or to the end, and honours `Connection: close`. A pooled connection that the server
    closed while it was idle is retried once on a fresh one. Plain `http://` only.
    """

    def __init__(self, base_url: str) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"KeepAliveClient speaks plain http:// only, got {base_url!r}")
        self._address = (url.hostname, url.port or 80)
        self._host = url.netloc.rpartition("@")[2]
        self._prefix = url.path.rstrip("/")
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._open: set[asyncio.StreamWriter] = set()

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """POST `body` (JSON) to `path` under the base URL; returns the status and the response body."""
        fields = {"Host": self._host, "Content-Type": "application/json", "Content-Length": len(body), **headers}
        head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        request = f"POST {self._prefix}{path} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body
        while self._idle:
            reader, writer = self._idle.pop()  # the most recently used: the least likely to have timed out
            if reader.at_eof():  # the server already said it closed this one
                self._close(writer)
                continue
            try:
                return await self._exchange(reader, writer, request)
            except _ClosedBeforeResponse:
                break  # closed by the server while idle, and we did not see it yet: once more, on a fresh one
        reader, writer = await asyncio.open_connection(*self._address)
        self._open.add(writer)
        return await self._exchange(reader, writer, request)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[int, bytes]:
        try:
            try:
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError) as exc:
                if getattr(exc, "partial", b""):
                    raise
                raise _ClosedBeforeResponse("connection closed before the response") from exc
            status_line, *lines = head.decode("latin-1").split("\r\n")
            version, status = status_line.split(" ", 2)[:2]
            fields = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in lines if h)}
            connection = fields.get("connection", "").lower()
            keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
            if status in ("204", "304"):
                body = b""
            elif "chunked" in fields.get("transfer-encoding", "").lower():
                body = await _read_chunked(reader)
            elif "content-length" in fields:
                body = await reader.readexactly(int(fields["content-length"]))
            else:  # delimited by the end of the connection
                body, keep_alive = await reader.read(), False
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self._close(writer)
            raise ConnectionError(f"bad HTTP response: {exc!r}") from exc
        except BaseException:  # including cancellation mid-response: the connection is in an unknown state
            self._close(writer)
            raise
        if keep_alive:
            self._idle.append((reader, writer))
        else:
            self._close(writer)
        return int(status), body

    def _close(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        self._open.discard(writer)

    async def aclose(self) -> None:
        """Close every connection, idle or not."""
        writers, self._open, self._idle = list(self._open), set(), []
        for writer in writers:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for writer in writers), return_exceptions=True)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        chunks.append((await reader.readexactly(size + 2))[:-2])
    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields, if any, up to the empty line
        pass
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------------- replay


async def replay(
    base_url: str,
    trace: Sequence[Request],
    timeout_s: float = 5.0,
    token: str | None = None,
    client: PostClient | None = None,
) -> list[Outcome]:
    """Send the trace's requests open-loop and record what became of each.

    Every request leaves at its scheduled time in its own task, whatever earlier requests are doing; if the
    client itself falls behind (a busy event loop), late requests leave at once and `Outcome.sent_s` records it.

    Args:
        base_url: Server root, e.g. `http://127.0.0.1:8000`.
        trace: Requests, sorted by send time (as `build_trace` returns them).
        timeout_s: Total deadline of one request; a request past it counts as an error (status 0).
        token: Bearer token for the `Authorization` header.
        client: Client bound to the server (tests inject one over a fake server); by default a
            `KeepAliveClient(base_url)`, closed afterwards.

    Returns:
        One outcome per request, in trace order.
    """
    own_client = client is None
    if client is None:
        client = KeepAliveClient(base_url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    tasks: list[asyncio.Task[Outcome]] = []
    try:
        start = time.monotonic()
        for request in trace:
            delay = start + request.t - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_send(client, request, headers, start, timeout_s)))
        outcomes = list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:  # only unfinished when the replay itself was cancelled or failed
            task.cancel()
        if own_client:
            await client.aclose()
    late = sum(outcome.lag_s > 0.01 for outcome in outcomes)
    if late:
        logger.warning("%d of %d requests left more than 10 ms late: the client is saturated", late, len(outcomes))
    return outcomes


async def _send(
    client: PostClient, request: Request, headers: dict[str, str], start: float, timeout_s: float
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
    parser = argparse.ArgumentParser(prog="python -m serve.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server root")
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
