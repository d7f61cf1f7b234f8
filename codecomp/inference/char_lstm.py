"""Char-LSTM completer: batched line completion by beam search, incremental state, deadlines."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

from codecomp.checkpoint import load_checkpoint, model_state
from codecomp.data.char_vocab import EOF_ID, PAD_ID, encode_document
from codecomp.inference.types import Candidate, CompletionRequest
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig, LSTMState

FAMILY = "char_lstm"
_NEWLINE = ord("\n")


@dataclasses.dataclass(frozen=True)
class CharState:
    """The model after reading some text: LSTM state and the log-probabilities of the next symbol.

    Attributes:
        h, c: (layers, hidden) each.
        log_probs: (V,) natural-log probabilities of the next symbol.
        length: bytes read so far (the file-start symbol not counted).
    """

    h: torch.Tensor
    c: torch.Tensor
    log_probs: torch.Tensor
    length: int


class CharLSTMCompleter:
    """Line completion with a Char-LSTM.

    Args:
        model: the trained network (put in eval mode here).
        max_context: bytes of prefix read when no state is given; longer prefixes keep their tail.
    """

    def __init__(self, model: CharLSTM, max_context: int = 4096, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.max_context = max_context
        self._cell_weights: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", **kwargs) -> CharLSTMCompleter:  # type: ignore[no-untyped-def]
        checkpoint = load_checkpoint(path, FAMILY, device)
        model = CharLSTM(CharLSTMConfig(**checkpoint["codecomp"]["model_config"]))
        model.load_state_dict(model_state(checkpoint))
        return cls(model, device=device, **kwargs)

    # -- reading text ------------------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, prefixes: Sequence[bytes], languages: Sequence[str]) -> list[CharState]:
        """Read many prefixes in one batched pass. A prefix within `max_context` is read from the
        file start; a longer one from its last `max_context` bytes."""
        if not prefixes:
            return []
        sequences = []
        for prefix, language in zip(prefixes, languages, strict=True):
            if len(prefix) <= self.max_context:
                sequences.append(torch.from_numpy(encode_document(prefix, language)[:-1]))  # no end of file
            else:
                sequences.append(torch.frombuffer(bytearray(prefix[-self.max_context :]), dtype=torch.uint8).long())
        lengths = torch.tensor([len(s) for s in sequences])
        tokens = pad_sequence(sequences, batch_first=True, padding_value=PAD_ID).to(self.device)
        packed = pack_padded_sequence(self.model.embed(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, (h, c) = self.model.lstm(packed)  # final states of each sequence, padding not read
        log_probs = torch.log_softmax(self.model.head(h[-1]), dim=-1)  # (B, V)
        return [CharState(h[:, i], c[:, i], log_probs[i], len(p)) for i, p in enumerate(prefixes)]

    @torch.inference_mode()
    def advance(self, state: CharState, text: bytes) -> CharState:
        """The state after also reading `text`: costs len(text) steps, not the whole prefix."""
        return self.advance_many([state], [text])[0]

    @torch.inference_mode()
    def advance_many(self, states: Sequence[CharState], texts: Sequence[bytes]) -> list[CharState]:
        """`advance` for many states at once, in one batched pass over the longest text."""
        rows = [i for i, text in enumerate(texts) if text]
        advanced = list(states)
        if not rows:
            return advanced
        sequences = [torch.frombuffer(bytearray(texts[i]), dtype=torch.uint8).long() for i in rows]
        lengths = torch.tensor([len(s) for s in sequences])
        tokens = pad_sequence(sequences, batch_first=True, padding_value=PAD_ID).to(self.device)  # (B, T)
        packed = pack_padded_sequence(self.model.embed(tokens), lengths, batch_first=True, enforce_sorted=False)
        start = (torch.stack([states[i].h for i in rows], 1), torch.stack([states[i].c for i in rows], 1))
        _, (h, c) = self.model.lstm(packed, start)  # (layers, B, H) each, in the order of `rows`
        log_probs = torch.log_softmax(self.model.head(h[-1]), dim=-1)  # (B, V)
        for j, i in enumerate(rows):
            advanced[i] = CharState(h[:, j], c[:, j], log_probs[j], states[i].length + len(texts[i]))
        return advanced

    # -- completing lines --------------------------------------------------------------------------

    @torch.inference_mode()
    def complete(
        self,
        requests: Sequence[CompletionRequest],
        k: int = 3,
        beam_size: int = 4,
        max_chars: int = 80,
        deadline: float | Sequence[float] | None = None,
        states: Sequence[CharState] | None = None,
    ) -> list[list[Candidate]]:
        """Top-k completions of the rest of the line at each request's cursor, best first.

        All requests' beams advance together, one batched forward pass per character. A completion
        ends at a newline or the end of file (neither is part of its text) or after `max_chars`.

        Args:
            deadline: a `time.monotonic()` instant, or one per request; when a request's passes, its
                best hypotheses so far are its answer, unfinished ones marked `complete=False`
                (anytime decoding), and the others decode on without it.
            states: the requests' prefixes already read (from `encode`/`advance`), to skip reading.
        """
        if k < 1 or beam_size < 1 or max_chars < 1:
            raise ValueError("k, beam_size and max_chars must be positive")
        if not requests:
            return []
        if states is None:
            states = self.encode([r.prefix for r in requests], [r.language for r in requests])
        beams = _Beams(states, beam_size, k)
        deadlines = None if deadline is None else torch.tensor(
            [deadline] * len(requests) if isinstance(deadline, float | int) else list(deadline), dtype=torch.float64
        )  # fmt: skip
        for _ in range(max_chars):
            if deadlines is not None:
                beams.retire(deadlines[beams.request] <= time.monotonic())
            if not beams.active:
                break
            tokens = beams.step()
            beams.log_probs, beams.state = self._step(tokens, beams.state)
        return beams.results()

    def _step(self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, LSTMState]:
        """One character for every row: the LSTM cell written out, since at one time step `nn.LSTM`'s
        own call costs more than its arithmetic. Returns (N, V) log-probabilities and the new state."""
        if self._cell_weights is None:
            lstm = self.model.lstm
            self._cell_weights = [
                (getattr(lstm, f"weight_ih_l{i}").t(), getattr(lstm, f"weight_hh_l{i}").t(),
                 getattr(lstm, f"bias_ih_l{i}") + getattr(lstm, f"bias_hh_l{i}"))
                for i in range(lstm.num_layers)
            ]  # fmt: skip
        h, c = state  # (layers, N, H) each
        x = self.model.embed(tokens)  # (N, E)
        new_h, new_c = [], []
        for layer, (w_ih, w_hh, bias) in enumerate(self._cell_weights):
            gates = torch.addmm(bias, x, w_ih).addmm_(h[layer], w_hh)  # (N, 4H): input, forget, cell, output
            i, f, g, o = gates.chunk(4, dim=1)
            cell = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(g)
            x = torch.sigmoid(o) * torch.tanh(cell)  # (N, H); dropout is off in evaluation
            new_h.append(x)
            new_c.append(cell)
        return torch.log_softmax(self.model.head(x), dim=-1), (torch.stack(new_h), torch.stack(new_c))

    # -- scoring documents (evaluation) ------------------------------------------------------------

    @torch.inference_mode()
    def score(
        self, documents: Sequence[bytes], language: str, batch_size: int = 16, chunk: int = 1024
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each document, per byte: bits to encode it given all bytes before it in the file,
        and whether it was the most likely symbol. Documents are read in parallel, in chunks."""
        results: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0), np.zeros(0, dtype=bool))] * len(documents)
        order = sorted(range(len(documents)), key=lambda i: len(documents[i]))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            sequences = [torch.from_numpy(encode_document(documents[i], language)[:-1]) for i in batch]
            tokens = pad_sequence(sequences, batch_first=True, padding_value=PAD_ID).to(self.device)  # (B, L+1)
            bits, correct = [], []
            state = None
            for offset in range(0, tokens.shape[1] - 1, chunk):
                inputs = tokens[:, offset : offset + chunk]
                targets = tokens[:, offset + 1 : offset + chunk + 1]
                logits, state = self.model(inputs[:, : targets.shape[1]], state)
                log_probs = torch.log_softmax(logits.float(), dim=-1)
                bits.append(-log_probs.gather(-1, targets[..., None])[..., 0] / math.log(2))
                correct.append(log_probs.argmax(-1) == targets)
            all_bits, all_correct = torch.cat(bits, 1).cpu().numpy(), torch.cat(correct, 1).cpu().numpy()
            for row, index in enumerate(batch):
                n = len(documents[index])
                results[index] = (all_bits[row, :n], all_correct[row, :n])
        return results


class _Beams:
    """Beam search for many requests at once, in tensors: each live request owns `beam_size` rows of
    the LSTM state, and a request leaves the batch as soon as its top k can no longer change."""

    def __init__(self, states: Sequence[CharState], beam_size: int, k: int) -> None:
        self.width, self.k = beam_size, k
        n, device = len(states), states[0].log_probs.device
        self.request = torch.arange(n)  # (A,) the live requests
        # Row 0 of each request holds its state; the others start at -inf, so step one expands row 0 only.
        self.scores = torch.full((n, beam_size), -math.inf)
        self.scores[:, 0] = 0.0
        repeat = lambda t: t.repeat_interleave(beam_size, dim=-2)  # noqa: E731
        self.state = (repeat(torch.stack([s.h for s in states], 1)), repeat(torch.stack([s.c for s in states], 1)))
        self.log_probs = repeat(torch.stack([s.log_probs for s in states]))  # (A * W, V)
        self.history = torch.zeros(n, beam_size, 0, dtype=torch.uint8)  # (A, W, T) bytes chosen so far
        self.finished: list[list[Candidate]] = [[] for _ in states]
        self.kth_best = torch.full((n,), -math.inf)  # per request: the k-th best finished score
        self.device = device

    @property
    def active(self) -> bool:
        return len(self.request) > 0

    def step(self) -> torch.Tensor:
        """Extend every live request's hypotheses by one byte; returns the bytes to feed, (A' * W,)."""
        n_live, width, symbols = len(self.request), self.width, EOF_ID + 1
        log_probs = self.log_probs[:, :symbols].float().cpu().view(n_live, width, symbols)
        total = (self.scores[:, :, None] + log_probs).view(n_live, width * symbols)  # (A, W * 257)
        values, index = total.topk(min(2 * width, width * symbols), dim=1)  # enough to keep W that go on
        parent, symbol = index // symbols, index % symbols
        ends = ((symbol == _NEWLINE) | (symbol == EOF_ID)) & (values > -math.inf)
        for row, column in ends.nonzero().tolist():
            request = int(self.request[row])
            text = bytes(self.history[row, parent[row, column]].tolist())
            self.finished[request].append(Candidate(text, float(values[row, column]), True))
            scores = sorted((c.log_prob for c in self.finished[request]), reverse=True)
            if len(scores) >= self.k:
                self.kth_best[request] = scores[self.k - 1]
        kept_values, kept = values.masked_fill(ends, -math.inf).topk(width, dim=1)  # (A, W)
        kept_parent, kept_symbol = parent.gather(1, kept), symbol.gather(1, kept)
        # Scores only fall as text grows: once k finished lines beat every live one, the request is done.
        live = kept_values.max(dim=1).values > self.kth_best[self.request]
        rows = (torch.arange(n_live)[:, None] * width + kept_parent)[live].flatten()  # parents' rows, (A' * W,)
        length = self.history.shape[2]
        parents_history = self.history.reshape(n_live * width, length)[rows].view(len(rows) // width, width, length)
        self.history = torch.cat([parents_history, kept_symbol[live].to(torch.uint8)[:, :, None]], dim=2)
        self.request, self.scores = self.request[live], kept_values[live]
        rows = rows.to(self.device)
        self.state = (self.state[0][:, rows], self.state[1][:, rows])
        return kept_symbol[live].flatten().to(self.device)

    def retire(self, done: torch.Tensor) -> None:
        """Stop the live requests marked in `done` (A,): their unfinished hypotheses join their answers."""
        if not bool(done.any()):
            return
        self._keep_unfinished(done.nonzero()[:, 0].tolist())
        keep = ~done
        rows = (torch.arange(len(done))[:, None] * self.width + torch.arange(self.width))[keep].flatten()
        self.request, self.scores, self.history = self.request[keep], self.scores[keep], self.history[keep]
        rows = rows.to(self.device)
        self.state = (self.state[0][:, rows], self.state[1][:, rows])
        self.log_probs = self.log_probs[rows]

    def _keep_unfinished(self, live_rows: list[int]) -> None:
        for row in live_rows:
            request = int(self.request[row])
            for column in range(self.width):
                if self.scores[row, column] > -math.inf:
                    text = bytes(self.history[row, column].tolist())
                    self.finished[request].append(Candidate(text, float(self.scores[row, column]), False))

    def results(self) -> list[list[Candidate]]:
        self._keep_unfinished(list(range(len(self.request))))  # cut short by max_chars
        ranked = []
        for candidates in self.finished:
            seen: set[bytes] = set()
            best = []
            for candidate in sorted(candidates, key=lambda c: -c.log_prob):
                if candidate.text not in seen:
                    seen.add(candidate.text)
                    best.append(candidate)
            ranked.append(best[: self.k])
        return ranked
