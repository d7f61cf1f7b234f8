"""The serving layer (frontend, model containers, batching, caches, LSP): see its issue; not built yet."""
