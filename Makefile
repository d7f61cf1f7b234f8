# `make demo` runs the default job, `make test` the tests; both set themselves up from nothing.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: demo test test-full lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel first: an unpinned resolve would pull CUDA builds of torch.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/codecomp-data recipe=small
	$(VENV)/bin/codecomp-train experiment=char_lstm_quick
	$(VENV)/bin/codecomp-eval ckpt_path=checkpoints/char_lstm_quick/best.ckpt
	$(VENV)/bin/codecomp-train experiment=tree_lstm_quick
	$(VENV)/bin/codecomp-eval ckpt_path=checkpoints/tree_lstm_quick/best.ckpt
	@echo
	@echo "corpus:      data/small (stats.json, manifest.json)"
	@echo "checkpoints: checkpoints/char_lstm_quick/ and checkpoints/tree_lstm_quick/ (best.ckpt, last.ckpt)"
	@echo "metrics:     $$(ls -td logs/eval/small-test/*/ | sed -n 2p)metrics.json (Char-LSTM)"
	@echo "             $$(ls -td logs/eval/small-test/*/ | head -1)metrics.json (Tree-LSTM)"
	@echo "TensorBoard: $(VENV)/bin/tensorboard --logdir logs/tensorboard"

test: $(STAMP)
	$(VENV)/bin/pytest -m "not slow" -q

test-full: $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) -m benchmarks.parse_throughput
	$(PY) -m benchmarks.train_throughput
	$(PY) -m benchmarks.decode_latency
	$(PY) -m benchmarks.tree_lstm_speed
	$(PY) -m benchmarks.hole_latency

clean:
	rm -rf $(VENV) logs outputs multirun .pytest_cache
