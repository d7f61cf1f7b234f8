"""The server's choices as LSP items: classic completion items and inline (ghost text) items.

A choice is the text to insert at the cursor. In the middle of a line, a choice that ends with the
text already after the cursor (`foo(|)` and `bar)`) must not repeat it: that overlap is trimmed off,
so the text after the cursor stays and what is inserted is `bar`. Trimming (rather than an edit that
reaches past the cursor) keeps every client right, Neovim's omnifunc included, which ignores the end
of an edit's range.

A classic item replaces the identifier being typed (`word`) with the word and the choice, so the
client's own filtering by what is typed keeps it; an inline item inserts the choice at the cursor.
Each item carries the completion id and choice index (`data`, and the `codecomp.accept` command that
clients run on accepting it) for feedback.
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from codecomp.serve.lsp.client import Completion
from codecomp.serve.lsp.documents import Cursor

ACCEPT_COMMAND = "codecomp.accept"
LABEL_CHARS = 80


def overlap(text: str, rest_of_line: str) -> int:
    """The length of the longest end of `text` that the line after the cursor starts with."""
    for size in range(min(len(text), len(rest_of_line)), 0, -1):
        if text.endswith(rest_of_line[:size]):
            return size
    return 0


def insertions(completion: Completion, cursor: Cursor) -> list[tuple[int, str]]:
    """(choice index, text to insert at the cursor) per choice: overlaps trimmed; empty and repeated ones dropped."""
    kept: list[tuple[int, str]] = []
    seen: set[str] = set()
    for choice in completion.choices:
        text = choice.text[: len(choice.text) - overlap(choice.text, cursor.rest_of_line)]
        if text and text not in seen:
            seen.add(text)
            kept.append((choice.index, text))
    return kept


def item_data(completion: Completion, index: int, uri: str) -> dict[str, Any]:
    """What an item carries for feedback (`id`, `index`), and the server's latency for measurements."""
    return {"id": completion.id, "index": index, "uri": uri, "latency_ms": completion.latency_ms}


def completion_items(completion: Completion, cursor: Cursor, uri: str) -> list[types.CompletionItem]:
    """Classic completion items, in the server's order."""
    models = {choice.index: choice.model for choice in completion.choices}
    edit_range = _range(cursor.word_start, cursor.position)
    items = []
    for rank, (index, text) in enumerate(insertions(completion, cursor)):
        new_text = cursor.word + text
        first_line, _, more = new_text.partition("\n")
        label = first_line[:LABEL_CHARS] + ("…" if more or len(first_line) > LABEL_CHARS else "")
        data = item_data(completion, index, uri)
        items.append(
            types.CompletionItem(
                label=label, kind=types.CompletionItemKind.Text, detail=f"codecomp · {models[index]}",
                sort_text=f"{rank:04d}", filter_text=new_text, preselect=rank == 0,
                insert_text_format=types.InsertTextFormat.PlainText,
                text_edit=types.TextEdit(range=edit_range, new_text=new_text), data=data,
                command=types.Command(title="codecomp: accepted", command=ACCEPT_COMMAND, arguments=[data]),
            )
        )  # fmt: skip
    return items


def inline_items(completion: Completion, cursor: Cursor, uri: str) -> list[types.InlineCompletionItem]:
    """Inline completion items (LSP 3.18 ghost text), inserted at the cursor, in the server's order."""
    at_cursor = _range(cursor.position, cursor.position)
    return [
        types.InlineCompletionItem(
            insert_text=text,
            range=at_cursor,
            command=types.Command(
                title="codecomp: accepted", command=ACCEPT_COMMAND, arguments=[item_data(completion, index, uri)]
            ),
        )
        for index, text in insertions(completion, cursor)
    ]


def _range(start: Any, end: Any) -> types.Range:
    return types.Range(
        start=types.Position(line=start.line, character=start.character),
        end=types.Position(line=end.line, character=end.character),
    )
