"""Per-model deadline queues and adaptive batching, replicas and their workers, RPC transport, supervisor."""
