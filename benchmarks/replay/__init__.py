"""The feedback replay's parts (`python -m benchmarks.feedback_replay` runs them): the models' answers for a trace
(`answers.py`), simulated users replaying it through the served selection code (`simulate.py`), and the
scenarios where a model goes bad mid-run and how soon each policy recovers (`recovery.py`)."""
