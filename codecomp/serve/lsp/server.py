"""The language server: LSP requests from the editor in, `codecomp-serve` HTTP requests out.

Features: document sync (incremental, any number of open C++ and JavaScript files),
`textDocument/completion` (classic items), `textDocument/inlineCompletion` (LSP 3.18 ghost text),
`completionItem/resolve` and the `codecomp.accept` command (feedback). Every handler answers: a failure
of the server or of this code gives an empty list, never an error the editor has to show.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, lsp_method

from codecomp.serve.lsp.client import Completion, CompletionClient
from codecomp.serve.lsp.config import Settings
from codecomp.serve.lsp.documents import Cursor, Documents, path_of
from codecomp.serve.lsp.feedback import Feedback
from codecomp.serve.lsp.items import ACCEPT_COMMAND, completion_items, inline_items, insertions
from codecomp.serve.lsp.latest import LatestOnly, Superseded
from codecomp.serve.lsp.positions import ENCODINGS, Position

log = logging.getLogger(__name__)
VERSION = "0.1.0"
TRIGGER_CHARACTERS = [".", ">", ":", "("]
COMPLETION, INLINE = "completion", "inline"


class DocumentsProtocol(LanguageServerProtocol):
    """pygls's protocol, except that open documents are kept by `Documents` alone (see documents.py), so
    pygls's own copy is neither updated on every keystroke nor able to fail an update of ours."""

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> Generator[Any, Any, None]:
        yield self.fm.features[types.TEXT_DOCUMENT_DID_OPEN], (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> Generator[Any, Any, None]:
        yield self.fm.features[types.TEXT_DOCUMENT_DID_CHANGE], (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> Generator[Any, Any, None]:
        yield self.fm.features[types.TEXT_DOCUMENT_DID_CLOSE], (params,), None


class CodecompServer(LanguageServer):
    """The plugin's state: open documents, the HTTP client, the request scheduler and the feedback tracker."""

    def __init__(self) -> None:
        super().__init__(
            "codecomp-lsp", VERSION, protocol_cls=DocumentsProtocol,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
        )  # fmt: skip
        self.documents = Documents()
        self.settings = Settings()
        self.client: CompletionClient | None = None
        self.latest = LatestOnly(self.settings.debounce_ms / 1000)
        self.feedback: Feedback | None = None
        self.select_on_resolve = False

    def configure(self, settings: Settings, encoding: str, can_run_commands: bool) -> None:
        """Set up for a session (at `initialize`)."""
        self.settings, self.documents.encoding = settings, encoding
        self.client = CompletionClient(settings, notify=self.tell, note=self.note)
        self.latest = LatestOnly(settings.debounce_ms / 1000)
        self.feedback = Feedback(self.client.send_event)
        resolve = settings.select_on_resolve
        self.select_on_resolve = not can_run_commands if resolve is None else resolve

    def tell(self, message: str) -> None:
        """Show `message` to the user (a warning in the editor)."""
        log.warning("%s", message)
        self.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=message))

    def note(self, message: str) -> None:
        """Write `message` to the editor's log of this server."""
        log.info("%s", message)
        self.window_log_message(types.LogMessageParams(type=types.MessageType.Info, message=message))

    async def complete(self, kind: str, uri: str, position: types.Position) -> tuple[Completion, Cursor] | None:
        """The server's completion at `position`, or None (not served, superseded, server away).

        Raises:
            Superseded: a newer request of the same kind for the same document replaced this one.
        """
        document = self.documents.get(uri)
        if document is None or document.language is None or self.client is None:
            return None
        cursor = document.cursor(Position(position.line, position.character))  # a snapshot: typing goes on
        body = self.request_body(document.language, uri, document.text, cursor)
        client = self.client
        completion = await self.latest.run((kind, uri), lambda: client.complete(body))
        return None if completion is None else (completion, cursor)

    def request_body(self, language: str, uri: str, text: str, cursor: Cursor) -> dict[str, Any]:
        """The body of `POST /v1/completions` for `cursor`."""
        body: dict[str, Any] = {"language": language, "user": self.settings.user}
        if self.settings.request == "document":
            body.update(document=text, cursor=cursor.byte_offset)
        else:
            body["segments"] = {"prefix": cursor.prefix, "suffix": cursor.suffix, "filepath": path_of(uri)}
        if self.settings.deadline_ms is not None:
            body["deadline_ms"] = self.settings.deadline_ms
        return body

    def shown(self, kind: str, uri: str, answer: tuple[Completion, Cursor] | None, count: int) -> None:
        """The first `count` items of `answer` (None: an empty list) were returned for `uri`."""
        if self.feedback is None:
            return
        if answer is None:
            self.feedback.shown((kind, uri), None, [])
        else:
            indices = [index for index, _ in insertions(*answer)][:count]
            self.feedback.shown((kind, uri), answer[0].id, indices)

    def accepted(self, data: Any) -> None:
        """An item whose `data` is `{"id": ..., "index": ...}` was accepted."""
        if self.feedback is None or not isinstance(data, dict):
            return
        completion_id, index = data.get("id"), data.get("index")
        if isinstance(completion_id, str) and isinstance(index, int):
            self.feedback.accepted(completion_id, index)


def create_server() -> CodecompServer:
    """A language server with its features registered (start it with `start_io()`)."""
    server = CodecompServer()
    server.feature(types.INITIALIZE)(initialize)
    server.feature(types.INITIALIZED)(initialized)
    server.feature(types.SHUTDOWN)(shutdown)
    server.feature(types.TEXT_DOCUMENT_DID_OPEN)(did_open)
    server.feature(types.TEXT_DOCUMENT_DID_CHANGE)(did_change)
    server.feature(types.TEXT_DOCUMENT_DID_CLOSE)(did_close)
    options = types.CompletionOptions(trigger_characters=TRIGGER_CHARACTERS, resolve_provider=True)
    server.feature(types.TEXT_DOCUMENT_COMPLETION, options)(completion)
    server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())(inline_completion)
    server.feature(types.COMPLETION_ITEM_RESOLVE)(resolve)
    server.command(ACCEPT_COMMAND)(accept)
    return server


def initialize(ls: CodecompServer, params: types.InitializeParams) -> None:
    settings, problems = Settings.load(params.initialization_options)
    for problem in problems:
        log.warning("%s", problem)
    chosen = ls.workspace.position_encoding  # pygls chose it from the client's offer (UTF-16 if none)
    encoding = str(getattr(chosen, "value", chosen))  # a PositionEncodingKind, or the client's own string
    if encoding not in ENCODINGS:
        encoding = "utf-16"
    workspace = params.capabilities.workspace
    can_run_commands = workspace is not None and workspace.execute_command is not None
    ls.configure(settings, encoding, can_run_commands)
    log.info("codecomp-lsp %s: server %s, positions in %s, user %s", VERSION, settings.url, encoding, settings.user)


def initialized(ls: CodecompServer, params: types.InitializedParams) -> None:
    if ls.feedback is not None:
        ls.feedback.start()
    ls.note(f"codecomp-lsp {VERSION}: completions from {ls.settings.url}, positions in {ls.documents.encoding} units")


async def shutdown(ls: CodecompServer, params: None) -> None:
    ls.latest.cancel_all()
    if ls.feedback is not None:
        ls.feedback.close_all()
        await ls.feedback.flush(timeout_s=1.0)
    if ls.client is not None:
        await ls.client.aclose()


def did_open(ls: CodecompServer, params: types.DidOpenTextDocumentParams) -> None:
    item = params.text_document
    ls.documents.open(item.uri, item.text, item.version, item.language_id)


def did_change(ls: CodecompServer, params: types.DidChangeTextDocumentParams) -> None:
    document = ls.documents.get(params.text_document.uri)
    if document is None:
        log.warning("a change to %s, which is not open", params.text_document.uri)
        return
    for change in params.content_changes:
        if isinstance(change, types.TextDocumentContentChangePartial):
            start, end = change.range.start, change.range.end
            document.replace(Position(start.line, start.character), Position(end.line, end.character), change.text)
        else:
            document.set_text(change.text)
    document.version = params.text_document.version


def did_close(ls: CodecompServer, params: types.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.documents.close(uri)
    if ls.feedback is not None:
        ls.feedback.closed((COMPLETION, uri))
        ls.feedback.closed((INLINE, uri))


async def completion(ls: CodecompServer, params: types.CompletionParams) -> types.CompletionList:
    uri, items = params.text_document.uri, []
    try:
        answer = await ls.complete(COMPLETION, uri, params.position)
        if answer is not None:
            items = completion_items(*answer, uri)
        ls.shown(COMPLETION, uri, answer, len(items))
    except Superseded:
        pass
    except Exception:  # never an error in the editor: log it, answer nothing
        log.exception("completion at %s failed", uri)
    return types.CompletionList(is_incomplete=True, items=items)  # typing on asks again


async def inline_completion(ls: CodecompServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    uri, items = params.text_document.uri, []
    try:
        answer = await ls.complete(INLINE, uri, params.position)
        if answer is not None:
            items = inline_items(*answer, uri)
        ls.shown(INLINE, uri, answer, min(len(items), 1))  # ghost text shows the first; others if cycled to
    except Superseded:
        pass
    except Exception:
        log.exception("inline completion at %s failed", uri)
    return types.InlineCompletionList(items=items)


def resolve(ls: CodecompServer, item: types.CompletionItem) -> types.CompletionItem:
    if ls.select_on_resolve:
        ls.accepted(item.data)
    return item


def accept(ls: CodecompServer, *arguments: object) -> None:
    """`codecomp.accept`, run by the client when an item is accepted: its argument is the item's data."""
    for data in arguments:
        ls.accepted(data)
