"""`codecomp-lsp`, the editor plugin: a language server (pygls, over stdio) that is a client of the completion
server's HTTP API only (`POST /v1/completions`, `POST /v1/events`); it imports nothing else of `codecomp.serve`
and no torch, so it starts fast beside any editor.

Modules: `positions` (LSP positions in UTF-16/UTF-8/UTF-32 units to string and byte offsets), `documents` (the
open files, kept by incremental sync), `config` (settings), `client` (HTTP, with back-off and telling the user
once), `latest` (debounce; a newer request cancels an older one), `items` (choices to LSP items), `feedback`
(view/select/dismiss events), `server` (the LSP handlers), `cli` (the console script).
"""
