"""benchmarks.loadgen.editors: simulated editing traces."""

import itertools

import pytest

from benchmarks.loadgen.editors import TraceConfig, build_trace, documents_from_corpus, scale_trace
from codecomp.data.shards import ShardFile, write_text_shard

JS = b"function add(a, b) {\n  return a + b;\n}\n\nconst total = add(1, 2);\nconsole.log(total);\n" * 8
CPP = 'int main() {\n  std::string s = "h\u00e9llo";\n  return s.size();\n}\n'.encode() * 8
DOCUMENTS = [("javascript", JS), ("cpp", CPP)]


def test_trace_is_deterministic_for_a_seed_and_sorted():
    config = TraceConfig(editors=4, duration_s=5.0, seed=3)
    first, second = build_trace(DOCUMENTS, config), build_trace(DOCUMENTS, config)
    assert first and first == second
    assert build_trace(DOCUMENTS, TraceConfig(editors=4, duration_s=5.0, seed=4)) != first
    times = [r.t for r in first]
    assert times == sorted(times) and times[0] >= 0 and times[-1] < 5.0
    assert {r.user for r in first} == {f"editor-{i}" for i in range(4)}


def test_prefix_and_suffix_frame_the_line_being_typed():
    texts = [text.decode() for _, text in DOCUMENTS]
    for request in build_trace(DOCUMENTS, TraceConfig(editors=6, duration_s=5.0)):
        text = texts[request.document]
        assert request.language == DOCUMENTS[request.document][0]
        assert text.startswith(request.prefix) and len(request.prefix) == request.position
        line_end = text.find("\n", request.position)
        rest_of_line = text[request.position : line_end]
        assert request.suffix.startswith("\n") and request.prefix + rest_of_line + request.suffix == text
        body = request.payload()
        assert body == {
            "language": request.language,
            "segments": {"prefix": request.prefix, "suffix": request.suffix},
            "user": request.user,
        }


def test_request_rate_grows_with_editors_and_scale_factor():
    few = build_trace(DOCUMENTS, TraceConfig(editors=4, duration_s=20.0))
    many = build_trace(DOCUMENTS, TraceConfig(editors=16, duration_s=20.0))
    assert 3.2 < len(many) / len(few) < 4.8
    faster = scale_trace(many, 2.0)
    assert len(faster) == len(many) and [r.position for r in faster] == [r.position for r in many]
    assert max(r.t for r in faster) == pytest.approx(max(r.t for r in many) / 2)
    with pytest.raises(ValueError):
        scale_trace(many, 0.0)


def test_typing_speed_matches_chars_per_second():
    # With no debounce every keystroke sends a request, so requests count keystrokes.
    trace = build_trace(DOCUMENTS, TraceConfig(editors=8, chars_per_second=5.0, debounce_s=0.0, duration_s=20.0))
    assert len(trace) == pytest.approx(8 * 5.0 * 20.0, rel=0.1)


def test_only_pauses_longer_than_the_debounce_send_requests():
    assert build_trace(DOCUMENTS, TraceConfig(editors=4, debounce_s=1e9, duration_s=10.0)) == []
    debounce = 0.2
    trace = build_trace(DOCUMENTS, TraceConfig(editors=4, debounce_s=debounce, duration_s=10.0))
    by_user: dict[str, list[float]] = {}
    for request in trace:
        by_user.setdefault(request.user, []).append(request.t)
    # A request follows its keystroke by the debounce and the next keystroke comes after the pause, so one
    # editor's requests are more than a debounce apart.
    assert all(b - a > debounce for times in by_user.values() for a, b in itertools.pairwise(times))


def test_pauses_are_likelier_after_line_ends():
    trace = build_trace([("javascript", JS)], TraceConfig(editors=8, duration_s=20.0))
    after_newline = sum(r.prefix.endswith("\n") for r in trace) / len(trace)
    assert after_newline > 2 * JS.count(b"\n") / len(JS)


def test_long_documents_are_cut_at_a_line_end():
    trace = build_trace([("javascript", JS)], TraceConfig(editors=4, duration_s=5.0, max_document_bytes=100))
    cut = JS[: JS.rfind(b"\n", 0, 100) + 1].decode()
    assert trace and all(r.text == cut for r in trace)


def test_documents_from_corpus_skip_short_and_non_utf8_files(tmp_path):
    write_text_shard(
        tmp_path / "test" / "javascript",
        [ShardFile("a.js", "p", JS), ShardFile("b.js", "p", b"x"), ShardFile("c.js", "p", b"\xff\xfe" * 200)],
    )
    write_text_shard(tmp_path / "test" / "cpp", [ShardFile("a.cc", "p", CPP)])
    assert documents_from_corpus(tmp_path) == [("javascript", JS), ("cpp", CPP)]
    assert documents_from_corpus(tmp_path, languages=("cpp", "python")) == [("cpp", CPP)]
