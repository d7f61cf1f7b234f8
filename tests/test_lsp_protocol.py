"""`codecomp-lsp` as editors see it: a real client process speaking JSON-RPC over stdio (pytest-lsp) to the
real language server, which asks a stand-in of `codecomp-serve` on a real local socket."""

import asyncio
import os
import sys
import time

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from benchmarks.lsp_latency import StandIn

pytestmark = pytest.mark.filterwarnings("error::pytest_lsp.checks.LspSpecificationWarning")

# No settings from the machine this runs on: no CODECOMP_* variables, no config file.
ENVIRONMENT = {name: value for name, value in os.environ.items() if not name.startswith("CODECOMP_")}
ENVIRONMENT["CODECOMP_LSP_CONFIG"] = os.devnull
FAST = {"debounce_ms": 0, "timeout_s": 2.0, "retry_initial_s": 0.2, "retry_max_s": 0.2, "user": "ada"}


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[sys.executable, "-m", "codecomp.serve.lsp.cli"], server_env=ENVIRONMENT)
)
async def client(lsp_client: LanguageClient):
    yield
    await lsp_client.shutdown_session()


@pytest.fixture
def stand_in():
    with StandIn(choices=["al);", "al", "otal"]) as server:
        yield server


async def start(client, url, capabilities="visual-studio-code", **options):
    caps = client_capabilities(capabilities) if isinstance(capabilities, str) else capabilities
    params = types.InitializeParams(capabilities=caps, initialization_options={"url": url, **FAST, **options})
    return await client.initialize_session(params)


def open_document(client, uri, text, language_id="javascript"):
    item = types.TextDocumentItem(uri=uri, language_id=language_id, version=1, text=text)
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=item))


def change(client, uri, version, start, end, text):
    edit = types.Range(start=types.Position(*start), end=types.Position(*end))
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(range=edit, text=text)]))  # fmt: skip


async def complete(client, uri, line, character, msg_id=None):
    params = types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri),
                                    position=types.Position(line=line, character=character))  # fmt: skip
    if msg_id is not None:
        return await client.protocol.send_request_async(types.TEXT_DOCUMENT_COMPLETION, params, msg_id=msg_id)
    return await client.text_document_completion_async(params)


async def eventually(condition, timeout_s=5.0):
    give_up = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < give_up, "timed out"
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_classic_completion_with_incremental_sync_and_many_files(client, stand_in):
    result = await start(client, stand_in.url)
    capabilities = result.capabilities
    assert capabilities.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert capabilities.completion_provider.resolve_provider and capabilities.inline_completion_provider
    open_document(client, "file:///w/other.cpp", "int main() {}\n", language_id="plaintext")  # C++ by extension
    open_document(client, "file:///w/a.js", "console.log();\n")
    change(client, "file:///w/a.js", 2, (0, 12), (0, 12), "tot")  # console.log(tot|);

    answer = await complete(client, "file:///w/a.js", 0, 15)
    assert answer.is_incomplete
    # "al);" and "al" both insert "al" (the ");" after the cursor is not repeated); "otal" stays as it is
    assert [(i.label, i.text_edit.new_text, i.data["index"]) for i in answer.items] == [
        ("total", "total", 0), ("tototal", "tototal", 2),
    ]  # fmt: skip
    edit = answer.items[0].text_edit.range
    assert (edit.start.line, edit.start.character, edit.end.character) == (0, 12, 15)
    (body,) = stand_in.completions
    assert body == {"language": "javascript", "user": "ada", "segments": {
        "prefix": "console.log(tot", "suffix": ");\n", "filepath": "/w/a.js"}}  # fmt: skip

    cpp = await complete(client, "file:///w/other.cpp", 0, 12)
    assert cpp.items and stand_in.completions[-1]["language"] == "cpp"
    open_document(client, "file:///w/notes.py", "print(1)\n", language_id="python")
    assert not (await complete(client, "file:///w/notes.py", 0, 5)).items  # not served: no request
    assert len(stand_in.completions) == 2


@pytest.mark.asyncio
async def test_inline_completion_inserts_at_the_cursor(client, stand_in):
    await start(client, stand_in.url)
    open_document(client, "file:///w/a.js", "console.log(tot);\n")
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri="file:///w/a.js"), position=types.Position(line=0, character=15),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic),
    )  # fmt: skip
    answer = await client.text_document_inline_completion_async(params)
    assert [(i.insert_text, i.range.start.character, i.range.end.character) for i in answer.items] == [
        ("al", 15, 15), ("otal", 15, 15),
    ]  # fmt: skip
    assert answer.items[0].command.command == "codecomp.accept"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "offered, encoding", [(None, "utf-16"), (["utf-16"], "utf-16"), (["utf-8", "utf-16"], "utf-8")]
)
@pytest.mark.parametrize("request_kind", ["segments", "document"])
async def test_positions_with_non_ascii_emoji_and_crlf(client, stand_in, offered, encoding, request_kind):
    capabilities = client_capabilities("visual-studio-code")  # offers no encoding: UTF-16
    if offered is not None:
        capabilities.general = types.GeneralClientCapabilities(position_encodings=offered)
    result = await start(client, stand_in.url, capabilities, request=request_kind)
    assert result.capabilities.position_encoding == encoding
    await eventually(lambda: any(f"positions in {encoding} units" in m.message for m in client.log_messages))
    text = '// héllo 😀 名前\r\nconst s = "😀";\r\nlet x = fo(1);\r\n'
    open_document(client, "file:///w/e.js", text)
    # type "o" after "fo" on line 2, then ask there; the emoji before counts 2 UTF-16 units, 4 UTF-8 bytes
    line0 = "// héllo 😀 名前"
    change(client, "file:///w/e.js", 2, (2, 10), (2, 10), "o")
    assert (await complete(client, "file:///w/e.js", 2, 11)).items
    prefix = '// héllo 😀 名前\r\nconst s = "😀";\r\nlet x = foo'
    sent = stand_in.completions[-1]
    if request_kind == "segments":
        assert (sent["segments"]["prefix"], sent["segments"]["suffix"]) == (prefix, "(1);\r\n")
    else:
        assert sent["cursor"] == len(prefix.encode()) and sent["document"] == prefix + "(1);\r\n"
    # an edit inside line 0, after the emoji: its position counts the emoji in the agreed units
    after_emoji = len(line0[: line0.index("😀") + 1].encode("utf-16-le" if encoding == "utf-16" else "utf-8"))
    after_emoji //= 2 if encoding == "utf-16" else 1
    change(client, "file:///w/e.js", 3, (0, after_emoji), (0, after_emoji), "!")
    answer = await complete(client, "file:///w/e.js", 0, after_emoji + 1)
    assert stand_in.completions[-1].get("segments", {}).get("prefix", "// héllo 😀!") == "// héllo 😀!"
    if request_kind == "document":
        assert stand_in.completions[-1]["document"].startswith("// héllo 😀! 名前\r\n")
        assert stand_in.completions[-1]["cursor"] == len("// héllo 😀!".encode())
    assert answer.items[0].text_edit.range.end.character == after_emoji + 1


@pytest.mark.asyncio
async def test_typing_fast_sends_one_request_and_cancel_is_honoured(client):
    with StandIn(choices=["x"], delay_s=0.3) as slow:
        await start(client, slow.url, debounce_ms=50)
        open_document(client, "file:///w/a.js", "")
        answers = []
        for i, char in enumerate("abcde"):  # five keystrokes, a request at each, faster than the debounce
            change(client, "file:///w/a.js", i + 2, (0, i), (0, i), char)
            answers.append(asyncio.ensure_future(complete(client, "file:///w/a.js", 0, i + 1)))
            await asyncio.sleep(0.01)
        done = await asyncio.gather(*answers)
        assert [len(a.items) for a in done] == [0, 0, 0, 0, 1]  # the older ones answered empty at once
        assert [c["segments"]["prefix"] for c in slow.completions] == ["abcde"]

        started = time.monotonic()
        request = asyncio.ensure_future(complete(client, "file:///w/a.js", 0, 5, msg_id="cancel-me"))
        await asyncio.sleep(0.1)  # past the debounce: in the HTTP call
        client.cancel_request(types.CancelParams(id="cancel-me"))
        with pytest.raises(Exception, match="cancel"):
            await request
        assert time.monotonic() - started < 0.3  # not after the server's answer
        assert (await complete(client, "file:///w/a.js", 0, 5)).items  # and the next one works


@pytest.mark.asyncio
async def test_feedback_view_select_and_dismiss_reach_the_server(client, stand_in):
    await start(client, stand_in.url)  # VS Code runs the items' commands
    open_document(client, "file:///w/a.js", "console.log(tot);\n")
    first = await complete(client, "file:///w/a.js", 0, 15)
    second = await complete(client, "file:///w/a.js", 0, 15)  # supersedes the first without an accept
    accepted = second.items[1]
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=accepted.command.command, arguments=accepted.command.arguments)
    )
    await client.completion_item_resolve_async(second.items[0])  # VS Code resolves on highlight: not an accept
    await complete(client, "file:///w/a.js", 0, 15)  # after an accept: no dismiss of the second list
    ids = [item.data["id"] for item in (first.items[0], second.items[0])]
    expected = [
        {"type": "view", "completion_id": ids[0], "choice_index": 0},
        {"type": "view", "completion_id": ids[0], "choice_index": 2},
        {"type": "dismiss", "completion_id": ids[0], "choice_index": 0},
        {"type": "dismiss", "completion_id": ids[0], "choice_index": 2},
        {"type": "view", "completion_id": ids[1], "choice_index": 0},
        {"type": "view", "completion_id": ids[1], "choice_index": 2},
        {"type": "select", "completion_id": ids[1], "choice_index": 2},
    ]
    await eventually(lambda: len(stand_in.events) >= len(expected) + 2)
    assert stand_in.events[: len(expected)] == expected
    assert [e["type"] for e in stand_in.events[len(expected) :]] == ["view", "view"]  # the third list


@pytest.mark.asyncio
async def test_clients_that_cannot_run_commands_accept_on_resolve(client, stand_in):
    await start(client, stand_in.url, capabilities="neovim@v0.7.0")  # no workspace.executeCommand
    open_document(client, "file:///w/a.cpp", "int main() { ret }", language_id="cpp")
    answer = await complete(client, "file:///w/a.cpp", 0, 16)
    await client.completion_item_resolve_async(answer.items[0])
    await eventually(lambda: any(e["type"] == "select" for e in stand_in.events))
    assert stand_in.events[-1] == {"type": "select", "completion_id": answer.items[0].data["id"], "choice_index": 0}


@pytest.mark.asyncio
async def test_server_down_gives_empty_lists_one_message_and_recovers(client, stand_in):
    stand_in.stop()
    await start(client, stand_in.url)
    open_document(client, "file:///w/a.js", "console.log(tot);\n")
    for _ in range(3):
        started = time.monotonic()
        assert not (await complete(client, "file:///w/a.js", 0, 15)).items
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(0.1)
    (message,) = client.messages  # told once, not at every keystroke
    assert message.type == types.MessageType.Warning
    assert "cannot reach the completion server at " + stand_in.url in message.message
    assert "codecomp-serve" in message.message and "CODECOMP_URL" in message.message

    stand_in.start()
    await asyncio.sleep(0.3)  # past the back-off
    assert (await complete(client, "file:///w/a.js", 0, 15)).items  # back by itself
    assert len(client.messages) == 1
    await eventually(lambda: any("answers again" in m.message for m in client.log_messages))


@pytest.mark.asyncio
async def test_a_refused_token_is_told_once(client):
    with StandIn(choices=["x"], token="s3cret") as guarded:
        await start(client, guarded.url, token="wrong")
        open_document(client, "file:///w/a.js", "a")
        for _ in range(3):
            assert not (await complete(client, "file:///w/a.js", 0, 1)).items
            await asyncio.sleep(0.25)
        (message,) = client.messages
        assert "refused the token (HTTP 401)" in message.message and "CODECOMP_TOKEN" in message.message


@pytest.mark.asyncio
async def test_a_slow_server_times_out_to_an_empty_list(client):
    with StandIn(choices=["x"], delay_s=1.0) as slow:
        await start(client, slow.url, timeout_s=0.2)
        open_document(client, "file:///w/a.js", "a")
        started = time.monotonic()
        assert not (await complete(client, "file:///w/a.js", 0, 1)).items
        assert time.monotonic() - started < 0.6
        (message,) = client.messages
        assert "did not answer within 0.2 s" in message.message
