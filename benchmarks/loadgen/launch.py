"""Run `codecomp-serve` as a child process on a free port: for benchmarks and end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from codecomp.serve import lifeline


def wait_healthy(url: str, timeout_s: float = 120.0, process: subprocess.Popen[str] | None = None) -> dict[str, Any]:
    """Poll `url`/v1/health until every model has a live replica (raises if `process` exits first)."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            health: dict[str, Any] = httpx.get(f"{url}/v1/health", timeout=1.0).json()
            if health["status"] == "ok":
                return health
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server at {url} was not healthy within {timeout_s:.0f} s")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """`with ServerProcess(overrides, log_path) as server:` starts the server and waits until it is healthy.

    The server runs in a session (and process group) of its own, so that stopping it ends every process it
    started, even where it was started with SIGINT ignored (in the background of a shell).

    Args:
        overrides: Hydra overrides of conf/serve.yaml (`models.char.replicas=1`, ...).
        log: where the server's output goes (a file keeps a long run's pipe from filling up).
    """

    def __init__(self, overrides: Sequence[str] = (), log: Path | None = None, ready_timeout_s: float = 120.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "codecomp.serve.api.cli", f"port={self.port}", *overrides]
        self.log, self.ready_timeout_s = log, ready_timeout_s
        self.process: subprocess.Popen[str] | None = None
        self._log_file: IO[str] | None = None

    def __enter__(self) -> ServerProcess:
        output: Any = subprocess.PIPE
        if self.log is not None:
            self._log_file = output = open(self.log, "w")  # closed in stop()
        self.process = subprocess.Popen(
            self.command, stdout=output, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            preexec_fn=_stop_with_launcher,
        )  # fmt: skip
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def output(self) -> str:
        if self.log is not None:
            return self.log.read_text()
        assert self.process is not None and self.process.stdout is not None
        return self.process.stdout.read()

    def wait_healthy(self) -> dict[str, Any]:
        try:
            return wait_healthy(self.url, self.ready_timeout_s, self.process)
        except RuntimeError as error:
            raise RuntimeError(f"{error}:\n{self.output()}") from None

    def stop(self) -> int | None:
        """Stop it as Ctrl-C would (containers shut down with it), then kill whatever is left of its
        process group; returns the frontend's exit code."""
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
        else:
            self.process.send_signal(signal.SIGINT)  # uvicorn handles it even where it was ignored at start
            try:
                code = self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):  # nothing left: the usual case
                os.killpg(self.process.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
        return code


if __name__ == "__main__":  # `python -m benchmarks.loadgen.launch URL`: wait until the server there is healthy
    print(wait_healthy(sys.argv[1]))


def _stop_with_launcher() -> None:
    """In the server's process, before it runs: SIGTERM (a clean stop, containers with it) when the benchmark or
    test that started it dies, even by SIGKILL. Its session of its own keeps the terminal's signals away from it,
    so nothing else would stop it."""
    lifeline.set_parent_death_signal(signal.SIGTERM)
