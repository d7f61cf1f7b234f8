"""Run a `redis-server` of one's own as a child process on a free loopback port: for benchmarks and tests of
the shared selection state (store.backend=redis). Redis is Debian's package (`apt-get install -y redis-server`)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from benchmarks.loadgen.launch import free_port

NOT_INSTALLED = "redis-server is not installed (Debian: apt-get install -y redis-server; .ci/run installs it)"


def installed() -> bool:
    return shutil.which("redis-server") is not None


class RedisProcess:
    """A redis-server on a free loopback port, its append-only file in `folder`, so that a killed and restarted
    one keeps what it acknowledged.

    Args:
        folder: Where Redis keeps its append-only file.
        appendfsync: `always` (every write on disk before the reply: what a kill-and-restart test needs) or
            `everysec` (Redis's usual setting, at most a second lost on a crash: what a benchmark measures).
    """

    def __init__(self, folder: Path, appendfsync: str = "always") -> None:
        self.folder, self.port, self.appendfsync = folder, free_port(), appendfsync
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (again, on the same port and file after `kill`) and wait until it answers a ping."""
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--save", "", "--appendonly", "yes", "--appendfsync", self.appendfsync],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = self.client()
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL: nothing flushed on the way out (what `appendfsync always` acknowledged is on disk)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)
