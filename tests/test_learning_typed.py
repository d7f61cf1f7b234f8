"""Learning from what the user typed next (full information): the acceptance rule as a verdict on every
candidate, Hedge for the policies, the learner judging a session's completions by its later prefixes, the
lessons crossing Redis as JSON, and the service doing it for real requests."""

import asyncio
import math

import pytest

from codecomp.serve.protocol import WireCandidate
from codecomp.serve.service.correction import Correction
from codecomp.serve.service.learning import TYPED, FeedbackLearner, Lesson, Shown
from codecomp.serve.service.redis_store import lesson_from_json, lesson_to_json
from codecomp.serve.service.selection import GLOBAL, Exp3, Exp4, advice_of
from codecomp.serve.service.typed import takes, verdict
from tests.serve_fakes import body, config, running

ADA = ("ada", "javascript")


def cands(*pairs):
    return [WireCandidate(text.encode(), lp) for text, lp in pairs]


def test_a_user_takes_whole_tokens_of_what_they_type_next():
    assert takes("total + 1;", "total + 2;") == len("total +")  # cut back to the last whole token that matches
    assert takes("tot", "total") == 0  # would split a name
    assert takes("total", "total") == 5 and takes("x", "y") == 0
    assert takes("foo(", "foo(1)", habit="token") == 0 and takes("foo", "foo(1)", habit="token") == 3
    assert takes("foo", "foo(1)", habit="line") == 0 and takes("foo(", "foo(1)", habit="line") == 4


def test_a_verdict_waits_until_the_typed_text_decides_it():
    assert verdict("total;", "tot") is None  # so far it agrees: wait
    assert verdict("total;", "total") is None  # all of it typed, but is the statement over?
    assert verdict("total;", "total;\n") == 6  # the line is over
    assert verdict("total;", "totals") == 0  # parted inside the name
    assert verdict("total;", "total)") == 5  # parted after a whole name
    assert verdict("ab", "abc") == 0  # ran past it: the name went on


def test_absolute_advice_leaves_mass_for_none_of_them():
    answers = {"char": cands(("a", math.log(0.2))), "tree": cands(("b", math.log(0.3)), ("c", math.log(0.1)))}
    assert advice_of(answers)["char"] == {"a": 1.0}  # normalised over its list: certain of its only candidate
    absolute = advice_of(answers, absolute=True)
    assert absolute["char"] == pytest.approx({"a": 0.2}) and absolute["tree"] == pytest.approx({"b": 0.3, "c": 0.1})


@pytest.mark.parametrize("policy", [Exp4(exploration=0.0, share=0.0), Exp3(share=0.0)])
def test_every_model_learns_from_what_was_typed_shown_or_not(policy):
    answers = {"char": cands(("wrong", 0.0)), "tree": cands(("right", -1.0), ("other", -2.0))}
    ranking = policy.rank(ADA, ["char", "tree"], answers)
    policy.learn_typed(ADA, ranking, {"wrong": 0, "right": 5, "other": 0})
    assert policy.weights(ADA)["tree"] > policy.weights(ADA)["char"]
    before = dict(policy.state[(GLOBAL, "javascript")])
    policy.learn_typed(ADA, ranking, {"wrong": 0, "right": 0, "other": 0})  # nothing was right: nothing learned
    assert policy.state[(GLOBAL, "javascript")] == before


def typing_learner(typed_batch: int = 1) -> FeedbackLearner:
    return FeedbackLearner(Exp4(exploration=0.0, share=0.0), Correction(), from_typing=True, typed_batch=typed_batch)


def show(learner: FeedbackLearner, completion_id: str, prefix: bytes, answers=None) -> list:
    answers = answers or {"char": cands(("[0];", 0.0)), "tree": cands(("(x);", -1.0))}
    ranking, rows = learner.rank(ADA, ["char", "tree"], answers, {}, prefix, b"")
    return learner.shown(completion_id, Shown("ada", "javascript", "s", ranking, rows), prefix)


def test_the_learner_judges_a_completion_once_what_is_typed_decides_it():
    learner = typing_learner()
    assert show(learner, "c1", b"let x = f") == []
    assert show(learner, "c2", b"let x = f(x") == []  # "(x" agrees with tree's "(x);" so far: c1 waits
    assert learner.updates == 0
    changed = show(learner, "c3", b"let x = f(x);\n")  # the line is over: c1 (and c2) are decided
    assert learner.updates == 2 and ("exp4", GLOBAL, "javascript") in changed
    assert ("correction", GLOBAL, "javascript") in changed and ("correction", "ada", "javascript") in changed
    weights = learner.policy.weights(ADA)
    assert weights["tree"] > weights["char"]  # tree was right, though char's choice was shown first
    learner.event("view", "c3", 0)
    learner.event("select", "c3", 0)  # events teach the user's correction offsets, not the policy
    assert learner.policy.weights(ADA) == pytest.approx(weights)


def test_what_typing_changed_is_handed_out_in_batches_or_with_the_next_event():
    learner = typing_learner(typed_batch=3)
    assert show(learner, "c1", b"let x = f") == [] and show(learner, "c2", b"let x = f(x);\n") == []
    assert learner.updates == 1  # applied at once (rankings use it), but not handed out to be written yet
    learner.event("view", "c2", 0)
    _, changed = learner.event("dismiss", "c2", None)
    assert ("correction", GLOBAL, "javascript") in changed  # what c1 taught is written with c2's event
    deferred = FeedbackLearner(Exp4(), Correction(), deferred=True, from_typing=True, typed_batch=2)
    for i, prefix in enumerate((b"a = f", b"a = f(x);\n", b"b = f", b"b = f(x);\n")):
        show(deferred, f"c{i}", prefix)
        assert len(deferred.pending) == (2 if i == 3 else 0)  # the lessons, two at a time


def test_an_edit_elsewhere_leaves_the_waiting_completions_unjudged():
    learner = typing_learner()
    show(learner, "c1", b"let x = f")
    show(learner, "c2", b"let y = g")  # not a continuation of c1's prefix
    show(learner, "c3", b"let y = g(x);\n")  # decides c2 only
    assert learner.updates == 1


def test_deferred_typed_lessons_cross_redis_as_json():
    learner = FeedbackLearner(Exp4(), Correction(), deferred=True, from_typing=True, typed_batch=1)
    show(learner, "c1", b"let x = f")
    show(learner, "c2", b"let x = f(x);\n")
    [lesson] = learner.take_pending()
    assert lesson.completion_id == "c1" + TYPED  # its own resolved mark: the completion's events still teach
    again = lesson_from_json(lesson_to_json(lesson))
    assert isinstance(again, Lesson) and again.typed == lesson.typed == {"[0];": 0, "(x);": 4}
    assert again.ranking.offers == lesson.ranking.offers
    applier = FeedbackLearner(Exp4(exploration=0.0), Correction(), from_typing=True)
    applier.apply(again)
    assert applier.policy.weights(ADA)["tree"] > applier.policy.weights(ADA)["char"]


class Parenthesis:
    """A second fake model that always proposes "(x);"."""

    family = "fake"

    def predict(self, requests, deadlines, options):
        return [[WireCandidate(b"(x);", -0.5)] for _ in requests]


def test_the_service_learns_from_what_the_session_types_next(tmp_path):
    async def scenario():
        cfg = config(tmp_path, models=("echo", "paren"), approx_entries=0)
        async with running(cfg, containers=[("echo", "echo-0", 0.0), ("paren", "paren-0", 0.0)]) as run:
            run.fakes[1].core.runner = Parenthesis()
            learner = run.server.service.learner
            for prefix in ("let x = compute", "let x = compute(x);\n"):
                request = body(prefix=prefix) | {"segments": {"prefix": prefix, "suffix": "", "filepath": "a.js"}}
                assert (await run.client.post("/v1/completions", json=request)).status_code == 200
            await run.server.service.drain()
            return learner.updates, learner.policy.weights(ADA)

    updates, weights = asyncio.run(scenario())
    assert updates == 1 and weights["paren"] > weights["echo"]  # no event was sent: the typing taught it
