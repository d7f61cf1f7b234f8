"""The n-gram model family: the fit command, its checkpoint, the batched completer with deadlines and a file cache,
the container runner, `codecomp-eval` on it, and its mixture with a Char-LSTM."""

import time

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from codecomp import CONFIG_DIR
from codecomp.checkpoint import load
from codecomp.data.shards import TextShard
from codecomp.evaluate import evaluate, print_report
from codecomp.evaluation.mixture import MixtureSettings, complete_mixture, evaluate_mixture, fit_weight
from codecomp.fit_ngram import FitNGramConfig, fit_ngram, register_schema
from codecomp.inference.char_lstm import CharLSTMCompleter
from codecomp.inference.completer import CompletionOptions, CompletionRequest
from codecomp.inference.families import load_completer
from codecomp.inference.ngram import NGramCompleter
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig
from codecomp.models.ngram import CharNGram
from codecomp.models.ngram_cache import CacheSettings, CountTable, score_document
from codecomp.models.ngram_lines import complete_line
from codecomp.serve.container.runners import CompleterRunner, load_runner
from codecomp.serve.protocol import Options, WireRequest
from tests.test_evaluate import eval_config

CODE = (b"function total(items) {\n  let sum = 0;\n  for (const item of items) {\n    sum += item.price;\n  }\n"
        b"  return sum;\n}\nmodule.exports = total;\n")  # fmt: skip


def fit_config(corpus, out, extra=()):
    register_schema()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="ngram", overrides=[f"corpus={corpus}", f"out={out}", "order=4", *extra])
    return OmegaConf.to_object(cfg)


@pytest.fixture(scope="module")
def ngram_checkpoint(tmp_path_factory, fixture_corpus):
    return fit_ngram(fit_config(fixture_corpus, tmp_path_factory.mktemp("ngram") / "ngram" / "best.ckpt"))


@pytest.fixture(scope="module")
def completer(ngram_checkpoint) -> NGramCompleter:
    return NGramCompleter.from_checkpoint(ngram_checkpoint)


def test_the_fit_command_writes_a_self_describing_checkpoint(ngram_checkpoint, fixture_corpus):
    loaded = load(ngram_checkpoint)
    description = loaded.description
    assert (description.family, description.languages) == ("ngram", ("cpp", "javascript"))
    assert description.model_config == {"order": 4, "discount": None}
    assert description.corpus == {"name": fixture_corpus.name, "path": str(fixture_corpus)}
    assert description.extra["split"] == "train" and description.extra["fitted"]["cpp"]["files"] > 0
    completer = load_completer(loaded)  # through the registry, as serving and evaluation build it
    assert isinstance(completer, NGramCompleter) and (completer.family, completer.task) == ("ngram", "line")
    for language in ("cpp", "javascript"):  # the same tables as a model fitted here on the same files
        direct = CharNGram(order=4, discount=None).fit(TextShard(fixture_corpus / "train" / language))
        for history in (b"", b"int ", CODE[:40], b"\xff\xfe"):
            np.testing.assert_array_equal(
                completer.models[language].distribution(history), direct.distribution(history)
            )


def test_the_config_is_typed(fixture_corpus, tmp_path):
    config = fit_config(fixture_corpus, tmp_path / "x.ckpt", ["discount=0.5"])
    assert isinstance(config, FitNGramConfig) and config.discount == 0.5 and config.split == "train"
    with pytest.raises(Exception, match="order"):
        fit_config(fixture_corpus, tmp_path / "x.ckpt", ["order=six"])


def test_batched_beam_search_equals_complete_line_without_the_cache(ngram_checkpoint, fixture_corpus):
    completer = NGramCompleter.from_checkpoint(ngram_checkpoint, cache=False)
    requests = []
    for language in ("javascript", "cpp"):
        document = TextShard(fixture_corpus / "test" / language).document(0)
        for cut in (0, 1, 3, 37, 90, len(document) // 2):
            requests.append(CompletionRequest(document[:cut], b"", language))
    for k, beam, max_chars in [(1, 1, 20), (3, 2, 12), (4, 5, 30)]:
        results = completer.complete(requests, CompletionOptions(k, beam, max_chars))
        for request, candidates in zip(requests, results, strict=True):
            expected = complete_line(completer.models[request.language], request.prefix, beam, max_chars, k)
            assert [c.text for c in candidates] == [text for text, _ in expected]
            np.testing.assert_allclose([c.log_prob for c in candidates], [s for _, s in expected], rtol=1e-12)
            for c in candidates:  # unfinished exactly when cut by the byte bound
                assert c.complete or len(c.text) == max_chars


def test_deadlines_stop_each_request_with_partial_answers(completer):
    requests = [CompletionRequest(CODE[:60], CODE[60:], "javascript"), CompletionRequest(b"int x = ", b"", "cpp")]
    options = CompletionOptions(k=2, beam=2, max_chars=8)
    late, on_time = completer.complete(requests, options, [time.monotonic() - 1, time.monotonic() + 60])
    assert [(c.text, c.complete) for c in late] == [(b"", False)]  # stopped before its first byte
    alone = completer.complete(requests[1:], options)[0]
    assert [(c.text, c.complete) for c in on_time] == [(c.text, c.complete) for c in alone]
    assert completer.complete([CompletionRequest(b"x", b"", "python")], options) == [[]]  # no model: no answer


def test_the_cache_lifts_a_string_repeated_in_the_file(completer):
    model = completer.models["javascript"]
    rare = b"zq_wibble_vortex(7);\n"
    document = b"const a = 1;\n" + rare + b"let b = 2;\n" + rare
    with_cache, _, _ = score_document(model, document, CacheSettings())
    without, _, _ = score_document(model, document, None)
    second = slice(len(document) - len(rare) + 3, len(document))  # the repeat, after its first bytes
    assert with_cache[second].sum() < 0.3 * without[second].sum()
    # Completing: a line seen twice in the document is predicted from it, with the cache only.
    request = CompletionRequest(document + rare[:6], b"", "javascript")
    best = completer.complete([request], CompletionOptions(k=1, beam=2, max_chars=30))[0]
    assert best[0].text == rare[6:-1] and best[0].complete
    plain = NGramCompleter(completer.models, cache=False).complete([request], CompletionOptions(1, 2, 30))
    assert plain[0][0].text != rare[6:-1]


def test_the_cache_counts_the_users_recent_files(completer):
    other = b"void zq_wibble_vortex_setup(int depth) {}\n" * 2
    options = CompletionOptions(k=1, beam=2, max_chars=30)
    completer.complete([CompletionRequest(other, b"", "cpp", "ada\0a.cpp\0cpp")], options)
    typed = b"int main() {\n  zq_wib"
    same_user = completer.complete([CompletionRequest(typed, b"", "cpp", "ada\0b.cpp\0cpp")], options)
    other_user = completer.complete([CompletionRequest(typed, b"", "cpp", "bob\0b.cpp\0cpp")], options)
    assert same_user[0][0].text.startswith(b"ble_vortex")
    assert not other_user[0][0].text.startswith(b"ble_vortex")


def test_score_agrees_with_the_distributions(completer):
    document = CODE * 2
    [(bits, correct)] = completer.score([document], "javascript")
    keep = np.array([0, 5, len(CODE) + 9, len(document) - 1])
    _, _, kept = completer.score_document(document, "javascript", keep)
    np.testing.assert_allclose(kept.sum(axis=1), 1.0, atol=1e-12)
    targets = np.frombuffer(document, dtype=np.uint8)[keep]
    np.testing.assert_allclose(-np.log2(kept[np.arange(len(keep)), targets]), bits[keep], atol=1e-12)
    assert (kept.argmax(axis=1) == targets).tolist() == correct[keep].tolist()
    # The cache of the scored text is exactly the counts of the bytes before: one chunk or many give the same.
    model, settings = completer.models["javascript"], CacheSettings()
    np.testing.assert_allclose(score_document(model, document, settings, chunk=16)[0], bits, atol=1e-12)
    table = CountTable.count([CODE], 3, 4)
    assert table.nbytes > 0 and len(table.ctx_keys) == len(table.ctx_ptr) - 1


def test_the_container_runner_serves_it(ngram_checkpoint):
    runner = load_runner(ngram_checkpoint, max_context=1024, recent_files=2)
    assert isinstance(runner, CompleterRunner) and runner.family == "ngram" and len(runner.version) == 16
    requests = [WireRequest(CODE[:70], CODE[70:], "javascript", "ada\0a.js\0javascript", 50.0),
                WireRequest(b"int main() {\n  ret", b"", "cpp", "", 50.0)]  # fmt: skip
    answers = runner.predict(requests, [time.monotonic() + 30] * 2, Options(k=2, beam=2, max_chars=16))
    assert len(answers) == 2 and all(answer for answer in answers)
    for answer in answers:
        assert all(c.text and b"\n" not in c.text and c.log_prob < 0 for c in answer)


def test_the_mixture_weight_is_fitted_between_the_models():
    rng = np.random.default_rng(0)
    good, bad = rng.uniform(0.2, 0.9, 5000), rng.uniform(0.01, 0.2, 5000)
    first_better = rng.uniform(size=5000) < 0.7  # the first model is the better one on 70% of the bytes
    p_first, p_second = np.where(first_better, good, bad), np.where(first_better, bad, good)
    weight = fit_weight(p_first, p_second)
    assert 0.5 < weight < 1
    likelihood = lambda w: np.log(w * p_first + (1 - w) * p_second).sum()  # noqa: E731
    assert likelihood(weight) >= max(likelihood(w) for w in np.linspace(0.01, 0.99, 99)) - 1e-6
    with pytest.raises(ValueError):
        fit_weight(p_first, p_second[:10])


def test_the_mixture_is_scored_beside_each_model(completer, fixture_corpus):
    torch.manual_seed(0)
    lstm = CharLSTMCompleter(CharLSTM(CharLSTMConfig(embed_dim=8, hidden=16, layers=1)))
    settings = MixtureSettings(fit_documents=2, next_char_positions=200, line_positions=5, max_chars=12, seed=0)
    result = evaluate_mixture(lstm, completer, fixture_corpus, "test", fixture_corpus, "javascript", settings)
    assert 0 < result["weight"] < 1
    systems = result["systems"]
    assert set(systems) == {"char_lstm", "ngram", "cache_ngram", "mixture"}
    assert systems["mixture"]["bpc"] <= max(systems["char_lstm"]["bpc"], systems["cache_ngram"]["bpc"])
    assert result["bpc_ratio_to_ngram"]["ngram"] == 1.0 and result["counts"]["files"] == 2
    assert result["counts"]["line_tasks"] == 5
    for system in ("ngram", "cache_ngram", "mixture"):
        assert 0 <= systems[system]["chars_saved"] <= 100 and 0 <= systems[system]["edit_similarity"] <= 100
    # The mixture's beam search with all the weight on the n-gram is the n-gram's own.
    requests = [CompletionRequest(CODE[:cut], b"", "javascript") for cut in (0, 30, 75)]
    options = CompletionOptions(k=2, beam=2, max_chars=10)
    mixed = complete_mixture(lstm, completer, requests, options, weight=0.0)
    alone = completer.complete(requests, options)
    assert [[(c.text, c.complete) for c in r] for r in mixed] == [[(c.text, c.complete) for c in r] for r in alone]


def test_codecomp_eval_scores_the_ngram_and_the_mixture(ngram_checkpoint, fixture_corpus, tmp_path):
    report = evaluate(eval_config(ngram_checkpoint, fixture_corpus), tmp_path / "ngram")
    assert (report["family"], report["task"]) == ("ngram", "line")
    for result in report["languages"].values():
        assert result["model"]["bpc"] > 0 and 0 <= result["model"]["edit_similarity"] <= 100
        assert result["counts"]["line_tasks"] == 6 and "mixture" not in result


def test_codecomp_eval_scores_a_char_lstm_beside_its_mixture(checkpoints, ngram_checkpoint, fixture_corpus, tmp_path):
    char_checkpoint, _ = checkpoints
    mixture = [f"mixture.ngram_ckpt_path={ngram_checkpoint}", "mixture.fit_documents=2"]
    report = evaluate(eval_config(char_checkpoint, fixture_corpus, mixture), tmp_path / "mixture")
    for result in report["languages"].values():
        mixed = result["mixture"]
        assert 0 < mixed["weight"] < 1 and mixed["fit"]["split"] == "valid"
        # The Char-LSTM alone scores as codecomp-eval scores it (the files are shorter than its context).
        assert mixed["systems"]["char_lstm"]["bpc"] == pytest.approx(result["model"]["bpc"], rel=1e-4)
    print_report(report)
