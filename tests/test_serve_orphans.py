"""Every process the server starts is gone within 2 s of the frontend's end, however it ends: killed outright
(SIGKILL), or started in the background with SIGINT ignored and stopped by `make stop` (a clean stop with
Ctrl-C: tests/test_serve_processes.py).

Real processes: `codecomp-serve` with the tiny checkpoints of conftest.py, its forkserver and its containers.
The process tree is read from /proc before the frontend ends.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.loadgen.launch import ServerProcess, wait_healthy

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
MAKEFILE = Path(__file__).resolve().parent.parent / "Makefile"


def overrides(tmp_path, char, tree):
    # The n-gram of conf/serve.yaml (checkpoints/ngram, fitted by `make demo`) is not part of the plumbing tested here.
    return [f"models.char.checkpoint={char}", f"models.tree.checkpoint={tree}",
            f"store_path={tmp_path / 'feedback.sqlite'}", f"hydra.run.dir={tmp_path / 'run'}",
            "~models.ngram"]  # fmt: skip


def _state_and_parent(pid: int) -> tuple[str, int] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (name) ": state, ppid, ...
    return fields[0], int(fields[1])


def descendants(root: int) -> list[int]:
    """Every process below `root`: its children, theirs, and so on."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := _state_and_parent(int(entry))) is not None:
            children.setdefault(found[1], []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            tree.append(child)
            todo.append(child)
    return tree


def running(pids: list[int]) -> list[int]:
    """Those still running (a zombie waiting for its new parent to reap it has ended)."""
    return [pid for pid in pids if (found := _state_and_parent(pid)) is not None and found[0] != "Z"]


def seconds_until_gone(pids: list[int], limit_s: float = 5.0) -> float:
    started = time.monotonic()
    while running(pids) and time.monotonic() - started < limit_s:
        time.sleep(0.01)
    return time.monotonic() - started


def the_server_tree(url: str, frontend: int) -> list[int]:
    """The frontend's descendants, checked to hold the containers it serves with (so, their forkserver too)."""
    tree = descendants(frontend)
    containers = [r["pid"] for m in httpx.get(f"{url}/v1/models").json()["models"] for r in m["replicas"]]
    assert containers and set(containers) <= set(tree) and len(tree) > len(containers), (containers, tree)
    return tree


def test_a_frontend_killed_outright_takes_every_process_it_started_with_it(tmp_path, checkpoints):
    with ServerProcess(overrides(tmp_path, *checkpoints)) as server:
        tree = the_server_tree(server.url, server.process.pid)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        took = seconds_until_gone(tree)
        assert not running(tree), f"left behind after SIGKILL: {running(tree)}"
        assert took < 2.0


def test_make_stop_ends_a_server_started_in_the_background_with_every_process_it_started(tmp_path, checkpoints):
    launcher = ServerProcess(overrides(tmp_path, *checkpoints))  # for its command and port; started here instead
    (tmp_path / "logs").mkdir()
    # As `make serve` starts it: in the background of a shell (SIGINT ignored), in a session of its own.
    background = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *launcher.command]
    process = subprocess.Popen(background, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_healthy(launcher.url, 120, process)
        tree = the_server_tree(launcher.url, process.pid)
        (tmp_path / "logs" / "serve.pid").write_text(f"{process.pid}\n")
        stopper = subprocess.Popen(["make", "-s", "-f", str(MAKEFILE), "stop"], cwd=tmp_path)
        process.wait(timeout=30)  # reaped here, so that `make stop` sees it gone
        assert stopper.wait(timeout=30) == 0
        assert seconds_until_gone(tree) < 2.0 and not running(tree)
        assert not (tmp_path / "logs" / "serve.pid").exists()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


LAUNCHER = """
import sys
from benchmarks.loadgen.launch import ServerProcess
server = ServerProcess(sys.argv[1:]).__enter__()
print(server.process.pid, server.url, flush=True)
sys.stdin.read()  # until killed
"""


def test_a_benchmark_killed_outright_takes_the_servers_it_started_with_it(tmp_path, checkpoints):
    """A benchmark or test that starts servers (benchmarks/loadgen/launch.py) and is killed leaves none behind."""
    root = Path(__file__).resolve().parent.parent
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, *overrides(tmp_path, *checkpoints)], cwd=root,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert launcher.stdout is not None
        pid, url = launcher.stdout.readline().split()
        tree = [int(pid), *the_server_tree(url, int(pid))]
        launcher.kill()
        launcher.wait()
        # SIGTERM reaches the frontend (a clean stop: it takes its containers with it); 10 s covers the drain.
        assert seconds_until_gone(tree, limit_s=10.0) < 10.0, f"left behind: {running(tree)}"
    finally:
        if launcher.poll() is None:
            launcher.kill()
