"""What the editor plugin (`codecomp-lsp`) adds to the completion server's own latency.

A simulated user types a JavaScript file into a real `codecomp-lsp` process (over stdio, as an editor
does) at 10 characters per second, sending `didChange` and a `textDocument/completion` request at each
keystroke, as an editor with completion-as-you-type does. Per request answered with items, the plugin's
share is the LSP round trip minus the server's own latency (the `latency_ms` it reports, carried in each
item's data); it includes the plugin's debounce, which is reported beside it. A second phase types a burst
at 50 characters per second to show that requests do not pile up: how many reach the server against the
keystrokes typed.

By default the server is a stand-in on a local socket answering fixed completions after a fixed delay
(`StandIn`, also used by tests/test_lsp_*.py), so what is measured is the plugin; `--url` measures
against a live `codecomp-serve` instead.

    python -m benchmarks.lsp_latency                    # stand-in, 20 ms per answer (~20 s)
    python -m benchmarks.lsp_latency --url http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
from lsprotocol import types
from pygls.lsp.client import LanguageClient

TYPED = """function total(items) {
  let sum = 0;
  for (const item of items) {
    sum += item.price * item.quantity;
  }
  return sum;
}

const order = [{ price: 3, quantity: 2 }, { price: 5, quantity: 1 }];
console.log(total(order));
"""


class StandIn:
    """A stand-in for `codecomp-serve` on a real local socket: fixed choices after a fixed delay.

    It answers `POST /v1/completions` with `choices` (after `delay_s`), records the bodies it gets
    (`completions`) and the feedback events (`events`), checks the bearer `token` if it has one (401
    otherwise), and can be stopped and started again on the same port (`stop`, `start`) to play a server
    that goes down and comes back.
    """

    def __init__(self, choices: list[str] | None = None, delay_s: float = 0.0, token: str | None = None) -> None:
        self.choices = ["ab"] if choices is None else choices
        self.delay_s, self.token = delay_s, token
        self.completions: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> StandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._server = _QuietServer(("127.0.0.1", self.port), _handler(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Close the listening socket and every open connection: the server is gone."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._connections.clear()

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        with self._lock:
            self.completions.append(body)
            number = len(self.completions)
        if self.delay_s:
            time.sleep(self.delay_s)
        choices = [{"index": i, "text": text, "score": -1.0, "model": "standin"} for i, text in enumerate(self.choices)]
        return {"id": f"cmpl-{number}", "choices": choices, "models": {"standin": "ok"}, "cache": {},
                "degraded": False, "light": False, "latency_ms": 1000 * (time.perf_counter() - started)}  # fmt: skip


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up, or a connection closed by `stop`: nothing to report."""


def _handler(stand_in: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real server
        disable_nagle_algorithm = True  # headers and body go out in separate writes

        def setup(self) -> None:
            super().setup()
            with stand_in._lock:
                stand_in._connections.add(self.connection)

        def do_GET(self) -> None:
            self._reply(200, {"status": "ok"} if self.path == "/v1/health" else {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if stand_in.token and self.headers.get("Authorization") != f"Bearer {stand_in.token}":
                self._reply(401, {"error": "missing or wrong bearer token"})
            elif self.path == "/v1/completions":
                self._reply(200, stand_in.answer(body))
            elif self.path == "/v1/events":
                stand_in.events.append(body)
                self._reply(200, {"stored": len(stand_in.events)})
            else:
                self._reply(404, {"error": "not found"})

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Typing:
    """What one phase of typing measured."""

    keystrokes: int = 0
    round_trips_ms: list[float] = field(default_factory=list)  # requests answered with items
    server_ms: list[float] = field(default_factory=list)  # the server's own latency of those
    completion_ids: set[str] = field(default_factory=set)
    empty: int = 0  # answered with no items (superseded by the next keystroke, or nothing to offer)


async def type_text(client: LanguageClient, uri: str, text: str, cps: float) -> Typing:
    """Type `text` into an open, empty document at `cps` keystrokes a second; a completion request each."""
    typing, pending = Typing(), []
    line = character = 0
    started = time.perf_counter()
    for i, char in enumerate(text):
        await asyncio.sleep(max(0.0, started + i / cps - time.perf_counter()))
        at = types.Position(line=line, character=character)
        change = types.TextDocumentContentChangePartial(range=types.Range(start=at, end=at), text=char)
        document = types.VersionedTextDocumentIdentifier(uri=uri, version=i + 2)
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(text_document=document, content_changes=[change])
        )
        line, character = (line + 1, 0) if char == "\n" else (line, character + 1)
        position = types.Position(line=line, character=character)
        pending.append(asyncio.ensure_future(_ask(client, uri, position, typing)))
        typing.keystrokes += 1
    await asyncio.gather(*pending)
    return typing


async def _ask(client: LanguageClient, uri: str, position: types.Position, typing: Typing) -> None:
    sent = time.perf_counter()
    result = await client.text_document_completion_async(
        types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri), position=position)
    )
    round_trip_ms = 1000 * (time.perf_counter() - sent)
    items = result.items if isinstance(result, types.CompletionList) else (result or [])
    if not items:
        typing.empty += 1
        return
    data: dict[str, Any] = items[0].data or {}
    typing.completion_ids.add(data["id"])
    if data.get("latency_ms") is not None:
        typing.round_trips_ms.append(round_trip_ms)
        typing.server_ms.append(data["latency_ms"])


async def run(url: str, debounce_ms: float, phases: list[tuple[str, float, int]]) -> list[tuple[str, float, Typing]]:
    """Start `codecomp-lsp` against `url` and type each phase (name, cps, keystrokes) into a new document."""
    client = LanguageClient("lsp-latency", "1")
    client.feature(types.WINDOW_LOG_MESSAGE)(lambda params: None)
    client.feature(types.WINDOW_SHOW_MESSAGE)(lambda params: print(f"  the plugin says: {params.message}"))
    await client.start_io(sys.executable, "-m", "codecomp.serve.lsp.cli")
    options = {"url": url, "debounce_ms": debounce_ms, "timeout_s": 5.0}
    await client.initialize_async(
        types.InitializeParams(capabilities=types.ClientCapabilities(), initialization_options=options)
    )
    client.initialized(types.InitializedParams())
    results = []
    for number, (name, cps, keystrokes) in enumerate(phases):
        uri = f"file:///bench/typed{number}.js"
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="javascript", version=1, text="")))  # fmt: skip
        text = (TYPED * (keystrokes // len(TYPED) + 1))[:keystrokes]
        results.append((name, cps, await type_text(client, uri, text, cps)))
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return results


async def direct(url: str, requests: int, rate: float) -> list[float]:
    """The same kind of request straight from an HTTP client (httpx, as the plugin uses), without the plugin:
    per request, the round trip minus the server's own latency (the transport's share), in ms."""
    added = []
    async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
        for i in range(requests):
            body = {"language": "javascript", "user": "bench", "segments": {"prefix": TYPED[:i], "suffix": ""}}
            sent = time.perf_counter()
            answer = (await client.post("/v1/completions", json=body)).json()
            added.append(1000 * (time.perf_counter() - sent) - answer["latency_ms"])
            await asyncio.sleep(1 / rate)
    return added


def report(results: list[tuple[str, float, Typing]], debounce_ms: float, requests_seen: list[int] | None) -> None:
    for number, (name, cps, typing) in enumerate(results):
        reached = (f"{requests_seen[number]} reached the server" if requests_seen
                   else f"{len(typing.completion_ids)} distinct answers")  # fmt: skip
        print(f"{name}: {typing.keystrokes} keystrokes at {cps:g}/s -> {typing.keystrokes} completion requests,"
              f" {reached}, {len(typing.round_trips_ms)} answered with items, {typing.empty} empty"
              " (superseded by a newer keystroke, or nothing to offer)")  # fmt: skip
        if typing.round_trips_ms:
            trips, server = np.array(typing.round_trips_ms), np.array(typing.server_ms)
            added = trips - server
            for label, values in (("LSP round trip", trips), ("server's own", server), ("added by plugin", added)):
                p50, p99 = np.percentile(values, [50, 99])
                print(f"  {label:<17} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
            p50, p99 = np.percentile(added - debounce_ms, [50, 99])
            print(f"  (of which the debounce, {debounce_ms:g} ms; the rest: p50 {p50:.1f} ms, p99 {p99:.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a live codecomp-serve (default: a local stand-in)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the stand-in's latency per answer")
    parser.add_argument("--debounce-ms", type=float, default=20.0, help="the plugin's debounce")
    parser.add_argument("--seconds", type=float, default=12.0, help="length of the 10 keystrokes/s phase")
    args = parser.parse_args()
    phases = [("steady typing", 10.0, int(10 * args.seconds)), ("burst", 50.0, 100)]
    with contextlib.ExitStack() as stack:
        if args.url:
            url, stand_in = args.url, None
            print(f"live server {url}; plugin debounce {args.debounce_ms:g} ms")
        else:
            stand_in = stack.enter_context(StandIn(choices=["total", "item"], delay_s=args.delay_ms / 1000))
            url = stand_in.url
            print(f"stand-in server answering after {args.delay_ms:g} ms; plugin debounce {args.debounce_ms:g} ms")
        seen: list[int] = []
        results = []
        for phase in phases:  # a fresh plugin per phase, so the stand-in counts each phase's requests
            before = len(stand_in.completions) if stand_in else 0
            results += asyncio.run(run(url, args.debounce_ms, [phase]))
            seen.append(len(stand_in.completions) - before if stand_in else 0)
        report(results, args.debounce_ms, seen if stand_in else None)
        p50, p99 = np.percentile(asyncio.run(direct(url, 40, 20.0))[5:], [50, 99])
        print(f"for comparison, a direct HTTP client (httpx, no plugin) adds p50 {p50:.1f} ms, p99 {p99:.1f} ms")


if __name__ == "__main__":
    main()
