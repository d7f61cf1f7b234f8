"""The typed configs of codecomp-serve, -data and -eval: the yaml composes to the dataclasses, and a wrong
type or an unknown key is a clear error at start-up. (test_serve_app.py and test_corpus_parts.py check
that serve.yaml and the recipes compose; test_evaluate.py runs the composed EvalConfig.)"""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from codecomp import CONFIG_DIR
from codecomp.data_prep.config import register_schema as register_data
from codecomp.evaluation.config import EvalConfig, HolesConfig, NgramConfig
from codecomp.evaluation.config import register_schema as register_eval
from codecomp.serve.api.config import register_schema as register_serve

REPO = Path(CONFIG_DIR).parent


def load(name, overrides=()):
    for register in (register_serve, register_data, register_eval):
        register()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return OmegaConf.to_object(compose(config_name=name, overrides=list(overrides)))


def test_eval_yaml_composes_to_the_dataclasses():
    config = load("eval", ["corpus_name=full", "ngram.discount=0.75", "+completer.window_bytes=512"])
    assert isinstance(config, EvalConfig) and isinstance(config.ngram, NgramConfig)
    assert config.corpus == "data/full" and config.ngram.discount == 0.75 and config.ngram.order == 6
    assert isinstance(config.holes, HolesConfig) and config.holes.ablation_ckpt_path is None
    assert config.languages == ["cpp", "javascript"] and config.max_documents is None
    assert config.completer == {"window_bytes": 512}  # the completer's own keys, passed on as they are


@pytest.mark.parametrize(
    ("name", "override", "message"),
    [
        ("serve", "port=abc", "'abc' of type 'str' could not be converted to Integer\n    full_key: port"),
        ("serve", "service.objective_ms=fast", "full_key: service.objective_ms"),
        ("serve", "models.char.nope=1", "Key 'nope' not in 'ModelConfig'\n    full_key: models.char.nope"),
        ("serve", "models.tree.batching.max_batch=many", "full_key: models.tree.batching.max_batch"),
        ("data", "filters.nope=1", "Key 'nope' not in 'FilterConfig'"),
        ("data", "workers=two", "full_key: workers"),
        ("eval", "seed=abc", "full_key: seed"),
        ("eval", "line_completion.beam_size=wide", "full_key: line_completion.beam_size"),
        ("eval", "ngram.nope=1", "Key 'nope' not in 'NgramConfig'"),
    ],
)
def test_a_wrong_type_or_an_unknown_key_is_a_clear_error(name, override, message):
    with pytest.raises(ConfigCompositionException) as error:
        load(name, [override])
    assert message in f"{error.value}\n{error.value.__cause__}"  # as the CLI prints them


def test_the_serve_cli_refuses_a_bad_port_before_it_loads_a_model(tmp_path):
    missing = tmp_path / "nothing.ckpt"  # were the config accepted, the server would stop at this checkpoint
    command = [sys.executable, "-m", "codecomp.serve.api.cli", "port=abc", f"models.char.checkpoint={missing}",
               f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "port" in done.stderr and "could not be converted to Integer" in done.stderr
    assert str(missing) not in done.stdout + done.stderr
