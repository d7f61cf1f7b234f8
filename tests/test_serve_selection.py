"""The selection layer on its own (no sockets, no models): policies, per-user correction, feedback semantics,
and the state they learn surviving in SQLite."""

import math

import pytest

from codecomp.serve.protocol import WireCandidate
from codecomp.serve.service.correction import Correction, features
from codecomp.serve.service.feedback import Event, FeedbackStore
from codecomp.serve.service.learning import FeedbackLearner, Shown
from codecomp.serve.service.selection import (
    GLOBAL,
    Exp3,
    Exp4,
    FixedInterleave,
    SelectionConfig,
    advice_of,
    make_policy,
)

ADA = ("ada", "javascript")


def cands(*pairs):
    return [WireCandidate(text.encode(), lp) for text, lp in pairs]


def test_fixed_interleaves_in_model_order_and_drops_repeats_and_blanks():
    answers = {"char": cands(("total;", -1.0), ("sum;", -2.0), ("  ", -3.0)), "tree": cands(("sum;", -0.1), ("x", -4))}
    ranking = FixedInterleave(max_choices=3).rank(ADA, ["char", "tree"], answers)
    assert [c.text for c in ranking.choices] == ["total;", "sum;", "x"]
    assert [c.model for c in ranking.choices] == ["char", "tree", "tree"]  # credited where it came first
    assert ranking.choices[1].log_prob == -0.1


def test_advice_normalises_each_models_list_and_merges_repeats():
    advice = advice_of({"m": cands(("a", math.log(0.2)), ("b", math.log(0.2)), ("a", math.log(0.1)))})
    assert advice["m"] == pytest.approx({"a": 0.6, "b": 0.4})


def test_exp4_sums_weighted_probabilities_so_agreement_counts():
    answers = {"char": cands(("a", math.log(0.6)), ("b", math.log(0.4))), "tree": cands(("b", 0.0))}
    ranking = Exp4(exploration=0.0).rank(ADA, ["char", "tree"], answers)
    assert [c.text for c in ranking.choices] == ["b", "a"]  # 0.5 * 0.4 + 0.5 * 1.0 beats 0.5 * 0.6
    assert ranking.advice[0] == pytest.approx({"char": 0.4, "tree": 1.0})
    assert ranking.scores == pytest.approx([0.7, 0.3])


def test_exp4_leaves_stragglers_out_and_does_not_teach_them():
    policy = Exp4(exploration=0.0)
    ranking = policy.rank(ADA, ["char", "tree"], {"char": cands(("a", 0.0))})  # tree missed the deadline
    assert ranking.answered == ["char"]
    policy.learn(ADA, ranking, None)
    assert "tree" not in policy.state[ADA] and policy.state[ADA]["char"] < 0.0


def test_exp4_moves_weight_to_the_model_whose_choices_are_taken_and_back_when_it_degrades():
    policy = Exp4(rate=0.5, exploration=0.05, share=0.02)
    good, bad = cands(("right", 0.0)), cands(("wrong", 0.0))

    def event(char_right: bool) -> None:
        answers = {"char": good if char_right else bad, "tree": bad if char_right else good}
        ranking = policy.rank(ADA, ["char", "tree"], answers)
        policy.learn(ADA, ranking, [c.text for c in ranking.choices].index("right"))  # the right one is taken

    for _ in range(30):
        event(char_right=True)
    assert policy.weights(ADA)["char"] > 0.95
    recovered_after = next(n for n in range(1, 200) if (event(char_right=False), policy.weights(ADA)["tree"])[1] > 0.5)
    assert recovered_after <= 10  # the fixed share keeps the old loser's weight within reach


def test_exp3_shows_one_sampled_model_and_learns_only_for_it():
    policy = Exp3(exploration=0.2, seed=1)
    answers = {"char": cands(("a", 0.0), ("b", -1.0)), "tree": cands(("c", 0.0))}
    shown = [policy.rank(ADA, ["char", "tree"], answers) for _ in range(200)]
    by_char = [r for r in shown if r.sampled[0] == "char"]
    assert 60 < len(by_char) < 140  # equal weights at first
    assert all([c.text for c in r.choices] == ["a", "b"] for r in by_char)
    for ranking in shown[:50]:
        policy.learn(ADA, ranking, 0 if ranking.sampled[0] == "tree" else None)  # the user wants tree's
    assert policy.weights(ADA)["tree"] > 0.8
    later = [policy.rank(ADA, ["char", "tree"], answers).sampled[0] for _ in range(200)]
    assert later.count("tree") > 140 and later.count("char") > 5  # exploration keeps sampling char


def test_a_new_user_starts_from_the_population_and_users_learn_apart():
    policy = Exp4(exploration=0.0, share=0.0)
    answers = {"char": cands(("a", 0.0)), "tree": cands(("b", 0.0))}
    for _ in range(10):
        ranking = policy.rank(ADA, ["char", "tree"], answers)
        policy.learn(ADA, ranking, [c.text for c in ranking.choices].index("b"))
    grace = ("grace", "javascript")
    assert policy.weights(grace) == pytest.approx(policy.weights((GLOBAL, "javascript")))  # the prior, before use
    assert policy.weights(("grace", "cpp")) == {}  # nothing learned for C++ yet
    assert policy.weights(ADA)["tree"] > policy.weights(grace)["tree"] > 0.5  # ada's own habit, on top
    ada_offset = dict(policy.state[ADA])
    for _ in range(30):
        ranking = policy.rank(grace, ["char", "tree"], answers)
        policy.learn(grace, ranking, [c.text for c in ranking.choices].index("a"))
    assert policy.weights(grace)["char"] > 0.5  # grace learned her own habit...
    assert policy.state[ADA] == pytest.approx(ada_offset)  # ...without touching ada's offset...
    assert policy.weights(ADA)["tree"] > policy.weights(grace)["tree"]  # ...so ada keeps hers above the population


def test_make_policy_names_the_policies():
    assert [make_policy(SelectionConfig(policy=p)).name for p in ("fixed", "exp3", "exp4")] == ["fixed", "exp3", "exp4"]
    with pytest.raises(ValueError, match="unknown selection policy"):
        make_policy(SelectionConfig(policy="greedy"))


def test_features_say_who_proposed_what_and_whether_its_names_are_in_the_file():
    answers = {"char": cands(("total + 1;", -1.0), ("zeta;", -2.0)), "tree": cands(("total + 1;", -0.5))}
    ranking = Exp4(exploration=0.0).rank(ADA, ["char", "tree"], answers)
    rows = features(ranking, {"char": "miss", "tree": "typed"}, b"let total = 0;\n", b"")
    first, second = rows
    assert first["by:char"] == first["by:tree"] == 1.0 and second["by:tree"] == 0.0
    assert first["in_file"] == 1.0 and second["in_file"] == 0.0
    assert first["cached"] == 1.0 and second["cached"] == 0.0  # tree's answer came from a cache
    assert 0 < second["p:char"] < first["p:char"] <= 1.0 and first["policy"] == ranking.scores[0]


def test_correction_ranks_as_the_policy_at_first_then_learns_a_users_habit():
    correction = Correction(rate=0.5, l2=0.0, population_rate=0.0)
    short = {"bias": 1.0, "policy": 0.4, "length": 0.1}
    long = {"bias": 1.0, "policy": 0.6, "length": 0.8}
    assert correction.rerank(ADA, [long, short]) == [0, 1]
    for _ in range(40):  # ada always takes the short one, shown second
        correction.learn(ADA, [long, short], 1)
    assert correction.rerank(ADA, [long, short]) == [1, 0]
    assert correction.rerank(("grace", "javascript"), [long, short]) == [0, 1]  # no population share here


def test_learner_counts_a_viewed_completion_superseded_without_select_as_rejected():
    policy = Exp4(exploration=0.0, share=0.0)
    learner = FeedbackLearner(policy, None, kept=3)
    answers = {"char": cands(("a", 0.0)), "tree": cands(("b", 0.0))}

    def show(completion_id: str, session: str = "s1") -> list:
        return learner.shown(completion_id, Shown("ada", "javascript", session, policy.rank(ADA, ["char", "tree"],
                                                                                           answers), None))  # fmt: skip

    assert show("c1") == []
    assert learner.event("view", "c1", None)[1] == []
    assert show("c2") == [("exp4", "ada", "javascript"), ("exp4", GLOBAL, "javascript")]  # c1 rejected
    assert learner.updates == 1
    assert show("c3") == []  # c2 was never viewed: nothing to learn
    assert learner.event("select", "c3", 0)[1] and learner.event("dismiss", "c3", None)[1] == []  # taught once
    assert learner.event("select", "gone", 0) == (None, [])
    show("c4", session="s2")
    show("c5", session="s3")
    assert "c1" not in learner.recent and len(learner.recent) == 3  # bounded


def test_learned_state_survives_in_sqlite(tmp_path):
    policy = Exp4()
    learner = FeedbackLearner(policy, Correction(), kept=10)
    answers = {"char": cands(("a", 0.0)), "tree": cands(("b", 0.0))}
    ranking = policy.rank(ADA, ["char", "tree"], answers)
    rows = features(ranking, {}, b"", b"")
    learner.shown("c1", Shown("ada", "javascript", "s", ranking, rows))
    _, changed = learner.event("select", "c1", 1)
    store = FeedbackStore(tmp_path / "state.sqlite")
    store.write(Event("select", "c1", 1, "ada", "javascript"), [(key, learner.state(key)) for key in changed])
    store.close()
    reopened = FeedbackStore(tmp_path / "state.sqlite")
    fresh = FeedbackLearner(Exp4(), Correction(), kept=10)
    assert fresh.restore(reopened.states()) == 4  # exp4 and correction, for ada and the population
    assert fresh.policy.weights(ADA) == pytest.approx(policy.weights(ADA))
    assert fresh.correction.table[ADA] == pytest.approx(learner.correction.table[ADA])
    assert FeedbackLearner(Exp3(), None).restore(reopened.states()) == 0  # another policy's state is not its own
    [event] = reopened.events()
    assert (event.type, event.user, event.select_kind) == ("select", "ada", None)


def test_a_rejection_counts_against_the_choices_the_user_saw():
    answers = {"char": cands(("a", 0.0)), "tree": cands(("b", 0.0))}
    policy = Exp4(exploration=0.0, share=0.0)
    ranking = policy.rank(ADA, ["char", "tree"], answers)
    first = ranking.choices[0].model
    policy.learn(ADA, ranking, None, seen=[0])  # only the ghost text was shown, and it was not taken
    other = "tree" if first == "char" else "char"
    assert policy.weights(ADA)[other] > policy.weights(ADA)[first]
    learner = FeedbackLearner(Exp4(exploration=0.0, share=0.0), None)
    learner.shown("c1", Shown("ada", "javascript", "s", ranking, None))
    learner.event("view", "c1", 0)
    learner.event("dismiss", "c1", None)
    assert learner.policy.weights(ADA)[other] > learner.policy.weights(ADA)[first]
