"""The serving layer: a Tabby-compatible HTTP frontend, model containers over ZeroMQ, adaptive batching,
prediction caches and deadlines (see the README's Serving section and PROTOCOL.md)."""
