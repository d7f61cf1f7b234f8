"""The real server: `codecomp-serve` in its own process, containers in theirs, ZeroMQ, HTTP on a socket.

Checkpoints are tiny models trained here on the fixture corpus; what is checked is the plumbing
(processes, RPC, restarts, durable feedback), not completion quality.
"""

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from benchmarks.loadgen.launch import ServerProcess
from tests.test_serve_orphans import descendants, running, seconds_until_gone

# `checkpoints` (tiny models trained on the fixture corpus) comes from conftest.py, shared with test_lsp_neovim.py.


def overrides(tmp_path, char, tree):
    # The n-gram of conf/serve.yaml (checkpoints/ngram, fitted by `make demo`) is not part of the plumbing tested here.
    return [f"models.char.checkpoint={char}", f"models.tree.checkpoint={tree}",
            f"store_path={tmp_path / 'feedback.sqlite'}", f"hydra.run.dir={tmp_path / 'run'}",
            "service.objective_ms=500", "models.char.replicas=2",
            "~models.ngram"]  # fmt: skip


def test_real_processes_answer_survive_sigkill_and_keep_feedback(tmp_path, checkpoints):
    server = ServerProcess(overrides(tmp_path, *checkpoints))
    with server:
        url = server.url
        health = httpx.get(f"{url}/v1/health").json()
        assert health["models"]["char"]["replicas"] == 2 and health["models"]["tree"]["replicas"] == 1
        payload = {"language": "javascript", "segments": {"prefix": "var total = add(1, 2);\nconsole.log(tot",
                                                          "suffix": ");\n"}, "user": "ada"}  # fmt: skip
        answer = httpx.post(f"{url}/v1/completions", json=payload, timeout=5).json()
        assert answer["models"] == {"char": "ok", "tree": "ok"}
        assert answer["choices"], answer
        cpp = httpx.post(
            f"{url}/v1/completions", json={"language": "cpp", "segments": {"prefix": "int main() {\n  ret"}}
        )
        assert cpp.status_code == 200 and cpp.json()["models"]["char"] == "ok"
        event = {"type": "select", "completion_id": answer["id"], "choice_index": 0}
        assert httpx.post(f"{url}/v1/events", json=event).status_code == 200

        models = httpx.get(f"{url}/v1/models").json()["models"]
        victim = next(m for m in models if m["name"] == "char")["replicas"][0]
        os.kill(victim["pid"], signal.SIGKILL)
        statuses = []
        with httpx.Client(timeout=5) as client:
            back_by = time.monotonic() + 30
            while time.monotonic() < back_by:
                response = client.post(f"{url}/v1/completions", json={**payload, "user": f"u{len(statuses)}"})
                statuses.append(response.status_code)
                replicas = client.get(f"{url}/v1/models").json()["models"][0]["replicas"]
                if len(replicas) == 2 and victim["pid"] not in [r["pid"] for r in replicas]:
                    break
                time.sleep(0.05)
        assert set(statuses) == {200}  # every request answered while the container was down
        assert len(replicas) == 2 and victim["pid"] not in [r["pid"] for r in replicas]  # a new process
        metrics = httpx.get(f"{url}/metrics").text
        assert 'codecomp_container_restarts_total{model="char"} 1.0' in metrics

        hung = next(m for m in httpx.get(f"{url}/v1/models").json()["models"] if m["name"] == "tree")["replicas"][0]
        os.kill(hung["pid"], signal.SIGSTOP)  # alive but silent: a hung container
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            replicas = next(m for m in httpx.get(f"{url}/v1/models").json()["models"] if m["name"] == "tree")[
                "replicas"
            ]
            if replicas and replicas[0]["pid"] != hung["pid"]:
                break
            time.sleep(0.1)
        assert replicas and replicas[0]["pid"] != hung["pid"]  # killed and replaced by the supervisor
        with pytest.raises(ProcessLookupError):
            os.kill(hung["pid"], 0)
        tree = descendants(server.process.pid)  # the forkserver, the containers
    assert server.process.returncode == 0  # Ctrl-C: a clean stop
    assert seconds_until_gone(tree) < 2.0 and not running(tree)  # and every process it started is gone
    rows = subprocess.run(
        [sys.executable, "-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("
         "'select type, user, model from events').fetchall())", str(tmp_path / "feedback.sqlite")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert rows.strip() == f"[('select', 'ada', '{answer['choices'][0]['model']}')]"


def test_a_missing_or_damaged_checkpoint_stops_start_up_with_a_clear_error(tmp_path):
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(b"not a checkpoint at all")
    for checkpoint, message in ((tmp_path / "missing.ckpt", "no checkpoint at"), (damaged, "damaged")):
        with (
            pytest.raises(RuntimeError, match="exited with code 1") as failure,
            ServerProcess(overrides(tmp_path, checkpoint, checkpoint)),
        ):
            pass
        assert message in str(failure.value)


def test_the_first_answer_of_a_fresh_server_to_a_new_session_is_whole(tmp_path, checkpoints):
    """Containers warm up before they say hello: the first request at no load is not cut short by its
    deadline (the default objective, 50 ms), though its session's prefix is read afresh."""
    char, tree = checkpoints
    settings = [f"models.char.checkpoint={char}", f"models.tree.checkpoint={tree}",
                f"store_path={tmp_path / 'feedback.sqlite'}", f"hydra.run.dir={tmp_path / 'run'}",
                "service.cache_bytes=0", "service.approx_entries=0", "service.typed_sessions=0",
                "~models.ngram",
                # The untrained tiny model never ends a line: 32 bytes took it 22-38 ms here, at the edge of the 40
                # ms the model gets (the test failed 1 run in 8); 16 take 17-25 ms, so a cut-short first answer is
                # a stall, not this machine's noise.
                "models.char.options.max_chars=16"]  # fmt: skip
    context = "".join(f"const v{i} = add({i}, {i + 1});\n" for i in range(12))  # 300 bytes, all read afresh

    def ask(url, n):
        prefix = f"// {n}\n{context}function add(a, b) {{\n  return "  # the Char-LSTM's, as in `make serve`
        payload = {"language": "javascript", "segments": {"prefix": prefix, "suffix": "\n}\n"}, "user": n}
        return httpx.post(f"{url}/v1/completions", json=payload, timeout=5).json()

    with ServerProcess(settings) as server:
        first = ask(server.url, "first")
        later = [ask(server.url, f"later{i}") for i in range(3)] if first["degraded"] else []
    if first["degraded"]:  # cut short: a cold start, unless every answer is on a machine this busy
        assert all(answer["degraded"] for answer in later), f"only the first answer was cut short: {first}"
        pytest.skip("every answer is cut short here: the machine is too busy to time a 50 ms objective")
    assert first["models"]["char"] == "ok" and set(first["models"].values()) == {"ok"}, first
