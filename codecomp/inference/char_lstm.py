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

from codecomp.data.char_vocab import EOF_ID, PAD_ID, encode_document
from codecomp.inference.checkpoint import load_checkpoint, model_state
from codecomp.inference.types import Candidate, CompletionRequest
from codecomp.models.components.char_lstm import CharLSTM, CharLSTMConfig

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
        if not text:
            return state
        tokens = torch.frombuffer(bytearray(text), dtype=torch.uint8).long().to(self.device)[None]  # (1, T)
        hidden, (h, c) = self.model.lstm(self.model.embed(tokens), (state.h[:, None], state.c[:, None]))
        log_probs = torch.log_softmax(self.model.head(hidden[0, -1]), dim=-1)
        return CharState(h[:, 0], c[:, 0], log_probs, state.length + len(text))

    # -- completing lines --------------------------------------------------------------------------

    @torch.inference_mode()
    def complete(
        self,
        requests: Sequence[CompletionRequest],
        k: int = 3,
        beam_size: int = 4,
        max_chars: int = 80,
        deadline: float | None = None,
        states: Sequence[CharState] | None = None,
    ) -> list[list[Candidate]]:
        """Top-k completions of the rest of the line at each request's cursor, best first.

        All requests' beams advance together, one batched forward pass per character. A completion
        ends at a newline or the end of file (neither is part of its text) or after `max_chars`.

        Args:
            deadline: a `time.monotonic()` instant; when it passes, the best hypotheses so far are
                returned, unfinished ones marked `complete=False` (anytime decoding).
            states: the requests' prefixes already read (from `encode`/`advance`), to skip reading.
        """
        if k < 1 or beam_size < 1 or max_chars < 1:
            raise ValueError("k, beam_size and max_chars must be positive")
        if not requests:
            return []
        if states is None:
            states = self.encode([r.prefix for r in requests], [r.language for r in requests])
        beams = _Beams(states, beam_size, k)
        for _ in range(max_chars):
            if not beams.active or (deadline is not None and time.monotonic() >= deadline):
                break
            tokens = beams.step()
            hidden, beams.state = self.model.lstm(self.model.embed(tokens[:, None]), beams.state)
            beams.log_probs = torch.log_softmax(self.model.head(hidden[:, 0]), dim=-1)
        return beams.results()

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
    """Beam-search bookkeeping for many requests at once; the hypotheses of all requests share one
    batch dimension of the LSTM state."""

    def __init__(self, states: Sequence[CharState], beam_size: int, k: int) -> None:
        self.beam_size, self.k = beam_size, k
        self.owner = list(range(len(states)))  # request of each active hypothesis
        self.texts = [b""] * len(states)
        self.scores = [0.0] * len(states)
        self.state = (torch.stack([s.h for s in states], 1), torch.stack([s.c for s in states], 1))
        self.log_probs = torch.stack([s.log_probs for s in states])  # (N, V)
        self.finished: list[list[Candidate]] = [[] for _ in states]

    @property
    def active(self) -> bool:
        return bool(self.owner)

    def step(self) -> torch.Tensor:
        """Extend every request's hypotheses by one symbol; returns the new bytes to feed, (N,)."""
        scores = self.log_probs[:, : EOF_ID + 1].float().cpu() + torch.tensor(self.scores)[:, None]  # (N, 257)
        by_request: dict[int, list[int]] = {}
        for row, request in enumerate(self.owner):
            by_request.setdefault(request, []).append(row)
        parents, owner, texts, new_scores, tokens = [], [], [], [], []
        for request, rows in by_request.items():
            flat = scores[rows].flatten()
            top = torch.topk(flat, min(len(flat), self.beam_size * 2))
            kept = 0
            for score, index in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                row, symbol = rows[index // (EOF_ID + 1)], index % (EOF_ID + 1)
                if symbol in (_NEWLINE, EOF_ID):
                    self.finished[request].append(Candidate(self.texts[row], score, True))
                elif kept < self.beam_size:
                    parents.append(row)
                    owner.append(request)
                    texts.append(self.texts[row] + bytes([symbol]))
                    new_scores.append(score)
                    tokens.append(symbol)
                    kept += 1
            done = sorted((c.log_prob for c in self.finished[request]), reverse=True)
            if len(done) >= self.k and kept and done[self.k - 1] >= max(new_scores[-kept:]):
                # Scores only fall as text grows: no active hypothesis can still enter the top k.
                del parents[-kept:], owner[-kept:], texts[-kept:], new_scores[-kept:], tokens[-kept:]
        self.owner, self.texts, self.scores = owner, texts, new_scores
        index = torch.tensor(parents, dtype=torch.long, device=self.log_probs.device)
        self.state = (self.state[0][:, index], self.state[1][:, index])
        return torch.tensor(tokens, dtype=torch.long, device=self.log_probs.device)

    def results(self) -> list[list[Candidate]]:
        for row, request in enumerate(self.owner):  # cut short by max_chars or the deadline
            self.finished[request].append(Candidate(self.texts[row], self.scores[row], False))
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
