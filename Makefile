# `make demo` runs the default job, `make test` the tests; both set themselves up from nothing.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTHON ?= python3

SERVE_URL := http://127.0.0.1:8000

.PHONY: demo serve stop test test-full lint format bench clean

# Reinstalls when the dependencies or their pins change.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel first: an unpinned resolve would pull CUDA builds of torch.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/codecomp-data recipe=small
	$(VENV)/bin/codecomp-fit-ngram
	$(VENV)/bin/codecomp-train experiment=char_lstm_quick
	$(VENV)/bin/codecomp-eval ckpt_path=checkpoints/char_lstm_quick/best.ckpt mixture.ngram_ckpt_path=checkpoints/ngram/best.ckpt
	$(VENV)/bin/codecomp-train experiment=tree_lstm_quick
	$(VENV)/bin/codecomp-eval ckpt_path=checkpoints/tree_lstm_quick/best.ckpt
	@echo
	@echo "corpus:      data/small (stats.json, manifest.json)"
	@echo "checkpoints: checkpoints/char_lstm_quick/ and checkpoints/tree_lstm_quick/ (best.ckpt, last.ckpt), checkpoints/ngram/best.ckpt"
	@echo "metrics:     $$(ls -td logs/eval/small-test/*/ | sed -n 2p)metrics.json (Char-LSTM, and its mixture with the cache n-gram)"
	@echo "             $$(ls -td logs/eval/small-test/*/ | head -1)metrics.json (Tree-LSTM)"
	@echo "TensorBoard: $(VENV)/bin/tensorboard --logdir logs/tensorboard"
	@$(MAKE) --no-print-directory serve

# The completion server in the background with the default checkpoints, and one request to it.
serve: $(STAMP) stop
	@mkdir -p logs
	@setsid $(VENV)/bin/codecomp-serve > logs/serve.log 2>&1 & echo $$! > logs/serve.pid
	@$(PY) -m benchmarks.loadgen.launch $(SERVE_URL) > /dev/null || (cat logs/serve.log; exit 1)
	curl -s $(SERVE_URL)/v1/completions -H 'Content-Type: application/json' \
	  -d '{"language": "javascript", "segments": {"prefix": "function add(a, b) {\n  return ", "suffix": "\n}\n"}}'
	@echo
	@echo "server:      $(SERVE_URL) (pid $$(cat logs/serve.pid), log logs/serve.log, API docs $(SERVE_URL)/docs); make stop"

# The server runs in a session of its own (setsid): TERM stops it cleanly, and after 10 s whatever is left of its
# process group (forkserver, containers) gets KILL.
stop:
	@if [ -f logs/serve.pid ]; then pid=$$(cat logs/serve.pid); kill $$pid 2>/dev/null; \
	  for i in $$(seq 100); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
	  kill -KILL -$$pid 2>/dev/null; rm -f logs/serve.pid; fi; true

test: $(STAMP)
	$(VENV)/bin/pytest -m "not slow" -q

test-full: $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports  # the architecture's contracts (.importlinter)

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) -m benchmarks.parse_throughput
	$(PY) -m benchmarks.train_throughput
	$(PY) -m benchmarks.decode_latency
	$(PY) -m benchmarks.batching_gain
	$(PY) -m benchmarks.tree_lstm_speed
	$(PY) -m benchmarks.hole_latency
	$(PY) -m benchmarks.editor_parse
	$(PY) -m benchmarks.minhash
	$(PY) -m benchmarks.protocol_codec
	$(PY) -m benchmarks.serve_load
	$(PY) -m benchmarks.hot_reload_load
	$(PY) -m benchmarks.two_frontends
	$(PY) -m benchmarks.feedback_replay

clean:
	rm -rf $(VENV) logs outputs multirun .pytest_cache
