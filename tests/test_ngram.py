"""The byte n-gram Kneser-Ney model and its line completer, on inline corpora."""

import pickle
from collections import Counter, defaultdict

import numpy as np
import pytest

from codecomp.models.ngram import BOS, EOF, N_SYMBOLS, CharNGram, _modified_discounts
from codecomp.models.ngram_lines import complete_line

CORPUS = [
    b"int main() {\n  return 0;\n}\n",
    b"int add(int a, int b) {\n  return a + b;\n}\n",
    b"for (int i = 0; i < n; ++i) {\n  total += i;\n}\n",
    b"",
]
DISCOUNTS = [0.75, None]  # plain KN and modified KN


def reference_distribution(documents, order, discount, history):
    """The smoothing formulas written out with dicts of tuples, for comparison."""
    raw = [Counter() for _ in range(order + 1)]
    left = [defaultdict(set) for _ in range(order + 1)]
    for document in documents:
        seq = [BOS] * (order - 1) + list(document) + [EOF]
        for q in range(order - 1, len(seq)):
            for k in range(1, order + 1):
                ngram = (tuple(seq[q - k + 1 : q]), seq[q])
                raw[k][ngram] += 1
                if k < order:
                    left[k][ngram].add(seq[q - k])
    context = ([BOS] * (order - 1) + list(history))[len(history) :]
    probs = np.full(N_SYMBOLS, 1 / N_SYMBOLS)
    for k in range(1, order + 1):
        # Continuation counts below the top order, except in contexts that start with BOS.
        counts = {
            ngram: c if k == order or ngram[0][:1] == (BOS,) else len(left[k][ngram]) for ngram, c in raw[k].items()
        }
        if discount is None:
            discounts = _modified_discounts(np.bincount(list(counts.values()), minlength=5)[1:5])
        else:
            discounts = [0.0, discount, discount, discount]
        h = tuple(context[len(context) - (k - 1) :]) if k > 1 else ()
        seen = {w: c for (h2, w), c in counts.items() if h2 == h}
        if not seen:
            break
        total = sum(seen.values())
        probs = probs * sum(discounts[min(c, 3)] for c in seen.values()) / total
        for w, c in seen.items():
            probs[w] += max(c - discounts[min(c, 3)], 0) / total
    return probs


@pytest.fixture(scope="module", params=DISCOUNTS, ids=["kn", "modified-kn"])
def model(request) -> CharNGram:
    return CharNGram(order=4, discount=request.param).fit(CORPUS)


@pytest.mark.parametrize("history", [b"", b"i", b"int ", b"  return a", b"\x00\xff\x01zzzz", b"}\n" * 10])
def test_distribution_is_a_full_distribution(model, history):
    probs = model.distribution(history)
    assert probs.shape == (N_SYMBOLS,) and probs.dtype == np.float64
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    assert (probs > 0).all()


def test_document_bits_agree_with_distribution(model):
    document = b"int main(int argc) {\n  return a + 7;\n}\n\x00\xfe"
    bits = model.document_bits(document)
    expected = [-np.log2(model.distribution(document[:i])[document[i]]) for i in range(len(document))]
    assert bits.shape == (len(document),) and bits.dtype == np.float64
    np.testing.assert_allclose(bits, expected, rtol=0, atol=1e-9)
    assert model.document_bits(b"").shape == (0,)


@pytest.mark.parametrize("order", [1, 2, 3, 5])
@pytest.mark.parametrize("discount", [*DISCOUNTS, 0.4])
def test_matches_reference_formulas(order, discount):
    model = CharNGram(order=order, discount=discount).fit(CORPUS)
    for history in [b"", b"in", b"int a", b"{\n  ret", b"qqqq b", CORPUS[1]]:
        np.testing.assert_allclose(
            model.distribution(history), reference_distribution(CORPUS, order, discount, history), rtol=0, atol=1e-15
        )


@pytest.mark.parametrize("discount", DISCOUNTS)
def test_repeated_pattern_is_learned(discount):
    model = CharNGram(order=6, discount=discount).fit([b"abc" * n for n in range(50, 60)])
    assert model.distribution(b"ab")[ord("c")] > 0.9  # at the document start
    assert model.distribution(b"cabcab")[ord("c")] > 0.9
    model = CharNGram(order=6, discount=discount).fit([b"abc\n"] * 20)
    assert model.distribution(b"abc\n")[EOF] > 0.9


@pytest.mark.parametrize("discount", DISCOUNTS)
def test_unseen_long_context_backs_off_to_seen_suffix(discount):
    model = CharNGram(order=6, discount=discount).fit(
        [b"".join(bytes([x]) + b"abc " for x in b"defghijklmnopstuvw")] * 3
    )
    # "qab" and "rab" never occurred, so both fall back to the order-3 context "ab", seen after many bytes.
    backed_off = model.distribution(b"qqqab")
    np.testing.assert_array_equal(backed_off, model.distribution(b"rrrab"))
    assert backed_off[ord("c")] > 0.8
    # Nothing of "qqqqq" was seen: the continuation unigram favours "a", seen after many bytes, over unseen ones.
    unigram = model.distribution(b"qqqqq")
    assert unigram[ord("a")] > 10 * unigram[ord("q")]
    assert min(unigram[byte] for byte in b"abc d") >= unigram[ord("q")]


def test_lower_orders_use_continuation_counts():
    # "x" and "y" occur 5 times each, but "x" only ever after "a" and "y" after five different bytes.
    model = CharNGram(order=3).fit([b"axaxaxaxax" + b"by cy dy ey fy"])
    unigram = model.distribution(b"QQ")  # unseen context: the continuation unigram decides
    assert unigram[ord("y")] > 2 * unigram[ord("x")]


def test_modified_discounts_follow_chen_goodman():
    y = 100 / (100 + 2 * 40)
    expected = [0.0, 1 - 2 * y * 40 / 100, 2 - 3 * y * 20 / 40, 3 - 4 * y * 10 / 20]
    np.testing.assert_allclose(_modified_discounts(np.array([100, 40, 20, 10])), expected)
    # Too few n-grams to estimate from: every discount stays usable.
    np.testing.assert_allclose(_modified_discounts(np.array([0, 0, 3, 0])), [0.0, 0.75, 0.75, 0.75])


def test_complete_line_returns_memorised_line_without_newline():
    source = b"def greet(name):\n    print('hello, ' + name)\n    return None\n"
    model = CharNGram(order=6).fit([source] * 3)
    completions = complete_line(model, source[: source.index(b"'")], k=3)
    assert completions[0][0] == b"'hello, ' + name)"
    assert all(b"\n" not in text for text, _ in completions)
    scores = [score for _, score in completions]
    assert 1 <= len(completions) <= 3 and scores == sorted(scores, reverse=True) and scores[0] < 0


def test_complete_line_respects_max_chars():
    model = CharNGram(order=4).fit([b"x" * 500])
    [(text, score)] = complete_line(model, b"xxx", max_chars=10)
    assert text == b"x" * 10 and score < 0
    assert complete_line(model, b"xxx", max_chars=0) == [(b"", 0.0)]
    assert all(len(text) <= 7 for text, _ in complete_line(model, b"", beam_size=3, max_chars=7, k=5))


@pytest.mark.parametrize("discount", DISCOUNTS)
def test_state_round_trip(discount):
    model = CharNGram(order=5, discount=discount).fit(CORPUS)
    restored = CharNGram.from_state(pickle.loads(pickle.dumps(model.to_state())))
    assert (restored.order, restored.discount) == (5, discount)
    for history in [b"", b"int", b"zzzzzz", CORPUS[2]]:
        np.testing.assert_array_equal(restored.distribution(history), model.distribution(history))
    np.testing.assert_array_equal(restored.document_bits(CORPUS[0]), model.document_bits(CORPUS[0]))


def test_misuse_is_refused():
    with pytest.raises(ValueError):
        CharNGram(order=0)
    with pytest.raises(ValueError):
        CharNGram(discount=1.5)
    with pytest.raises(RuntimeError):
        CharNGram().distribution(b"")
    model = CharNGram().fit(CORPUS)
    with pytest.raises(RuntimeError):
        model.fit(CORPUS)
    with pytest.raises(ValueError):
        CharNGram().fit([])
