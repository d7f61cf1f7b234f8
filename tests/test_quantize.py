"""Dynamic int8 quantization (codecomp/inference/quantize.py): the quantized completers load and complete close
to the float ones, codecomp-eval's `quantize` flag builds the int8 completer, and serve.yaml's switch reaches what
a container loads."""

import asyncio
import time

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.ao.nn.quantized import dynamic as qdynamic

from codecomp import CONFIG_DIR
from codecomp.inference.char_lstm import CharLSTMCompleter
from codecomp.inference.completer import CompletionOptions, CompletionRequest
from codecomp.inference.families import load_completer
from codecomp.inference.quantize import Int8CharLSTM, quantize_completer
from codecomp.inference.tree_lstm import TreeLSTMCompleter
from codecomp.serve.api.config import ServerConfig, register_schema
from codecomp.serve.api.server import Server
from codecomp.serve.container.runners import load_runner
from codecomp.serve.protocol import Options, WireRequest
from tests.test_checkpoint import old_style_char_checkpoint, tree_checkpoint

PREFIX = b"function add(a, b) {\n  return a + b;\n}\nfunction sub(a, b) {\n  return "


def test_an_int8_char_lstm_completes_and_predicts_as_the_float_one_does(tmp_path):
    old_style_char_checkpoint(tmp_path / "char.ckpt")
    float_completer = load_completer(tmp_path / "char.ckpt")
    int8_completer = load_completer(tmp_path / "char.ckpt", quantize="int8")
    assert isinstance(float_completer, CharLSTMCompleter) and isinstance(int8_completer, CharLSTMCompleter)
    model = int8_completer.model
    assert isinstance(model, Int8CharLSTM) and isinstance(model.lstm, qdynamic.LSTM)
    assert isinstance(model.head, qdynamic.Linear) and type(float_completer.model.lstm) is torch.nn.LSTM
    [lines] = int8_completer.complete([CompletionRequest(PREFIX, b"", "javascript")], CompletionOptions(2, 2, 8))
    assert 1 <= len(lines) <= 2 and all(0 < len(c.text) <= 8 for c in lines)
    tokens = torch.randint(0, 256, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        exact, _ = float_completer.model(tokens)  # (3, 40, V)
        approximate, _ = model(tokens)
        kl = torch.nn.functional.kl_div(approximate.log_softmax(-1), exact.log_softmax(-1), log_target=True,
                                        reduction="batchmean")  # fmt: skip
        assert kl < 0.01 * tokens.shape[1]
        # The beam search's one-step decode (its own int8 linears) continues the quantized LSTM's reading.
        stepped, _ = model.step(tokens[:, -1], model(tokens[:, :-1])[1])
        torch.testing.assert_close(stepped, approximate[:, -1].log_softmax(-1), atol=0.05, rtol=0)


def test_an_int8_tree_lstm_quantizes_the_linears_it_calls_and_still_answers(tmp_path):
    tree_checkpoint(tmp_path / "tree.ckpt")
    runner = load_runner(tmp_path / "tree.ckpt", quantize="int8", window_bytes=256)
    assert isinstance(runner.completer, TreeLSTMCompleter)
    model = runner.completer.model
    assert isinstance(model.head.vocab[0], qdynamic.Linear) and isinstance(model.encoder.up.W_iou, qdynamic.Linear)
    assert type(model.encoder.up.U_iou) is torch.nn.Linear  # its weight is read directly: kept in float
    request = WireRequest(b"var total = 1;\nprint(tot", b")\n", "javascript", "", 1000.0)
    [found] = runner.predict([request], [time.monotonic() + 60], Options(k=3))
    assert found and found[0].text == b"al"  # "total", the only name in reach with "tot"


def test_int8_is_refused_where_there_is_nothing_to_quantize_and_unknown_modes_anywhere(tmp_path):
    old_style_char_checkpoint(tmp_path / "char.ckpt")
    with pytest.raises(ValueError, match="quantize must be one of"):
        load_completer(tmp_path / "char.ckpt", quantize="int4")

    class Counting:  # a completer without a model (as the n-gram's)
        family = "ngram"

    with pytest.raises(ValueError, match="no int8 variant"):
        quantize_completer(Counting(), "int8")


def test_codecomp_eval_scores_the_int8_completer(fixture_corpus, tmp_path, monkeypatch):
    from codecomp import evaluate as evaluate_module
    from tests.test_evaluate import eval_config

    old_style_char_checkpoint(tmp_path / "char.ckpt")
    built = []
    real = evaluate_module.load_completer

    def recording(*args, **kwargs):
        completer = real(*args, **kwargs)
        built.append(completer)
        return completer

    monkeypatch.setattr(evaluate_module, "load_completer", recording)
    monkeypatch.chdir(tmp_path)
    cfg = eval_config(tmp_path / "char.ckpt", fixture_corpus, ["quantize=int8", "max_documents=2",
                                                                 "line_completion.positions=2"])  # fmt: skip
    report = evaluate_module.evaluate(cfg, tmp_path / "out")
    assert report["settings"]["quantize"] == "int8" and isinstance(getattr(built[0], "model", None), Int8CharLSTM)
    for result in report["languages"].values():
        assert result["model"]["bpc"] > 0


def test_the_serve_switch_reaches_what_the_container_loads(tmp_path):
    old_style_char_checkpoint(tmp_path / "char.ckpt")
    register_schema()
    overrides = [f"models.char.checkpoint={tmp_path / 'char.ckpt'}", "~models.tree", "~models.ngram",
                 f"store_path={tmp_path / 'feedback.sqlite'}"]  # fmt: skip
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = OmegaConf.to_object(compose("serve", overrides=[*overrides, "models.char.settings.quantize=int8"]))
        with pytest.raises(ValueError, match=r"settings\.quantize must be one of"):
            OmegaConf.to_object(compose("serve", overrides=[*overrides, "models.char.settings.quantize=int4"]))
    assert isinstance(config, ServerConfig)
    server = Server(config)  # nothing started: its supervisor holds what it will start each container with
    assert server.supervisor is not None
    [spec] = [slot.spec for slot in server.supervisor.slots]
    assert spec.settings["quantize"] == "int8"
    asyncio.run(server.store.close())
    server.transport.close()  # an open socket would hang its context's collection later
    # What the container process does with its spec (`serve_container(..., **settings)` -> `load_runner`).
    runner = load_runner(spec.checkpoint, **spec.settings)
    assert isinstance(getattr(runner.completer, "model", None), Int8CharLSTM)
