-- Completions from codecomp-serve in Neovim 0.7+, through the codecomp-lsp language server.
--
-- Copy this file to ~/.config/nvim/lua/codecomp.lua and add to init.lua:
--
--   require('codecomp').setup({ init_options = { url = 'http://127.0.0.1:8000' } })
--
-- C++ and JavaScript buffers then get `omnifunc` completions (<C-x><C-o> in insert mode), and an
-- accepted item tells the server so (feedback for its ranking). On Neovim 0.12+, `inline = true` also
-- shows ghost text as you type (<Tab> accepts it). Options:
--   cmd           the server command (default { 'codecomp-lsp' }; a full path if it is not on PATH)
--   filetypes     where to attach (default { 'cpp', 'javascript', 'javascriptreact' })
--   init_options  sent as initializationOptions: url, token, user, debounce_ms, timeout_s, ... (see
--                 editors/README.md); or set CODECOMP_URL / CODECOMP_TOKEN in the environment
--   inline        ghost text on Neovim 0.12+ (default false)
local M = {}

M.defaults = {
  name = 'codecomp',
  cmd = { 'codecomp-lsp' },
  filetypes = { 'cpp', 'javascript', 'javascriptreact' },
  init_options = {},
  inline = false,
}

local clients = {} -- Neovim 0.7 has no vim.lsp.start: one client per name, started once

--- Start the language server (once per name) and attach it to `bufnr`; returns the client id.
function M.start(bufnr, opts)
  opts = vim.tbl_deep_extend('force', M.defaults, opts or {})
  local config = {
    name = opts.name,
    cmd = opts.cmd,
    root_dir = vim.fn.getcwd(),
    init_options = opts.init_options,
  }
  if vim.lsp.start then -- 0.8+: reuses a running client of the same name and root
    return vim.lsp.start(config, { bufnr = bufnr })
  end
  local id = clients[opts.name]
  if not id or not vim.lsp.get_client_by_id(id) then
    id = vim.lsp.start_client(config)
    clients[opts.name] = id
  end
  vim.lsp.buf_attach_client(bufnr, id)
  return id
end

--- Tell the server that `item` (an LSP completion item of ours) was accepted in `bufnr`: its command.
function M.accept(bufnr, item)
  if not (item and item.command and item.command.command == 'codecomp.accept') then
    return
  end
  local attached = vim.lsp.get_clients and vim.lsp.get_clients({ bufnr = bufnr }) or vim.lsp.buf_get_clients(bufnr)
  for _, client in pairs(attached) do
    if client.name == M.defaults.name then
      if vim.fn.has('nvim-0.11') == 1 then
        client:request('workspace/executeCommand', item.command, function() end, bufnr)
      else
        client.request('workspace/executeCommand', item.command, function() end, bufnr)
      end
    end
  end
end

function M.setup(opts)
  opts = vim.tbl_deep_extend('force', M.defaults, opts or {})
  M.defaults = opts
  local group = vim.api.nvim_create_augroup('codecomp', { clear = true })
  vim.api.nvim_create_autocmd('FileType', {
    group = group,
    pattern = opts.filetypes,
    callback = function(args)
      M.start(args.buf, opts)
      vim.bo[args.buf].omnifunc = 'v:lua.vim.lsp.omnifunc'
      if opts.inline and vim.lsp.inline_completion then -- Neovim 0.12+
        vim.lsp.inline_completion.enable(true, { bufnr = args.buf })
        vim.keymap.set('i', '<Tab>', function()
          if not vim.lsp.inline_completion.get() then
            return '<Tab>'
          end
        end, { expr = true, buffer = args.buf, desc = 'Accept the codecomp ghost text' })
      end
    end,
  })
  -- The omnifunc of Neovim 0.7-0.10 does not run an accepted item's command; this does.
  vim.api.nvim_create_autocmd('CompleteDone', {
    group = group,
    callback = function(args)
      local item = vim.tbl_get(vim.v.completed_item or {}, 'user_data', 'nvim', 'lsp', 'completion_item')
      M.accept(args.buf, item)
    end,
  })
end

return M
