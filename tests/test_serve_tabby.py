"""Tabby's editor clients against codecomp-serve, with only their endpoint changed: the requests tabby-agent
(clients/tabby-agent/src/http/tabbyApiClient.ts) sends, and the answers it reads.

tabby-agent asks `/v1/health` (GET, or POST on 405) with its token on connecting and every minute, takes
the server as ready on 2xx and as unauthorized on 401/403; asks `/v1/completions` with the editor's
language id, `segments` (prefix, suffix, filepath, git_url, snippets...) and no `user`, and reads
`choices[0]` and `id`; and posts view/select events with `view_id`, `elapsed` and `?select_kind=`.
"""

import asyncio
import socket
import threading
import time

import pytest
import uvicorn

from codecomp.serve.api.app import create_app
from codecomp.serve.api.languages import resolve
from codecomp.serve.api.server import Server
from codecomp.serve.dispatch.transport import InProcessRouter
from codecomp.serve.service.completion import CompletionInput
from tests.serve_fakes import body, config, running

AGENT = "Node.js/v20.11.0 tabby-agent/1.8.0 vscode/1.90.0 TabbyML.vscode-tabby/1.8.0"


def agent_request(prefix, suffix="\n}\n", language="typescript", filepath="src/sum.ts"):
    """A completion request as tabby-agent builds it (buildRequest.ts): no user, extra context fields."""
    return {
        "language": language,
        "segments": {
            "prefix": prefix, "suffix": suffix, "filepath": filepath, "git_url": "https://github.com/a/b.git",
            "declarations": [{"filepath": "src/util.ts", "body": "export function add(a, b) {}"}],
            "relevant_snippets_from_changed_files": [{"filepath": "src/x.ts", "body": "let y = 1", "score": 0.5}],
        },
    }  # fmt: skip


def test_tabby_agent_connects_completes_and_reports(tmp_path):
    async def scenario():
        async with running(config(tmp_path), token="s3cret") as run:
            headers = {"Authorization": "Bearer s3cret", "User-Agent": AGENT}
            health = await run.client.get("/v1/health", headers=headers)
            health_post = await run.client.post("/v1/health", headers=headers)  # Tabby servers before 0.3
            answer = await run.client.post("/v1/completions", json=agent_request("const total = compute"),
                                           headers=headers)  # fmt: skip
            completion = answer.json()
            view = {"type": "view", "completion_id": completion["id"], "choice_index": 0, "view_id": "v-1",
                    "elapsed": 12}  # fmt: skip
            event = await run.client.post("/v1/events", params={"select_kind": "line"}, json=view, headers=headers)
            return health, health_post, answer, event

    health, health_post, answer, event = asyncio.run(scenario())
    assert health.status_code == health_post.status_code == 200
    state = health.json()
    assert state["model"] == "echo"  # tabby-agent offers completions only when `model` is set
    assert {"device", "arch", "cpu_info", "cpu_count", "cuda_devices"} <= set(state)
    assert set(state["version"]) == {"git_describe", "build_date", "build_timestamp", "git_sha"}
    assert state["version"]["git_describe"].startswith("codecomp v")  # semver-coerced below 0.9: no /v1beta
    assert answer.status_code == 200
    completion = answer.json()
    assert completion["choices"][0] == {"index": 0, "text": "etupmoc!", "score": -0.5, "model": "echo",
                                        "version": "echo@v1"}  # fmt: skip
    assert completion["language"] == "javascript" and completion["reason"] is None  # TypeScript: the JS models
    assert event.status_code == 200


@pytest.mark.parametrize("authorization", ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "Bearer  s3cret"])
def test_the_bearer_scheme_is_case_insensitive(tmp_path, authorization):
    async def scenario():
        async with running(config(tmp_path), token="s3cret") as run:
            return (await run.client.get("/v1/health", headers={"Authorization": authorization})).status_code

    assert asyncio.run(scenario()) == 200


@pytest.mark.parametrize("authorization", [None, "Bearer S3CRET", "Basic s3cret", "Bearer", "s3cret", "Bearers3cret"])
def test_a_wrong_or_missing_token_is_unauthorized_everywhere_under_v1(tmp_path, authorization):
    async def scenario():
        async with running(config(tmp_path), token="s3cret") as run:
            headers = {"Authorization": authorization} if authorization else {}
            answers = [
                await run.client.get("/v1/health", headers=headers),
                await run.client.post("/v1/health", headers=headers),
                await run.client.post("/v1/completions", json=agent_request("x"), headers=headers),
                await run.client.get("/v1/models", headers=headers),
                await run.client.get("/v1/nothing-here", headers=headers),
            ]
            metrics = await run.client.get("/metrics")  # scrapers: outside /v1, open
            return answers, metrics

    answers, metrics = asyncio.run(scenario())
    assert [a.status_code for a in answers] == [401] * 5  # tabby-agent: status "unauthorized", not "ready"
    assert all(a.headers["www-authenticate"] == "Bearer" and "token" in a.json()["error"] for a in answers)
    assert metrics.status_code == 200


@pytest.mark.parametrize(
    ("language", "filepath", "served_as"),
    [
        ("typescript", "a.ts", "javascript"),
        ("typescriptreact", "a.tsx", "javascript"),
        ("javascriptreact", None, "javascript"),
        ("c", "a.c", "cpp"),
        ("cuda-cpp", "k.cu", "cpp"),
        ("objective-cpp", None, "cpp"),
        ("CPP", None, "cpp"),
        (None, "src/app.ts", "javascript"),  # no language: the file's extension
        ("", "include/vec.hpp", "cpp"),
        (None, "C:\\src\\main.CC", "cpp"),
    ],
)
def test_near_languages_are_answered_by_the_closest_served_models(tmp_path, language, filepath, served_as):
    async def scenario():
        async with running(config(tmp_path)) as run:
            request = {"language": language, "segments": {"prefix": "let total = compute", "suffix": None,
                                                          "filepath": filepath}}  # fmt: skip
            return await run.client.post("/v1/completions", json=request)

    answer = asyncio.run(scenario())
    assert answer.status_code == 200
    assert answer.json()["language"] == served_as and answer.json()["choices"][0]["text"] == "etupmoc!"


@pytest.mark.parametrize(
    ("language", "filepath", "says"),
    [
        ("python", "a.py", "no model for language 'python'; served: cpp, javascript"),
        ("plaintext", "a.js", "no model for language 'plaintext'"),  # the editor's language id wins
        (None, "Makefile", "no language given, nor a file path with an extension"),
        (None, None, "no language given"),
        (None, "notes.txt", "no model for a file named 'notes.txt'"),
    ],
)
def test_other_languages_get_an_empty_answer_that_says_why(tmp_path, language, filepath, says):
    async def scenario():
        async with running(config(tmp_path)) as run:
            request = {"language": language, "segments": {"prefix": "def f(x):\n    return ", "filepath": filepath}}
            answer = await run.client.post("/v1/completions", json=request)
            return answer, run.fakes[0].core.runner.batches

    answer, batches = asyncio.run(scenario())
    assert answer.status_code == 200  # not a 4xx, which tabby-agent takes for a broken server
    completion = answer.json()
    assert completion["choices"] == [] and completion["language"] is None and says in completion["reason"]
    assert completion["id"].startswith("cmpl-") and batches == []  # no model was asked


def test_resolve_keeps_to_the_served_languages():
    assert resolve("typescript", None, ["cpp"]).reason == "no model for language 'typescript'; served: cpp"
    assert resolve("c", None, ["cpp"]).language == "cpp"
    assert resolve(None, "x/y.jsx", ["javascript"]).language == "javascript"


def test_anonymous_editors_keep_sessions_of_their_own(tmp_path):
    """No user and no filepath: the session follows the client (host and program) and the document's first line,
    so two editors do not evict each other's prefix state, and one editor keeps one session while typing."""

    async def scenario():
        async with running(config(tmp_path, cache_bytes=0, typed_sessions=0, approx_entries=0)) as run:
            vim, code = {"User-Agent": "nvim"}, {"User-Agent": AGENT}
            document = "// totals\nconst total = comp"
            for typed in ("", "u", "ut"):  # one editor typing through one document
                await run.client.post("/v1/completions", json=body(document + typed, user=None), headers=vim)
            await run.client.post("/v1/completions", json=body(document, user=None), headers=code)  # another editor
            other = "// another file\nconst total = comp"
            await run.client.post("/v1/completions", json=body(other, user=None), headers=vim)  # another document
            await run.client.post("/v1/completions", json=body(document, user="ada"), headers=vim)  # a named user
            return run.fakes[0].core.runner.sessions

    sessions = asyncio.run(scenario())
    assert len(sessions) == 6
    assert len(set(sessions[:3])) == 1  # typing keeps the session
    assert len({sessions[0], sessions[3], sessions[4], sessions[5]}) == 4
    assert sessions[5].startswith("ada\0")


def test_session_key_parts():
    one = CompletionInput("cpp", b"#include <a>\nint x", b"", client="10.0.0.1/abc")
    assert one.session == CompletionInput("cpp", b"#include <a>\nint xy", b"", client="10.0.0.1/abc").session
    assert one.session != CompletionInput("cpp", b"#include <a>\nint x", b"", client="10.0.0.2/abc").session
    assert CompletionInput("cpp", b"x", b"", "ada", "a.cc").session == "ada\0a.cc\0cpp"  # named: as before
    # on the first line the head is not known yet: one session until the line ends
    assert CompletionInput("cpp", b"int", b"").session == CompletionInput("cpp", b"int x", b"").session


def test_git_url_and_filepath_name_the_file(tmp_path):
    async def scenario():
        async with running(config(tmp_path, cache_bytes=0, typed_sessions=0, approx_entries=0)) as run:
            for repository in ("https://github.com/a/one.git", "https://github.com/a/two.git"):
                request = agent_request("const total = compute", language="javascript", filepath="src/index.js")
                request["segments"]["git_url"] = repository
                await run.client.post("/v1/completions", json=request)
            return run.fakes[0].core.runner.sessions

    one, two = asyncio.run(scenario())
    assert "one.git/src/index.js" in one and "two.git/src/index.js" in two


def test_the_rest_of_the_line_is_not_repeated(tmp_path):
    """The echo model answers `cba!` for a prefix ending in `abc`; with `!)` after the cursor its `!` is there."""

    async def scenario():
        async with running(config(tmp_path)) as run:
            mid_line = await run.client.post("/v1/completions", json=body("print( abc", suffix="!);\nnext"))
            line_end = await run.client.post("/v1/completions", json=body("print( abc", suffix="\n);"))
            return mid_line.json()["choices"], line_end.json()["choices"]

    mid_line, line_end = asyncio.run(scenario())
    assert [c["text"] for c in mid_line] == ["cba", "second"]
    assert [c["text"] for c in line_end] == ["cba!", "second"]  # the rest is on the next line: nothing to trim


def test_a_body_that_never_finishes_is_cut_off(tmp_path):
    """A real uvicorn server, a real socket: a declared Content-Length and one byte sent gets 408 and a closed
    connection after `body_timeout_s`, and the server goes on answering."""
    cfg = config(tmp_path)
    cfg.body_timeout_s = 0.5
    server = Server(cfg, transport=InProcessRouter(), supervise=False)
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    web = uvicorn.Server(uvicorn.Config(create_app(server), log_level="warning"))
    thread = threading.Thread(target=web.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if web.started:
                break
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            head = (
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
            )
            client.sendall(head + b"\r\n{")
            started = time.monotonic()
            received = b""
            while chunk := client.recv(4096):  # until the server closes the connection
                received += chunk
            waited = time.monotonic() - started
        assert received.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s" in received
        assert 0.4 < waited < 5
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        web.should_exit = True
        thread.join(timeout=10)
