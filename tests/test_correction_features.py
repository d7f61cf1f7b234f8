"""The per-user correction's features (what the models and the file say about each candidate) and its two
learners: the population's weights from what was typed next, a user's offsets from the user's own answers."""

import pytest

from codecomp.serve.protocol import WireCandidate
from codecomp.serve.service.correction import INITIAL, Correction, make_correction
from codecomp.serve.service.features import features
from codecomp.serve.service.selection import GLOBAL, Exp4, SelectionConfig

ADA, GRACE = ("ada", "javascript"), ("grace", "javascript")


def cands(*pairs):
    return [WireCandidate(text.encode(), lp) for text, lp in pairs]


def rows_for(prefix: bytes, suffix: bytes, answers: dict) -> tuple[list, list[dict[str, float]]]:
    ranking = Exp4(exploration=0.0).rank(ADA, list(answers), answers)
    return [c.text for c in ranking.choices], features(ranking, {}, prefix, suffix, answers)


def test_features_weigh_the_name_a_candidate_completes_as_a_cache_would():
    prefix = b"let counter = 0;\ncounter++;\nlet count = 1;\ncounter += count;\nreturn cou"
    answers = {"tree": cands(("ntless", -1.0), ("nter", -3.0)), "ngram": cands(("nt;", -2.0))}
    texts, rows = rows_for(prefix, b"\n}\n", answers)
    row = dict(zip(texts, rows, strict=True))
    assert row["nter"]["name_in_file:tree"] == 1.0 and row["ntless"]["name_in_file:tree"] == 0.0  # "countless": no
    assert row["nter"]["name_most"] == 1.0 and "name_most" not in row["nt;"]  # counter: 3 uses, count: 2
    assert row["nt;"]["name_recent"] > row["nter"]["name_recent"] > 0  # `count` was used last
    assert row["nter"]["at:tree:word"] == 1.0 and row["nt;"]["at:ngram:word"] == 1.0
    assert row["ntless"]["lp:tree"] == pytest.approx(-1 / 20) and row["nter"]["lp_gap:tree"] == pytest.approx(-2 / 20)
    assert row["ntless"]["top:tree"] == 1.0 and row["nter"]["top:tree"] == 0.0
    assert row["nt;"]["one_token"] == 0.0 and row["nter"]["one:tree"] == 1.0


def test_features_say_where_the_cursor_is_and_whether_the_models_agree():
    answers = {"tree": cands(("foo", -1.0)), "ngram": cands(("foo(1);", -1.0))}
    for prefix, where in ((b"x.", "dot"), (b"p->", "member"), (b"  ", "line"), (b"f(", "open"), (b"a = ", "space")):
        _, rows = rows_for(prefix, b"", answers)
        assert all(f"at:tree:{where}" in r or f"at:ngram:{where}" in r for r in rows)
    texts, rows = rows_for(b"x.", b"", answers)
    row = dict(zip(texts, rows, strict=True))
    assert row["foo"]["prefix"] == 1 and row["foo(1);"]["extends"] == 1 and row["foo"]["agree"] == 1


def test_typed_lessons_teach_the_population_and_the_users_offsets_events_only_the_offsets():
    correction = Correction(rate=0.5, l2=0.0, population_rate=0.5, population_from_events=False)
    short = {"bias": 1.0, "policy": 0.4, "one_token": 1.0}
    long = {"bias": 1.0, "policy": 0.6, "one_token": 0.0}
    assert correction.rerank(ADA, [long, short]) == [0, 1]  # the policy's order at first
    for _ in range(20):
        assert correction.learn_typed(ADA, [long, short], [False, True]) == [(GLOBAL, "javascript"), ADA]
    assert correction.rerank(GRACE, [long, short]) == [1, 0]  # every user gains what typing taught
    assert correction.learn_typed(ADA, [long, short], [True, True]) == []  # all taken: nothing to tell apart
    population = dict(correction.table[(GLOBAL, "javascript")])
    for _ in range(40):
        correction.learn(GRACE, [short, long], 1)  # grace takes the long one: a habit of hers
    assert correction.rerank(GRACE, [long, short]) == [0, 1] and correction.rerank(ADA, [long, short]) == [1, 0]
    assert correction.table[(GLOBAL, "javascript")] == population  # her events moved only her offsets


def test_a_new_user_ranks_as_the_population_and_the_correction_can_be_off():
    correction = make_correction(SelectionConfig())
    assert correction is not None and correction.table == {}
    assert correction.scores(("new", "cpp"), [{"policy": 0.3, "bias": 1.0}]) == [pytest.approx(0.3 * INITIAL["policy"])]
    assert make_correction(SelectionConfig(correction=False)) is None
