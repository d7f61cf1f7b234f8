-- Neovim 0.11+: put this file at ~/.config/nvim/lsp/codecomp.lua and add to init.lua
--
--   vim.lsp.enable('codecomp')
--   -- 0.12+: ghost text as you type, <Tab> accepts it
--   vim.lsp.inline_completion.enable(true)
--   vim.keymap.set('i', '<Tab>', function()
--     if not vim.lsp.inline_completion.get() then return '<Tab>' end
--   end, { expr = true })
--
-- Classic completion: <C-x><C-o> (omnifunc), or vim.lsp.completion.enable(true, client_id, bufnr) in an
-- LspAttach autocmd. Neovim 0.7-0.10: use codecomp.lua in the folder above instead.
return {
  cmd = { 'codecomp-lsp' },
  filetypes = { 'cpp', 'javascript', 'javascriptreact' },
  root_markers = { '.git' },
  init_options = {
    url = 'http://127.0.0.1:8000', -- codecomp-serve; or set CODECOMP_URL
    -- token = '...',              -- if it was started with token=...; or set CODECOMP_TOKEN
  },
}
