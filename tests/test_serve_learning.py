"""The selection layer's learning through the real server: feedback changes the weights, which survive a
restart (SQLite), with `codecomp-serve` and its containers as real processes."""

import os
import signal

import httpx
import pytest

from benchmarks.loadgen.launch import ServerProcess
from tests.test_serve_processes import overrides


def selection(url):
    return httpx.get(f"{url}/v1/models", timeout=5).json()["selection"]


def test_feedback_moves_the_weights_and_they_survive_a_killed_server(tmp_path, checkpoints):
    # Without learning from typing, the policy learns from the events (with it, from what the session types next).
    settings = [*overrides(tmp_path, *checkpoints), "models.char.replicas=1", "service.selection.policy=exp4",
                "service.selection.learn_from_typing=false"]  # fmt: skip
    with ServerProcess(settings) as server:
        assert selection(server.url)["population_weights"]["javascript"] == {}  # nothing learned yet
        taught = 0
        with httpx.Client(timeout=5) as client:
            for i in range(12):
                prefix = f"var total{i} = add(1, 2);\nconsole.log(tot"
                answer = client.post(
                    f"{server.url}/v1/completions",
                    json={"language": "javascript", "user": "ada", "segments": {"prefix": prefix, "suffix": ");\n"}},
                ).json()
                tree = [c["index"] for c in answer["choices"] if c["model"] == "tree"]
                if not tree:
                    continue
                event = {"type": "select", "completion_id": answer["id"], "choice_index": tree[0]}  # ada likes tree's
                assert client.post(f"{server.url}/v1/events", json=event).json()["known"] is True
                taught += 1
        assert taught >= 3
        learned = selection(server.url)
        assert learned["updates"] == taught and learned["users"] == 1
        weights = learned["population_weights"]["javascript"]
        assert weights["tree"] > weights["char"]
        os.kill(server.process.pid, signal.SIGKILL)  # no clean shutdown: what was acknowledged must be on disk
        server.process.wait(10)
    with ServerProcess(settings) as again:
        restored = selection(again.url)["population_weights"]["javascript"]
        assert restored == pytest.approx(weights)
