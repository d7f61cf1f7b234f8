"""Char-LSTM decoding latency: one decode step at batch 1, 8 and 32, and a 40-character line
completion end to end (encode the prefix, beam search), beside reading the prefix alone.

    python -m benchmarks.decode_latency [--checkpoint PATH] [--hidden 256] [--repeat 20]

With no checkpoint a randomly initialised model of the given size is timed; a trained model takes
the same time per step, but may stop a line sooner.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.timing import median_ms
from codecomp.data.char_vocab import EOF_ID
from codecomp.inference.char_lstm import CharLSTMCompleter, CharState
from codecomp.inference.completer import CompletionOptions, CompletionRequest
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig

PREFIX = b"function render(items, options) {\n  const result = [];\n  for (const item of items) {\n    result."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.checkpoint:
        completer = CharLSTMCompleter.from_checkpoint(args.checkpoint)
    else:
        completer = CharLSTMCompleter(CharLSTM(CharLSTMConfig(hidden=args.hidden)))
    model = completer.model
    print(f"hidden={model.config.hidden} layers={model.config.layers} threads={torch.get_num_threads()}")
    with torch.inference_mode():
        for batch in (1, 8, 32):
            tokens = torch.zeros(batch, 1, dtype=torch.long)
            zero = model.zero_state(batch)
            step = median_ms(args.repeat * 5, lambda: model(tokens, zero))  # noqa: B023
            print(f"decode step, batch {batch:>2}: {step:7.3f} ms  ({step / batch:.3f} ms per sequence)")
    # A trained model may end the line at once; with newline and end of file made impossible every
    # line runs to 40 characters, at the same cost per character.
    model.head.bias.data[[ord("\n"), EOF_ID]] = -1e9
    request = CompletionRequest(PREFIX, b"", "javascript")
    encode = median_ms(args.repeat, lambda: completer.encode([request.prefix], [request.language]))
    state = completer.encode([request.prefix], [request.language])
    forty_greedy = median_ms(args.repeat, lambda: _forty(completer, request, state, beam=1))
    forty_beam = median_ms(args.repeat, lambda: _forty(completer, request, state, beam=4))
    end_to_end = median_ms(args.repeat, lambda: _forty(completer, request, None, beam=4))
    print(f"read the {len(PREFIX)}-byte prefix:          {encode:7.2f} ms")
    print(f"40 characters, greedy, prefix read:    {forty_greedy:7.2f} ms")
    print(f"40 characters, beam 4, prefix read:    {forty_beam:7.2f} ms")
    print(f"40 characters, beam 4, end to end:     {end_to_end:7.2f} ms")
    print(f"(characters in the best line: {_forty(completer, request, None, beam=4)})")


def _forty(completer: CharLSTMCompleter, request: CompletionRequest, states: list[CharState] | None, beam: int) -> int:
    """Complete up to 40 characters (from `states` when the prefix is read already); returns how many
    the best line has (a newline may end it sooner)."""
    options = CompletionOptions(k=1, beam=beam, max_chars=40)
    [candidates] = completer.complete([request], options) if states is None else completer.decode(states, options)
    return len(candidates[0].text)


if __name__ == "__main__":
    main()
