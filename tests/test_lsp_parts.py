"""The plugin's parts without a process: settings, items from choices, the request scheduler, feedback."""

import asyncio

import pytest

from codecomp.serve.lsp.client import Choice, Completion
from codecomp.serve.lsp.config import Settings
from codecomp.serve.lsp.documents import Document
from codecomp.serve.lsp.feedback import Feedback
from codecomp.serve.lsp.items import completion_items, inline_items, insertions, overlap
from codecomp.serve.lsp.latest import LatestOnly, Superseded
from codecomp.serve.lsp.positions import UTF16, Position


def test_settings_come_from_options_then_environment_then_file(tmp_path):
    config = tmp_path / "lsp.toml"
    config.write_text('url = "http://file:1"\ntoken = "from-file"\nuser = "ann"\ndebounce_ms = 5\n')
    environ = {"CODECOMP_TOKEN": "from-env", "CODECOMP_LSP_CONFIG": str(config)}
    settings, problems = Settings.load({"url": "http://options:2/"}, environ)
    assert (settings.url, settings.token, settings.user, settings.debounce_ms) == (
        "http://options:2", "from-env", "ann", 5.0,
    )  # fmt: skip
    assert problems == []
    assert settings.headers == {"Authorization": "Bearer from-env"}


def test_bad_settings_are_reported_and_ignored(tmp_path):
    (tmp_path / "bad.toml").write_text("url = [")
    settings, problems = Settings.load(
        {"timeout_s": "fast", "colour": "red", "request": "lines"}, {}, config_file=tmp_path / "bad.toml"
    )
    assert settings.timeout_s == Settings.timeout_s and settings.request == "segments"
    assert len(problems) == 4 and "unreadable" in problems[0] and "colour" in " ".join(problems)
    assert Settings.load([1, 2], {}, tmp_path / "none.toml")[1] == [  # type: ignore[arg-type]
        "initializationOptions should be an object, got list; ignored"
    ]


def test_overlap_with_the_text_after_the_cursor():
    assert overlap("al);", ");") == 2
    assert overlap("al)", ");") == 1  # ends with the start of what follows
    assert overlap("x + y", ");") == 0
    assert overlap(")", ")") == 1


def completion_at(text, offset, *choices):
    document = Document("file:///a.js", text, 1, "javascript", UTF16)
    cursor = document.cursor(Position(0, offset))
    return Completion("c1", [Choice(i, t, "m") for i, t in enumerate(choices)], 12.0), cursor


def test_items_do_not_repeat_the_text_after_the_cursor():
    completion, cursor = completion_at("log(tot);", 7, "al);", "al", ");", "al)")
    assert insertions(completion, cursor) == [(0, "al")]  # "al" once; ");" alone inserts nothing
    items = completion_items(completion, cursor, "file:///a.js")
    assert [(i.label, i.text_edit.new_text, i.data["index"]) for i in items] == [("total", "total", 0)]
    edit = items[0].text_edit.range
    assert (edit.start.character, edit.end.character) == (4, 7)  # replaces the word typed, "tot"
    assert items[0].command.arguments == [items[0].data] and items[0].data["id"] == "c1"
    inline = inline_items(completion, cursor, "file:///a.js")
    assert [(i.insert_text, i.range.start.character, i.range.end.character) for i in inline] == [("al", 7, 7)]


def test_multi_line_choices_get_a_short_label():
    completion, cursor = completion_at("if (x) ", 7, "{\n  go();\n}")
    (item,) = completion_items(completion, cursor, "file:///a.js")
    assert item.label == "{…" and item.text_edit.new_text == "{\n  go();\n}"


def test_a_newer_request_supersedes_the_older_one():
    async def scenario():
        latest, started = LatestOnly(debounce_s=0.01), []

        async def work(name):
            started.append(name)
            await asyncio.sleep(0.05)
            return name

        first = asyncio.ensure_future(latest.run("doc", lambda: work("first")))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(latest.run("doc", lambda: work("second")))
        other = asyncio.ensure_future(latest.run("other", lambda: work("other")))
        with pytest.raises(Superseded):
            await first
        assert await second == "second" and await other == "other"
        assert started == ["second", "other"]  # the first never left its debounce

        outer = asyncio.ensure_future(latest.run("doc", lambda: work("cancelled")))
        await asyncio.sleep(0.03)  # past the debounce, inside the work
        outer.cancel()  # as $/cancelRequest does
        with pytest.raises(asyncio.CancelledError):
            await outer
        assert latest.superseded == 1

    asyncio.run(scenario())


def test_feedback_views_selects_once_and_dismisses_what_was_passed_over():
    async def scenario():
        sent = []

        async def send(kind, completion_id, index):
            sent.append((kind, completion_id, index))
            return True

        feedback = Feedback(send)
        feedback.start()
        feedback.shown("a", "c1", [0, 1])
        feedback.shown("a", "c2", [0])  # c1 superseded, not accepted
        feedback.accepted("c2", 0)
        feedback.accepted("c2", 0)  # a second accept of the same item (command and resolve) counts once
        feedback.shown("a", None, [])  # c2 was accepted: no dismiss
        feedback.shown("b", "c3", [0])
        feedback.close_all()
        await feedback.flush(timeout_s=1)
        return sent

    assert asyncio.run(scenario()) == [
        ("view", "c1", 0), ("view", "c1", 1), ("dismiss", "c1", 0), ("dismiss", "c1", 1), ("view", "c2", 0),
        ("select", "c2", 0), ("view", "c3", 0), ("dismiss", "c3", 0),
    ]  # fmt: skip
