"""The feedback replay's parts: the tuning/reporting split, the recovery measures, the answers of a model gone
bad, and the untrained checkpoint of the hot-reload scenario."""

import torch

from benchmarks.loadgen.editors import Request
from benchmarks.replay.answers import untrained
from benchmarks.replay.recovery import misplaced, recovery, swapped, windowed
from benchmarks.replay.simulate import Outcome, in_part, rate
from codecomp.checkpoint import load
from codecomp.inference.families import load_completer
from codecomp.serve.protocol import WireCandidate


def outcomes(pattern: str) -> list[Outcome]:
    return [Outcome(True, c == "1", 3 if c == "1" else 0) for c in pattern]


def test_requests_on_even_files_tune_and_the_others_are_reported():
    trace = [Request(0.0, "editor-0", "cpp", document, 0, "x") for document in (0, 1, 2, 3)]
    assert in_part(trace, "tune") == [True, False, True, False]
    assert in_part(trace, "report") == [False, True, False, True] and all(in_part(trace, "all"))


def test_recovery_counts_events_until_the_window_is_back_within_five_percent():
    run = outcomes("1010" * 10 + "0000" * 10 + "1010" * 10)  # 50% before, nothing for 40 events, 50% again
    counted = [True] * len(run)
    back = recovery(run, counted, 40, window=8)
    assert back is not None and back > 40
    assert recovery(outcomes("1010" * 10 + "0000" * 10), counted[:80], 40, window=8) is None  # never
    lucky = outcomes("1010" * 10 + "0000" + "1111" + "0000" * 8 + "1010" * 10)  # a burst just after the switch
    assert recovery(lucky, counted, 40, window=8) == 46  # not at the burst (a chance): once back for good, at 80
    reference = outcomes("1010" * 10 + "0000" * 10)  # the best possible does no better: adapted at once
    assert recovery(reference, counted[:80], 40, window=8, target=reference) == 1
    assert windowed(run, counted, 40) == [0.5, 0.0, 0.5] and rate(run) == 40 / 120


def test_a_degraded_model_answers_with_other_requests_candidates_and_a_swap_is_undone():
    answers = [[WireCandidate(f"c{i}".encode(), 0.0)] for i in range(50)] + [[]]
    bad = misplaced(answers, 10)
    assert bad[:10] == answers[:10] and bad[-1] == []  # unanswered requests stay unanswered
    assert sum(a != b for a, b in zip(bad[10:50], answers[10:50], strict=True)) > 30
    other = [[WireCandidate(b"x", -1.0)]] * 51
    back = swapped(answers, other, 5, 8)
    assert back[4] == answers[4] and back[5:8] == other[5:8] and back[8:] == answers[8:]


def test_an_untrained_checkpoint_has_the_family_and_config_of_the_good_one(checkpoints, tmp_path):
    _, tree = checkpoints
    path = untrained(tree, tmp_path / "untrained.ckpt")
    good, fresh = load(tree), load(path)
    assert fresh.description.family == good.description.family == "tree_lstm"
    assert fresh.description.model_config == good.description.model_config
    assert fresh.description.vocab == good.description.vocab and fresh.version != good.version
    assert fresh.state.keys() == good.state.keys()
    assert any(not torch.equal(fresh.state[k], good.state[k]) for k in good.state)
    assert untrained(tree, tmp_path / "untrained.ckpt") == path and load(path).version == fresh.version  # kept
    load_completer(path)  # it serves like any checkpoint
