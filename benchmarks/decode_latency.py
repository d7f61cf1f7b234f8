"""Char-LSTM decoding latency: one decode step at batch 1, 8 and 32, and a 40-character line
completion end to end (encode the prefix, beam search), beside reading the prefix alone; with
`--quantize int8`, the int8 model (`codecomp.inference.quantize`) side by side, with the speed-up.

    python -m benchmarks.decode_latency [--checkpoint PATH] [--hidden 256] [--repeat 20] [--quantize int8] [--threads 1]

With no checkpoint a randomly initialised model of the given size is timed; a trained model takes
the same time per step, but may stop a line sooner. "Decode step" is one time step through the LSTM
module and head (`model(tokens, state)`); "beam step" is `CharLSTM.step`, what the beam search runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from benchmarks.timing import median_ms
from codecomp.data.char_vocab import EOF_ID
from codecomp.inference.char_lstm import CharLSTMCompleter, CharState
from codecomp.inference.completer import CompletionOptions, CompletionRequest
from codecomp.inference.quantize import Int8CharLSTM
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig

PREFIX = b"function render(items, options) {\n  const result = [];\n  for (const item of items) {\n    result."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--quantize", choices=["none", "int8"], default="none", help="also time the int8 model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a served container's: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.checkpoint:
        completer = CharLSTMCompleter.from_checkpoint(args.checkpoint)
    else:
        completer = CharLSTMCompleter(CharLSTM(CharLSTMConfig(hidden=args.hidden)))
    model = completer.model
    # A trained model may end the line at once; with newline and end of file made impossible every
    # line runs to 40 characters, at the same cost per character (set before quantizing: both see it).
    model.head.bias.data[[ord("\n"), EOF_ID]] = -1e9
    completers = {"float": completer}
    if args.quantize == "int8":
        completers["int8"] = CharLSTMCompleter(Int8CharLSTM(model))
    print(f"hidden={model.config.hidden} layers={model.config.layers} threads={torch.get_num_threads()}")
    rows = {name: _timings(c, args.repeat) for name, c in completers.items()}
    header = "".join(f"{name:>10}" for name in completers) + ("  int8 speed-up" if len(completers) > 1 else "")
    print(f"{'ms (median)':<42}{header}")
    for row in rows["float"]:
        figures = [rows[name][row] for name in completers]
        ratio = f"  {figures[0] / figures[1]:12.2f}x" if len(figures) > 1 else ""
        print(f"{row:<42}" + "".join(f"{ms:10.3f}" for ms in figures) + ratio)
    request = CompletionRequest(PREFIX, b"", "javascript")
    for name, c in completers.items():
        print(f"({name}: characters in the best line: {_forty(c, request, None, beam=4)})")


def _timings(completer: CharLSTMCompleter, repeat: int) -> dict[str, float]:
    """Median milliseconds of each measured operation."""
    model = completer.model
    timings: dict[str, float] = {}
    with torch.inference_mode():
        for batch in (1, 8, 32):
            tokens = torch.zeros(batch, 1, dtype=torch.long)
            zero = model.zero_state(batch)
            timings[f"decode step, batch {batch}"] = median_ms(repeat * 5, lambda: model(tokens, zero))  # noqa: B023
        for batch in (1, 8, 32):
            symbols = torch.zeros(batch, dtype=torch.long)
            zero = model.zero_state(batch)
            timings[f"beam step, batch {batch}"] = median_ms(repeat * 5, lambda: model.step(symbols, zero))  # noqa: B023
    request = CompletionRequest(PREFIX, b"", "javascript")
    state = completer.encode([request.prefix], [request.language])
    operations: dict[str, Callable[[], object]] = {
        f"read the {len(PREFIX)}-byte prefix": lambda: completer.encode([request.prefix], [request.language]),
        "40 characters, greedy, prefix read": lambda: _forty(completer, request, state, beam=1),
        "40 characters, beam 4, prefix read": lambda: _forty(completer, request, state, beam=4),
        "40 characters, beam 4, end to end": lambda: _forty(completer, request, None, beam=4),
    }
    for name, operation in operations.items():
        timings[name] = median_ms(repeat, operation)
    return timings


def _forty(completer: CharLSTMCompleter, request: CompletionRequest, states: list[CharState] | None, beam: int) -> int:
    """Complete up to 40 characters (from `states` when the prefix is read already); returns how many
    the best line has (a newline may end it sooner)."""
    options = CompletionOptions(k=1, beam=beam, max_chars=40)
    [candidates] = completer.complete([request], options) if states is None else completer.decode(states, options)
    return len(candidates[0].text)


if __name__ == "__main__":
    main()
