"""End to end in a real editor: Neovim (headless, its own LSP client) -> codecomp-lsp -> a live codecomp-serve
with tiny checkpoints trained on the fixture corpus.

Neovim, set up as editors/neovim/codecomp.lua says, types into a C++ and a JavaScript file, asks for
completion through `vim.lsp.buf_request_sync`, applies the first item's text edit as Neovim does
(`vim.lsp.util.apply_text_edits`) and runs its accept command; the line it then holds must be the typed
line with the choice the server served, as the server recorded it with the `select` event, inserted
without repeating the text after the cursor. Then it types a line in insert mode and completes it with
the omnifunc (<C-x><C-o>, <C-y>), as a user does. Then a client pointed at a dead server must answer
quickly and empty, and say so once. The Lua is written for Neovim 0.7 (Debian bookworm's).
"""

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks.loadgen.launch import ServerProcess, free_port
from codecomp.serve.lsp.items import overlap

pytestmark = pytest.mark.skipif(
    shutil.which("nvim") is None, reason="needs Neovim (`nvim` on PATH: apt-get install neovim)"
)

EDITORS = Path(__file__).resolve().parent.parent / "editors"
# (file, its text, the line and UTF-8 byte column of the cursor, text typed there one keystroke at a time)
FILES = [
    ("main.cpp", "// compté 😀\nint total = add(1, 2);\nint main() {\n  \n}\n", 3, 2, "return tot"),
    ("app.js", "var total = add(1, 2);\n// ünïcode 😀\nconsole.log();\n", 2, 12, "tot"),
]

SCRIPT = r"""
local params = vim.fn.json_decode(vim.fn.readfile(PARAMS)[1])
local out = { files = {}, dead = {}, messages = {} }
vim.lsp.handlers['window/showMessage'] = function(_, result) table.insert(out.messages, result.message) end
package.path = params.editors .. '/neovim/?.lua;' .. package.path
local codecomp = require('codecomp')
vim.cmd('filetype on')
codecomp.setup({ cmd = params.cmd, init_options = params.options })  -- the set-up of editors/README.md

local function client_of(bufnr)
  assert(vim.wait(20000, function()
    local clients = vim.lsp.buf_get_clients(bufnr)
    return #clients > 0 and clients[next(clients)].initialized
  end, 20), 'the language server did not start')
  local clients = vim.lsp.buf_get_clients(bufnr)
  return clients[next(clients)]
end

local function request(bufnr, row, col)  -- col: UTF-8 bytes; the position goes in UTF-16 units
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1]
  local _, character = vim.str_utfindex(line, col)
  local started = vim.loop.hrtime()
  local answers = vim.lsp.buf_request_sync(bufnr, 'textDocument/completion', {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) }, position = { line = row, character = character },
  }, 15000)
  local items = {}
  for _, answer in pairs(answers or {}) do
    for _, item in ipairs((answer.result or {}).items or {}) do table.insert(items, item) end
  end
  return items, (vim.loop.hrtime() - started) / 1e6
end

local function keys(text) vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(text, true, false, true), 't', false) end

local function when(condition, action)  -- poll from the main loop, so that typed keys get processed
  local give_up = vim.loop.now() + 15000
  local function poll()
    if condition() or vim.loop.now() > give_up then action() else vim.defer_fn(poll, 20) end
  end
  vim.defer_fn(poll, 20)
end

-- 1. Each file: typed one keystroke at a time, completion through buf_request_sync, the first item applied
local client
for _, file in ipairs(params.files) do
  vim.cmd('edit ' .. vim.fn.fnameescape(file.path))
  local bufnr = vim.api.nvim_get_current_buf()
  client = client_of(bufnr)
  local row, col = file.row, file.col
  for i = 1, #file.typed do  -- each keystroke a didChange
    vim.api.nvim_buf_set_text(bufnr, row, col, row, col, { file.typed:sub(i, i) })
    col = col + 1
  end
  local before = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1]
  local items, ms = request(bufnr, row, col)
  local attempts = 1
  while #items == 0 and attempts < 3 do  -- as a user asks again: a cold server's first answer may be empty
    items, ms = request(bufnr, row, col)
    attempts = attempts + 1
  end
  local record = { name = file.name, filetype = vim.bo[bufnr].filetype, line = before, cursor = col,
                   labels = {}, ms = ms, attempts = attempts }
  for _, item in ipairs(items) do table.insert(record.labels, item.label) end
  if #items > 0 then
    vim.lsp.util.apply_text_edits({ items[1].textEdit }, bufnr, 'utf-16')
    codecomp.accept(bufnr, items[1])
    record.index, record.id = items[1].data.index, items[1].data.id
  end
  record.after = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1]
  table.insert(out.files, record)
end

-- 2. In the last file, as a user does: a new line typed in insert mode, <C-x><C-o>, <C-y> accepts
local accepted
vim.api.nvim_create_autocmd('CompleteDone', { callback = function()
  accepted = vim.tbl_get(vim.v.completed_item, 'user_data', 'nvim', 'lsp', 'completion_item', 'data')
end })
keys('Goconsole.log(tot<C-x><C-o>')
when(function() return vim.fn.pumvisible() == 1 end, function()
  out.omni = { popup = vim.fn.pumvisible() == 1, line = 'console.log(tot' }
  keys('<C-y><Esc>')
  when(function() return accepted ~= nil and vim.api.nvim_get_mode().mode == 'n' end, function()
    out.omni.after = vim.api.nvim_get_current_line()
    if accepted then out.omni.id, out.omni.index = accepted.id, accepted.index end

    -- 3. A server that is not there: empty answers, at once, and one message
    vim.cmd('enew')  -- no filetype (so not the live client): the plugin knows JavaScript by the extension
    local dead_buf = vim.api.nvim_get_current_buf()
    vim.api.nvim_buf_set_name(dead_buf, params.dead_file)
    vim.api.nvim_buf_set_lines(dead_buf, 0, -1, false, { 'let x = fo' })
    local dead_id = codecomp.start(dead_buf, { name = 'codecomp-dead', cmd = params.cmd,
                                               init_options = params.dead_options })
    client_of(dead_buf)
    for _ = 1, 3 do
      local items, ms = request(dead_buf, 0, 10)
      table.insert(out.dead, { items = #items, ms = ms })
    end
    when(function() return #out.messages > 0 end, function()  -- the message is handled in the main loop
      client.stop()  -- the plugin sends its last feedback events before it stops
      vim.lsp.get_client_by_id(dead_id).stop()
      when(function() return #vim.lsp.get_active_clients() == 0 end, function()
        vim.fn.writefile({ vim.fn.json_encode(out) }, params.out)
        vim.cmd('qa!')
      end)
    end)
  end)
end)
"""


def lsp_command() -> list[str]:
    script = Path(sys.executable).parent / "codecomp-lsp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "codecomp.serve.lsp.cli"]


def test_neovim_completes_from_a_live_server_and_survives_a_dead_one(tmp_path, checkpoints):
    char, tree = checkpoints
    files = []
    for name, text, row, col, typed in FILES:
        (tmp_path / name).write_text(text)
        files.append({"name": name, "path": str(tmp_path / name), "row": row, "col": col, "typed": typed})
    # The n-gram of conf/serve.yaml (fitted by `make demo`) is not needed here.
    overrides = [f"models.char.checkpoint={char}", f"models.tree.checkpoint={tree}",
                 f"store_path={tmp_path / 'feedback.sqlite'}", f"hydra.run.dir={tmp_path / 'run'}",
                 "service.objective_ms=500", "~models.ngram"]  # fmt: skip
    with ServerProcess(overrides) as server:
        common = {"debounce_ms": 0, "timeout_s": 10, "user": "nvim"}
        params = {
            "editors": str(EDITORS),
            "cmd": [*lsp_command(), "--log-file", str(tmp_path / "lsp.log"), "--log-level", "DEBUG"],
            "files": files,
            "out": str(tmp_path / "out.json"),
            "dead_file": str(tmp_path / "dead.js"),
            "options": {"url": server.url, **common},
            "dead_options": {"url": f"http://127.0.0.1:{free_port()}", **common, "timeout_s": 1},
        }
        (tmp_path / "params.json").write_text(json.dumps(params))
        script = tmp_path / "e2e.lua"
        script.write_text(f"local PARAMS = {json.dumps(str(tmp_path / 'params.json'))}\n" + SCRIPT)
        run = subprocess.run(["nvim", "--headless", "-u", "NONE", "-i", "NONE", "-n", "-c", f"luafile {script}"],
                             capture_output=True, text=True, timeout=90, cwd=tmp_path)  # fmt: skip
        assert (tmp_path / "out.json").exists(), f"nvim failed ({run.returncode}):\n{run.stdout}\n{run.stderr}"
    out = json.loads((tmp_path / "out.json").read_text())
    with sqlite3.connect(tmp_path / "feedback.sqlite") as db:
        query = "SELECT completion_id, choice_index, text FROM events WHERE type = 'select' AND user = 'nvim'"
        selected = {(row[0], row[1]): row[2] for row in db.execute(query)}
        views = db.execute("SELECT count(*) FROM events WHERE type = 'view'").fetchone()[0]

    transcript = []
    for record, (name, *_rest, typed) in zip(out["files"], FILES, strict=True):
        assert record["filetype"] == ("cpp" if name.endswith(".cpp") else "javascript")
        assert record["labels"], f"no completion for {name}: {record}\n{(tmp_path / 'lsp.log').read_text()}"
        served = selected[(record["id"], record["index"])]  # the choice as the server served it
        line, cursor = record["line"].encode(), record["cursor"]
        before, rest = line[:cursor].decode(), line[cursor:].decode()
        expected = before + served[: len(served) - overlap(served, rest)] + rest
        assert record["after"] == expected
        transcript.append(f"{name}: typed {typed!r} -> {record['line']!r}; items {record['labels']};"
                          f" accepted choice {record['index']} {served!r} -> {record['after']!r}"
                          f" ({record['ms']:.0f} ms, attempt {record['attempts']})")  # fmt: skip
    omni = out["omni"]  # through the set-up of editors/: omnifunc, <C-y>, and CompleteDone sending `select`
    assert omni["popup"] and "id" in omni, omni
    served = selected[(omni["id"], omni["index"])]
    assert omni["after"] == omni["line"] + served
    transcript.append(f"app.js, insert mode: typed {omni['line']!r}, <C-x><C-o>, <C-y> -> {omni['after']!r}")
    assert views >= len(FILES) + 1
    assert [d["items"] for d in out["dead"]] == [0, 0, 0]
    assert all(d["ms"] < 1500 for d in out["dead"]), out["dead"]
    assert len([m for m in out["messages"] if "cannot reach" in m]) == 1, out["messages"]
    transcript.append(f"dead server: {[round(d['ms']) for d in out['dead']]} ms, told: {out['messages']}")
    print(textwrap.indent("\n".join(transcript), "  "))
